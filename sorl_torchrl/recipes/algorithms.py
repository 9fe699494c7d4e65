"""The algorithms ``sorl-train`` trains, from one config: SORL and its baselines.

``algo=sorl|fql|iql|rebrac|bc`` (the ``algo`` config group, ``algo.name``) selects one; each
option also chooses the algorithm's ``loss`` and ``optim`` groups, and its per-environment
settings come from the env config (``env.fql.*``, ``env.iql.*``, ``env.rebrac.*``; SORL's
are ``env.discount``, ``env.q_agg``, ``env.q_loss_coef``). Everything else (data,
evaluation, checkpoints, resume, sweeps, the run identity) is the recipe's, the same for all.

- ``sorl``: the shortcut actor, ``ShortcutLoss``, ``SORLUpdateStep``; ``k`` = 1, 2, 4, ...
- ``fql``: the one-step policy, ``FQLLoss``, ``JointUpdateStep``; ``k = 1`` only.
- ``iql``: the Gaussian actor, ``IQLLoss``, ``JointUpdateStep``; ``k = 1`` only.
- ``rebrac``: the tanh actor, ``ReBRACLoss``, ``JointUpdateStep``; ``k = 1`` only.
- ``bc``: the shortcut actor trained by flow BC, ``FlowBCLoss``, ``JointUpdateStep``;
  ``k`` = 1, 2, 4, ... (its critic, for the verifier only: ``network.num_critics: 0``
  trains none).

Every algorithm's critic is its verifier: :meth:`AlgorithmModules.sampler` gives the
best-of-N policy of any ``(k, N)`` (:func:`~sorl_torchrl.modules.best_of_n.sampling_policy`), so a
(k, N) grid measures each algorithm under the same test-time scaling. The networks are built
by the same builders that :func:`~sorl_torchrl.load_policy` uses
(:data:`~sorl_torchrl.deploy.load.POLICY_BUILDERS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import nn
from torchrl.objectives.common import LossModule

from sorl_torchrl._validation import Number, Settings
from sorl_torchrl.data.specs import _unknown
from sorl_torchrl.deploy.load import POLICY_BUILDERS, verifier_q_agg
from sorl_torchrl.modules.best_of_n import sampling_policy
from sorl_torchrl.modules.critic import QEnsemble
from sorl_torchrl.objectives.flow_bc import FLOW_BC_SETTINGS
from sorl_torchrl.objectives.fql import FQL_SETTINGS
from sorl_torchrl.objectives.iql import IQL_SETTINGS
from sorl_torchrl.objectives.joint_update import JointUpdateStep
from sorl_torchrl.objectives.rebrac import REBRAC_SETTINGS
from sorl_torchrl.objectives.shortcut import LOSS_SETTINGS
from sorl_torchrl.objectives.update import SORLUpdateStep
from sorl_torchrl.recipes.common import dataset_spec
from sorl_torchrl.recipes.runtime import Runtime, resolve_runtime

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_SPECS",
    "AlgorithmModules",
    "AlgorithmSpec",
    "ENV_BLOCKS",
    "algorithm_name",
    "algorithm_problems",
    "build_algorithm",
    "group_settings",
]


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the recipes know of an algorithm before building it.

    Attributes:
        loss_settings: the checks of its loss's settings (the ``loss`` group's keys).
        update_step: its update step class (the ``optim`` group holds its settings).
        has_steps: whether ``k`` (Euler steps per action) means anything to its policy;
            without steps only ``k = 1`` is valid.
        validation_terms: the loss outputs the recipe averages on the validation split.
        critic_optional: whether ``network.num_critics: 0`` (no critic, no verifier) is
            allowed.
    """

    loss_settings: Settings
    update_step: type
    has_steps: bool
    validation_terms: tuple[str, ...]
    critic_optional: bool = False

    @property
    def update_settings(self) -> Settings:
        """The checks of the update step's settings (the ``optim`` group's keys)."""
        return self.update_step.SETTINGS


#: Every algorithm of ``algo.name``, in the order reports list them.
ALGORITHM_SPECS: dict[str, AlgorithmSpec] = {
    "sorl": AlgorithmSpec(
        LOSS_SETTINGS,
        SORLUpdateStep,
        True,
        ("loss_actor", "loss_qvalue", "fm_loss", "sc_loss", "q_mean"),
    ),
    "fql": AlgorithmSpec(
        FQL_SETTINGS,
        JointUpdateStep,
        False,
        ("loss_actor", "loss_qvalue", "loss_bc_flow", "distill_loss", "q_loss", "q_mean"),
    ),
    "iql": AlgorithmSpec(
        IQL_SETTINGS,
        JointUpdateStep,
        False,
        ("loss_actor", "loss_qvalue", "loss_value", "q_mean", "v_mean"),
    ),
    "rebrac": AlgorithmSpec(
        REBRAC_SETTINGS,
        JointUpdateStep,
        False,
        ("loss_actor", "loss_qvalue", "q_mean", "bc_distance"),
    ),
    "bc": AlgorithmSpec(
        FLOW_BC_SETTINGS,
        JointUpdateStep,
        True,
        ("loss_actor", "fm_loss", "sc_loss", "loss_qvalue", "q_mean"),
        critic_optional=True,
    ),
}
#: The values of ``algo.name``.
ALGORITHMS: tuple[str, ...] = tuple(ALGORITHM_SPECS)
#: The algorithms whose per-environment settings are a block of the env config
#: (``env.fql.alpha``, ...), read through their ``loss`` group. SORL's are the env's own keys;
#: flow BC's critic reads SORL's ``env.discount`` and ``env.q_agg``.
ENV_BLOCKS: tuple[str, ...] = ("fql", "iql", "rebrac")
if set(ALGORITHMS) != set(POLICY_BUILDERS):  # pragma: no cover - a new algorithm needs both
    raise ImportError("ALGORITHM_SPECS and POLICY_BUILDERS must name the same algorithms.")


