"""A trained policy from its checkpoint in one call, without Hydra or the recipes.

A checkpoint of the training recipe records the config of its run. :func:`load_networks`
rebuilds the networks that config describes with the builder of its algorithm
(:data:`POLICY_BUILDERS`: SORL, FQL, IQL, ReBRAC and flow BC), loads their weights (every
tensor with its shape) and puts them in eval mode on the device, without gradients;
:func:`load_policy` wraps them as a TorchRL policy for a given ``(k, N)``: best-of-N with the
algorithm's own critic as verifier (:func:`~sorl_torchrl.modules.best_of_n.sampling_policy`).
Only SORL's and flow BC's shortcut actors have inference steps ``k``; the other policies
act in one network call, ``k = 1``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sorl_torchrl._compile import compile_mode
from sorl_torchrl._validation import SettingError, check_device
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint, load_module_state
from sorl_torchrl.deploy.build import build_sorl_modules
from sorl_torchrl.deploy.build_baselines import build_flow_bc_modules, build_fql_modules
from sorl_torchrl.deploy.build_iql_rebrac import build_iql_modules, build_rebrac_modules
from sorl_torchrl.modules import QEnsemble
from sorl_torchrl.modules.best_of_n import BestOfNSampler, has_inference_steps, sampling_policy
from sorl_torchrl.modules.verifier import VerifierSampler

__all__ = [
    "POLICY_BUILDERS",
    "STEP_NETWORK_KEYS",
    "TrainedNetworks",
    "algorithm_of",
    "load_networks",
    "load_policy",
    "verifier_q_agg",
]

#: The keys of the ``network`` config group that only SORL's networks read (and flow BC's,
#: which are SORL's): the step-conditioned critic ``Q(s, a, k)``. The FQL, IQL and ReBRAC
#: critics are ``Q(s, a)``; their builders get the group without these keys.
STEP_NETWORK_KEYS: tuple[str, ...] = ("condition_on_steps", "step_feature")


def _without_step_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with :data:`STEP_NETWORK_KEYS` left out of its ``network``."""
    network = {k: v for k, v in (config.get("network") or {}).items() if k not in STEP_NETWORK_KEYS}
    return {**config, "network": network}


def _critic_of_state_action(builder: Callable[..., Any]) -> Callable[..., Any]:
    """``builder`` fed the run config without :data:`STEP_NETWORK_KEYS` (FQL, IQL, ReBRAC)."""

    @functools.wraps(builder)
    def build(config: Mapping[str, Any], *, device=None, validate_inputs: bool = True):
        return builder(_without_step_keys(config), device, validate_inputs=validate_inputs)

    return build


#: The builder of each algorithm's networks, by the name of the algorithm (``algo.name``).
#: A builder takes a run config, ``device=`` and ``validate_inputs=`` and returns
#: ``(policy, critic, loss)``: the policy that samples actions, the critic the verifier
#: scores with (``None`` for flow BC with ``network.num_critics: 0``) and the loss, whose
#: state dict the checkpoint holds under ``"loss"``. The training recipe builds with the
#: same builders. A new algorithm adds its builder here.
#:
#: :meta hide-value:
POLICY_BUILDERS: dict[str, Callable[..., tuple[nn.Module, QEnsemble | None, nn.Module]]] = {
    "sorl": build_sorl_modules,
    "fql": _critic_of_state_action(build_fql_modules),
    "iql": _critic_of_state_action(build_iql_modules),
    "rebrac": _critic_of_state_action(build_rebrac_modules),
    "bc": build_flow_bc_modules,
}


def verifier_q_agg(loss: nn.Module) -> str:
    """How the verifier aggregates an algorithm's critic members: as its TD target does.

    The loss's ``q_agg`` (SORL, FQL, flow BC: per environment); IQL and ReBRAC always take
    the minimum over members, in their targets and actor terms alike.

    Examples:
        >>> from types import SimpleNamespace
        >>> verifier_q_agg(SimpleNamespace(q_agg="mean")), verifier_q_agg(SimpleNamespace())
        ('mean', 'min')
    """
    return str(getattr(loss, "q_agg", "min"))