def algorithm_name(cfg: DictConfig) -> str:
    """The algorithm a config trains: ``algo.name`` (a config without ``algo`` is SORL).

    Raises:
        ValueError: ``algo.name`` is no known algorithm; the message lists them.

    Examples:
        >>> algorithm_name(OmegaConf.create({"algo": {"name": "fql"}}))
        'fql'
        >>> algorithm_name(OmegaConf.create({}))
        'sorl'
        >>> algorithm_name(OmegaConf.create({"algo": {"name": "idql"}}))
        Traceback (most recent call last):
        ...
        ValueError: Unknown algo.name 'idql'. Did you mean 'iql'? Known: bc, fql, iql, rebrac, sorl.
    """
    algo = cfg.get("algo")
    name = "sorl" if algo is None else str(algo.get("name"))
    if name not in ALGORITHM_SPECS:
        raise _unknown("algo.name", name, ALGORITHMS)
    return name


def group_settings(name: str, network: Settings) -> dict[str, Settings]:
    """The checks of the groups that depend on the algorithm: ``network``, ``loss``, ``optim``.

    ``loss`` and ``optim`` are the algorithm's loss and update step's own checks (less
    ``validate_inputs`` and ``compile``, the recipe's own choices); ``network`` is the
    shared group's (``network``), with ``num_critics: 0`` allowed where the critic is
    optional (flow BC).

    Examples:
        >>> from sorl_torchrl._validation import FLAG
        >>> groups = group_settings("fql", Settings("network", {"num_critics": FLAG}))
        >>> sorted(groups), "alpha" in groups["loss"], "tau" in groups["optim"]
        (['loss', 'network', 'optim'], True, True)
    """
    spec = ALGORITHM_SPECS[name]
    loss = spec.loss_settings
    groups = {
        "network": network,
        "loss": Settings(
            "loss",
            {key: check for key, check in loss.items() if key != "validate_inputs"},
            rules=loss.rules,
        ),
        "optim": Settings(
            "optim", {key: check for key, check in spec.update_settings.items() if key != "compile"}
        ),
    }
    if spec.critic_optional:
        optional = Number("[0, inf)", integer=True, meaning="0: no critic, no verifier")
        groups["network"] = Settings("network", {**network, "num_critics": optional})
    return groups


def algorithm_problems(name: str, cfg: DictConfig) -> list[str]:
    """What the evaluation asks that the algorithm cannot do, one line each (none: ``[]``).

    An algorithm without inference steps evaluates ``k = 1`` only; a model without a
    critic evaluates ``N = 1`` only.

    Examples:
        >>> cfg = OmegaConf.create({"eval": {"inference_steps": [1, 2], "num_candidates": [1]},
        ...                         "network": {"num_critics": 2}})
        >>> algorithm_problems("iql", cfg)  # doctest: +ELLIPSIS
        ['eval.inference_steps: got [1, 2], allowed [1] for algo=iql (its policy ...']
        >>> algorithm_problems("sorl", cfg)
        []
    """
    spec = ALGORITHM_SPECS[name]
    problems = []
    try:
        steps = list(cfg.eval.inference_steps)
        candidates = list(cfg.eval.num_candidates)
        critics = cfg.network.num_critics
    except Exception:  # noqa: BLE001 - unreadable values are the eval/network checks' problems
        return problems
    if not spec.has_steps and steps != [1]:
        problems.append(
            f"eval.inference_steps: got {steps}, allowed [1] for algo={name} (its policy acts "
            "in one network call: it has no inference steps); pass eval.inference_steps=[1] "
            "and scale with eval.num_candidates"
        )
    if spec.critic_optional and critics == 0 and candidates != [1]:
        problems.append(
            f"eval.num_candidates: got {candidates}, allowed [1] with network.num_critics=0 "
            "(no critic to verify candidates with); pass eval.num_candidates=[1] or train a "
            "critic"
        )
    return problems