def algorithm_of(config: Mapping[str, Any]) -> str:
    """The algorithm a run config trained (``"sorl"`` when the config does not say).

    ``config["algo"]`` is the algorithm's name, or a config group with a ``name``.

    Examples:
        >>> algorithm_of({}), algorithm_of({"algo": "fql"}), algorithm_of({"algo": {"name": "iql"}})
        ('sorl', 'fql', 'iql')
    """
    algo = config.get("algo", "sorl")
    if isinstance(algo, Mapping):
        algo = algo.get("name", "sorl")
    return str(algo)


@dataclass(frozen=True)
class TrainedNetworks:
    """The policy and critic of a checkpoint, in eval mode on ``device``, without gradients.

    Attributes:
        actor: the policy that samples actions (SORL's and flow BC's
            :class:`~sorl_torchrl.ShortcutActor`, FQL's one-step policy, IQL's Gaussian
            actor, ReBRAC's tanh actor).
        critic: the Q ensemble (the verifier's scorer); ``None`` for a model without one.
        q_agg: how the verifier aggregates the critic's members (:func:`verifier_q_agg`).
        config: the run config recorded in the checkpoint.
        step: the update the checkpoint was written at (``None`` if it does not say).
        path: the checkpoint file.
        device: where the networks are.
        algo: the algorithm that trained them (:func:`algorithm_of`).
    """

    actor: nn.Module
    critic: QEnsemble | None
    q_agg: str
    config: dict[str, Any]
    step: int | None
    path: Path
    device: torch.device
    algo: str = "sorl"

    @property
    def has_steps(self) -> bool:
        """Whether ``k`` means anything to the policy (SORL, flow BC); else only ``k = 1``."""
        return has_inference_steps(self.actor)

    def sampler(
        self, inference_steps: int = 1, num_candidates: int = 1, *, compile: bool | str = False
    ) -> VerifierSampler | BestOfNSampler:
        """The best-of-N sampler of these networks (a critic is needed).

        Raises:
            SettingError: the model has no critic, or ``k``, ``N`` or ``compile`` is invalid
                (``k`` other than 1 for a policy without steps).
        """
        if self.critic is None:
            raise SettingError(
                "num_candidates",
                num_candidates,
                "the policy alone (this model has no critic: no best-of-N sampler)",
                "Use policy(inference_steps, num_candidates=1).",
            )
        return sampling_policy(
            self.actor,
            self.critic,
            inference_steps,
            num_candidates,
            q_agg=self.q_agg,
            compile=compile,
        )

    def policy(
        self, inference_steps: int = 1, num_candidates: int = 1, *, compile: bool | str = False
    ) -> nn.Module:
        """The TorchRL policy for ``(k, N)``: see :func:`load_policy`."""
        if self.critic is not None:
            sampler = self.sampler(inference_steps, num_candidates, compile=compile)
            if sampler.num_candidates > 1 or sampler.compile_mode is not None:
                return sampler
        elif compile_mode(compile) is not None:
            raise SettingError(
                "compile",
                compile,
                "False for a model without a critic (only a best-of-N sampler compiles)",
            )
        # N = 1, eager: the bare policy (sharing the trained network), default k set.
        return sampling_policy(self.actor, None, inference_steps, num_candidates)