@dataclass
class AlgorithmModules:
    """An algorithm's networks, loss and update step, as the training recipe uses them.

    Attributes:
        name: the algorithm (``algo.name``).
        loss: its loss; a checkpoint's ``"loss"`` entry holds ``loss.state_dict()`` (every
            network and target).
        update: its update step: ``update(batch)`` trains on a batch and returns detached
            scalars (``loss_*`` terms, gradient norms); ``state_dict()`` /
            ``load_state_dict()`` for checkpoints; ``precompile(batch, progress=)``,
            ``compile_mode``, ``is_compiled`` and ``compile_failures`` for compilation.
        policy: what samples actions (a shortcut actor, FQL's one-step policy, IQL's
            Gaussian actor or ReBRAC's tanh actor).
        critic: the verifier's scorer, ``None`` without one (only ``N = 1`` then).
        q_agg: how the verifier aggregates the critic's members
            (:func:`~sorl_torchrl.deploy.load.verifier_q_agg`).
        has_steps: whether ``k`` means anything (SORL, bc); else only ``k = 1`` is valid.
        validation_keys: the loss outputs :meth:`validation_terms` keeps.
    """

    name: str
    loss: LossModule
    update: Any
    policy: nn.Module
    critic: QEnsemble | None
    q_agg: str
    has_steps: bool
    validation_keys: tuple[str, ...]

    def sampler(
        self, inference_steps: int, num_candidates: int, *, compile: bool | str = False
    ) -> TensorDictModuleBase:
        """The ``env.rollout`` policy for ``(k, N)``: best-of-N with this algorithm's critic.

        See :func:`~sorl_torchrl.modules.best_of_n.sampling_policy` (without a critic, the policy
        alone for ``N = 1``).

        Raises:
            SettingError: ``k`` other than 1 for an algorithm without steps (or not a power
                of two), ``N < 1``, ``N > 1`` without a critic, an unknown compile mode.
        """
        return sampling_policy(
            self.policy,
            self.critic,
            inference_steps,
            num_candidates,
            q_agg=self.q_agg,
            compile=compile,
        )

    def validation_terms(self, info: TensorDictBase) -> dict[str, float]:
        """The validation metrics of one loss output: :attr:`validation_keys` it holds.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> modules = AlgorithmModules("fql", None, None, None, None, "min", False,
            ...                            ("loss_actor", "q_mean"))
            >>> modules.validation_terms(TensorDict(loss_actor=torch.tensor(2.0),
            ...                                     q_policy=torch.tensor(1.0)))
            {'loss_actor': 2.0}
        """
        present = set(info.keys())
        return {key: float(info[key]) for key in self.validation_keys if key in present}


def build_algorithm(cfg: DictConfig, runtime: Runtime | None = None) -> AlgorithmModules:
    """The modules of ``algo.name`` from the config groups, on the runtime's device.

    The observation and action sizes come from the dataset spec of ``env.name``; ``network``
    (``actor_cells``, ``critic_cells``, ``num_critics``, ``critic_layer_norm``; the
    step-conditioned critic's ``condition_on_steps`` and ``step_feature`` concern SORL and
    bc only), ``loss`` and ``optim`` give the rest; ``runtime`` (default: resolved from
    ``cfg``) the device and compile mode. For ``algo=sorl`` it builds exactly what the SORL
    recipe always built: :func:`~sorl_torchrl.deploy.build.build_sorl_modules` and a
    :class:`~sorl_torchrl.SORLUpdateStep` of ``optim``. The loss checks only keys and
    shapes per batch: the replay buffer checked the data's values once when it was built.

    Raises:
        ValueError: ``algo.name`` or ``env.name`` is unknown, or a setting is invalid.
        TypeError: a ``loss`` or ``optim`` key is no setting of the algorithm's loss or
            update step.

    Examples:
        >>> import torch
        >>> cfg = OmegaConf.create({
        ...     "algo": {"name": "iql"}, "env": {"name": "cube-single-play"},
        ...     "network": {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...                 "critic_layer_norm": True, "condition_on_steps": True,
        ...                 "step_feature": "steps"},
        ...     "loss": {"discount": 0.99, "alpha": 10.0}, "optim": {"lr": 3e-4}})
        >>> runtime = Runtime(torch.device("cpu"), None, "eager", False, None)
        >>> modules = build_algorithm(cfg, runtime)
        >>> type(modules.policy).__name__, type(modules.update).__name__, modules.q_agg
        ('GaussianActor', 'JointUpdateStep', 'min')
        >>> modules.sampler(2, 4)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: inference_steps must be 1 (GaussianActor ...
    """
    runtime = runtime or resolve_runtime(cfg)
    name = algorithm_name(cfg)
    spec = ALGORITHM_SPECS[name]
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("env", "network")}
    config["loss"] = OmegaConf.to_container(cfg.loss, resolve=True)
    if cfg.get("sizes") is not None:  # read from the data (data.dataset=<prefix>:<id>)
        config["sizes"] = OmegaConf.to_container(cfg.sizes, resolve=True)
    else:
        dataset_spec(cfg)  # env.name is known (the error lists the known names)
    policy, critic, loss = POLICY_BUILDERS[name](
        config, device=runtime.device, validate_inputs=False
    )
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    update = spec.update_step(loss, compile=runtime.compile_mode or False, **optim)
    return AlgorithmModules(
        name=name,
        loss=loss,
        update=update,
        policy=policy,
        critic=critic,
        q_agg=verifier_q_agg(loss),
        has_steps=spec.has_steps,
        validation_keys=spec.validation_terms,
    )