def load_networks(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> TrainedNetworks:
    """Rebuild a checkpoint's networks from its recorded config and load their weights.

    The checkpoint is read with ``torch.load(weights_only=True)``
    (:func:`~sorl_torchrl.checkpoint.load_checkpoint`). Building the networks draws their
    (overwritten) initial weights under a forked RNG, so loading leaves the caller's random
    stream as it was.

    Args:
        path: a checkpoint written by the training recipe (or by
            :func:`~sorl_torchrl.checkpoint.save_checkpoint` with ``config`` and ``loss``).
        device: where to put the networks; it must exist on this machine.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``device`` does not exist here.
        CheckpointError: the file is corrupt or not a sorl-torchrl checkpoint; it records
            no config or the config of another algorithm; or its weights do not fit.
    """
    path = Path(path)
    torch_device = check_device(device)
    state = load_checkpoint(path, map_location=torch_device)
    config = state.get("config")
    if not isinstance(config, Mapping) or "loss" not in state:
        raise CheckpointError(
            f"{path} records no run config and network weights (its keys: "
            f"{', '.join(map(str, state))}): a policy loads from a checkpoint of the training "
            "recipe, or one saved with {'config': ..., 'loss': loss.state_dict()}."
        )
    algo = algorithm_of(config)
    builder = POLICY_BUILDERS.get(algo)
    if builder is None:
        raise CheckpointError(
            f"{path} holds a policy of algo={algo!r}; this version loads "
            f"{', '.join(sorted(POLICY_BUILDERS))} policies. Load it with the sorl-torchrl "
            "version that trained it."
        )
    forked = [torch_device.index or 0] if torch_device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=forked):
            actor, critic, module = builder(config, device=torch_device)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"The config recorded in {path} does not describe networks this version builds "
            f"({type(err).__name__}: {err}). Load it with the sorl-torchrl version that "
            "trained it."
        ) from err
    load_module_state(module, state["loss"], path)
    for network in (actor, critic):
        if network is not None:
            network.eval().requires_grad_(False)
    return TrainedNetworks(
        actor=actor,
        critic=critic,
        q_agg=verifier_q_agg(module),
        config=dict(config),
        step=state.get("step"),
        path=path,
        device=torch_device,
        algo=algo,
    )


def load_policy(
    path: str | os.PathLike,
    *,
    inference_steps: int = 1,
    num_candidates: int = 1,
    device: str | torch.device = "cpu",
    compile: bool | str = False,
) -> nn.Module:
    """A trained policy, ready for ``env.rollout(policy=...)``, from its checkpoint.

    Any algorithm of :data:`POLICY_BUILDERS`: the checkpoint's config says which.

    Args:
        path: the checkpoint (``checkpoint.pt`` of a training run).
        inference_steps: ``k``, Euler steps per action (a power of two) for SORL's and flow
            BC's shortcut actors; 1, the only value, for FQL, IQL and ReBRAC.
        num_candidates: ``N``, candidates per observation, the best kept by the algorithm's
            own critic.
        device: where the policy runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        compile: compile the step with ``torch.compile`` (``True``, a mode name, or
            ``False``); see :meth:`sorl_torchrl.VerifierSampler.compile_select`.

    Returns:
        The best-of-N sampler with ``N`` candidates (and ``k`` steps):
        :class:`VerifierSampler` for a shortcut actor, else
        :class:`~sorl_torchrl.modules.best_of_n.BestOfNSampler`. For ``N = 1`` without
        compilation, the bare policy (a :class:`ShortcutActor` with ``k`` steps; FQL's,
        IQL's or ReBRAC's actor itself): the same actions for the same noise, without the
        verifier's bookkeeping.

    Raises:
        ValueError: ``k`` is not a power of two (not 1 for a policy without steps),
            ``N < 1`` (``N > 1`` for a model without a critic), an unknown compile mode, or
            a device this machine does not have.
        FileNotFoundError: no file at ``path``.
        CheckpointError: see :func:`load_networks`.

    Examples:
        >>> import tempfile, pathlib
        >>> from tensordict import TensorDict
        >>> from sorl_torchrl.checkpoint import save_checkpoint
        >>> from sorl_torchrl.deploy import build_sorl_modules
        >>> config = {"sizes": {"observation_dim": 3, "action_dim": 2},
        ...           "network": {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...                       "critic_layer_norm": True, "condition_on_steps": True,
        ...                       "step_feature": "steps"}}
        >>> _, _, loss = build_sorl_modules(config)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = save_checkpoint(path, {"step": 0, "config": config, "loss": loss.state_dict()})
        >>> policy = load_policy(path, inference_steps=4, num_candidates=8)
        >>> type(policy).__name__, policy.inference_steps, policy.num_candidates
        ('VerifierSampler', 4, 8)
        >>> policy(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))["action"].shape
        torch.Size([5, 2])
        >>> type(load_policy(path, inference_steps=2)).__name__
        'ShortcutActor'
        >>> try:
        ...     load_policy(path, inference_steps=3)
        ... except ValueError as err:
        ...     print(err)
        inference_steps must be a positive power of two (1, 2, 4, 8, ...), got 3. ...
    """
    networks = load_networks(path, device=device)
    return networks.policy(inference_steps, num_candidates, compile=compile)
