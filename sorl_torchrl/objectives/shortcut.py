"""The SORL loss as a TorchRL ``LossModule``.

Paper: *Scaling Offline RL via Efficient and Expressive Shortcut Models*
(Espinosa-Dice et al., 2025, https://arxiv.org/abs/2505.22866). Every term is its own
method that takes its randomness (noise, times, step counts) as arguments, so it can be
checked against its equation; :meth:`ShortcutLoss.actor_loss` and
:meth:`ShortcutLoss.qvalue_loss` draw that randomness and call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey

from sorl_torchrl._validation import (
    FLAG,
    Choice,
    Number,
    SettingError,
    Settings,
    check_power_of_two,
)
from sorl_torchrl.modules.actor import ShortcutActor
from sorl_torchrl.modules.critic import QAggregation, QEnsemble
from sorl_torchrl.objectives._baseline_common import TEDKeys, TEDLoss
from sorl_torchrl.objectives.batch import actor_diagnostics, critic_diagnostics
from sorl_torchrl.objectives.shortcut_terms import ShortcutTerms

__all__ = ["ShortcutLoss"]


def _bptt_within_discretization(values: dict[str, Any], prefix: str) -> SettingError | None:
    """The rule ``max_bptt_steps <= discretization_steps``.

    The Q and TD losses sample with up to ``M_BTT`` Euler steps, and only step counts up to
    ``M_disc`` are trained by the FM and SC terms.
    """
    bptt, disc = values.get("max_bptt_steps"), values.get("discretization_steps")
    if bptt is None or disc is None or bptt <= disc:
        return None
    return SettingError(
        f"{prefix}max_bptt_steps",
        bptt,
        f"a power of two <= discretization_steps ({disc})",
        "The Q and TD losses sample with up to max_bptt_steps Euler steps, and the "
        "flow-matching and self-consistency terms never train step counts above "
        "discretization_steps: raise discretization_steps or lower max_bptt_steps.",
    )


#: The checks of :class:`ShortcutLoss`'s settings (the recipes' config check reuses them).
LOSS_SETTINGS = Settings(
    "ShortcutLoss",
    {
        "discount": Number("[0, 1]"),
        "q_agg": Choice("mean", "min"),
        "q_loss_coef": Number("[0, inf)", meaning="0: behaviour cloning"),
        "alpha": Number("[0, inf)"),
        "fm_coef": Number("[0, inf)"),
        "discretization_steps": partial(check_power_of_two, minimum=2),
        "max_bptt_steps": check_power_of_two,
        "normalize_q_loss": FLAG,
        "time_epsilon": Number("[0, 1)"),
        "next_action_grad": FLAG,
        "actor_q_agg": Choice("mean", "min", None),
        "sc_target_network": Choice("target", "online"),
        "validate_inputs": FLAG,
    },
    rules=[_bptt_within_discretization],
)


class ShortcutLoss(ShortcutTerms, TEDLoss):
    r"""SORL: flow matching + self-consistency + BPTT Q loss for the actor, TD for the critic.

    Actor loss (``loss_actor``)::

        fm_coef * FM + alpha * SC + q_loss_coef * Q_loss

    - FM (:meth:`flow_matching_loss`): ``|f(s, x_t, t, log2 M) - (a1 - (1-eps) a0)|^2`` with
      ``x_t = (1 - (1-eps) t) a0 + t a1`` and ``t`` on the grid ``{0, 1/M, ..., (M-1)/M}``,
      ``M = discretization_steps`` (paper ``M_disc``).
    - SC (:meth:`self_consistency_loss`): the batch is split into ``log2 M`` groups with step
      codes ``d = log2 M - 1, ..., 0`` (left-over rows get ``d = 0``); the target is two
      half steps (code ``d + 1``) of the target actor, ``(v1 + v2) / 2``.
    - Q loss (:meth:`q_loss`): ``-mean(Q(s, a_pi, k))`` with ``a_pi`` sampled by ``k`` Euler
      steps with gradients through all of them, ``k`` drawn uniformly from the powers of two
      up to ``max_bptt_steps`` (paper ``M_BTT``); times ``stopgrad(1 / mean|Q|)`` if
      ``normalize_q_loss``. The critic gets no gradient from it.

    Critic loss (``loss_qvalue``, :meth:`td_loss`): mean over members and batch of
    ``(Q(s, a, k) - y)^2``, ``y = r + discount * mask * agg(Q_target(s', a', k))``, with
    ``a'`` a ``k``-step sample of the *online* actor and ``mask = 1 - terminated``.

    The released code differs from the paper in places; by default this loss reproduces the
    released code (which made the published numbers). The switches that belong to the loss:

    - quirk (a) ``next_action_grad=True``: ``a'`` is sampled with gradient and the TD target
      is not detached from it, so the critic loss also trains the actor. ``False`` detaches.
    - quirk (e) ``actor_q_agg="mean"``: the Q loss always averages the members. ``None``
      uses ``q_agg`` instead.
    - ``sc_target_network="target"``: the SC target uses the EMA target actor (code); the
      paper writes the online actor (``"online"``, without gradient).

    Every term evaluates the networks' own methods (the actor's
    :meth:`~sorl_torchrl.modules.ShortcutModel.observation_part`,
    :meth:`~sorl_torchrl.modules.ShortcutModel.velocity_from_part` and
    :meth:`~sorl_torchrl.modules.ShortcutModel.sample_from_part`, the critic's
    :meth:`~sorl_torchrl.QEnsemble.values`) with the online, target or pre-step parameters
    swapped in by ``params.to_module(network, preserve_module_state=False)``. Within the
    actor loss the online actor processes the observations once for the FM, SC and Q terms,
    and the FM and SC predictions run as one stacked forward. :class:`SORLUpdateStep`
    compiles the whole training iteration.

    Quirk (f) (the critic reads ``k`` itself, the actor ``log2 k``; ``Q(s, a, k)`` of the
    dataset action reuses the ``k`` of the next action) lives in :class:`QEnsemble`
    (``condition_on_steps``, ``step_feature``). Quirks (b)-(d) concern the optimiser and
    target updates and live in :class:`~sorl_torchrl.objectives.SORLUpdateStep`.

    Args:
        actor_network: the shortcut actor. The loss records ``discretization_steps`` on it
            (``ShortcutActor.trained_steps``), so that sampling it with more steps than
            it was trained for warns.
        qvalue_network: the Q ensemble (its members are stacked parameters).
        discount: ``gamma``, in ``[0, 1]``.
        q_agg: aggregation of the target ensemble in the TD target, ``"mean"`` or ``"min"``.
        q_loss_coef: weight of the Q loss, finite and ``>= 0`` (0: behaviour cloning;
            released default 100, tuned per environment).
        alpha: weight of the SC loss, finite and ``>= 0``.
        fm_coef: weight of the FM loss, finite and ``>= 0``.
        discretization_steps: ``M_disc``, a power of two ``>= 2`` (FM grid and SC step codes).
        max_bptt_steps: ``M_BTT``, a power of two ``<= discretization_steps``; ``k`` is drawn
            from ``{1, 2, ..., M_BTT}``.
        normalize_q_loss: scale the Q loss by ``stopgrad(1 / mean|Q|)`` (a bool).
        time_epsilon: ``eps`` of the interpolation path, in ``[0, 1)``.
        next_action_grad: quirk (a), see above (a bool).
        actor_q_agg: quirk (e), see above: ``"mean"``, ``"min"`` or ``None``.
        sc_target_network: ``"target"`` or ``"online"``, see above.
        validate_inputs: also check that every batch is finite and that ``terminated`` holds
            only 0 and 1 (one device synchronisation per tensor on a GPU). Keys, shapes and
            dtypes are always checked. Switch it off for data validated once when it was
            loaded, as the recipes do for OGBench buffers.

    Every setting is checked when the loss is built (``LOSS_SETTINGS``, also
    ``ShortcutLoss.SETTINGS``); one error lists every value that is not allowed, with its
    range. Batches follow the package's dtype rule: floating-point tensors of another
    precision are converted to the actor's dtype, integer observations, actions and rewards
    are refused; ``terminated`` may be bool or numeric.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss
        >>> actor = ShortcutActor(3, 2, num_cells=(32, 32))
        >>> critic = QEnsemble(3, 2, num_cells=(32, 32))
        >>> loss = ShortcutLoss(actor, critic)
        >>> target_updater = SoftUpdate(loss, tau=0.005)
        >>> batch = TensorDict({
        ...     "observation": torch.randn(16, 3), "action": torch.rand(16, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(16, 3), "reward": -torch.ones(16, 1),
        ...              "terminated": torch.zeros(16, 1, dtype=torch.bool),
        ...              "done": torch.zeros(16, 1, dtype=torch.bool)},
        ... }, batch_size=[16])
        >>> out = loss(batch)
        >>> (out["loss_actor"] + out["loss_qvalue"]).backward()
        >>> sorted(k for k in out.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_qvalue']
        >>> ShortcutLoss(actor, critic, discount=1.5, q_loss_coef=float("nan"))
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingsError: ShortcutLoss: 2 settings are not allowed:
          discount: got 1.5, allowed a finite number in [0, 1]
          q_loss_coef: got nan, allowed a finite number >= 0 (0: behaviour cloning)
        Change each one to an allowed value.
    """

    @dataclass
    class _AcceptedKeys(TEDKeys):
        """:class:`~sorl_torchrl.objectives._baseline_common.TEDKeys` and ``priority``.

        Attributes:
            priority: where the per-sample TD error is written for prioritized replay.
                Defaults to ``"td_error"``.
        """

        priority: NestedKey = "td_error"

    SETTINGS: ClassVar[Settings] = LOSS_SETTINGS
    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "fm_loss",
        "sc_loss",
        "q_loss",
        "q_policy",
        "lambda",
        "actor_bptt_steps",
        "q_mean",
        "q_min",
        "q_max",
        "td_error_mean",
        "td_error_std",
        "target_value",
        "critic_bptt_steps",
    ]

    actor_network: ShortcutActor
    qvalue_network: QEnsemble
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ShortcutActor,
        qvalue_network: QEnsemble,
        *,
        discount: float = 0.99,
        q_agg: QAggregation = "mean",
        q_loss_coef: float = 100.0,
        alpha: float = 10.0,
        fm_coef: float = 10.0,
        discretization_steps: int = 8,
        max_bptt_steps: int = 8,
        normalize_q_loss: bool = True,
        time_epsilon: float = 1e-5,
        next_action_grad: bool = True,
        actor_q_agg: QAggregation | None = "mean",
        sc_target_network: Literal["target", "online"] = "target",
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(actor_network, ShortcutActor):
            raise TypeError(
                f"actor_network must be a ShortcutActor, got {type(actor_network).__name__}."
            )
        if not isinstance(qvalue_network, QEnsemble):
            raise TypeError(
                f"qvalue_network must be a QEnsemble, got {type(qvalue_network).__name__}."
            )
        sizes = {
            "actor_network": (actor_network.observation_dim, actor_network.action_dim),
            "qvalue_network": (qvalue_network.observation_dim, qvalue_network.action_dim),
        }
        if len(set(sizes.values())) != 1:
            raise ValueError(
                "actor_network and qvalue_network disagree on observation/action size: "
                f"(obs, act) = {sizes['actor_network']} and {sizes['qvalue_network']}. Build "
                "both for the same environment."
            )
        settings = self.SETTINGS.check(
            {
                "discount": discount,
                "q_agg": q_agg,
                "q_loss_coef": q_loss_coef,
                "alpha": alpha,
                "fm_coef": fm_coef,
                "discretization_steps": discretization_steps,
                "max_bptt_steps": max_bptt_steps,
                "normalize_q_loss": normalize_q_loss,
                "time_epsilon": time_epsilon,
                "next_action_grad": next_action_grad,
                "actor_q_agg": actor_q_agg,
                "sc_target_network": sc_target_network,
                "validate_inputs": validate_inputs,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.observation_dim = actor_network.observation_dim
        self.action_dim = actor_network.action_dim
        # The actor learns step counts up to M_disc: its sampler warns beyond (not a weight).
        actor_network.trained_steps = self.discretization_steps
        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

    def actor_loss(
        self, tensordict: TensorDictBase, qvalue_params: TensorDictBase | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``fm_coef * FM + alpha * SC + q_loss_coef * Q_loss`` on a batch, fresh randomness.

        Args:
            tensordict: a TED batch.
            qvalue_params: critic parameters that score the policy's actions; the online
                critic if ``None`` (the update step passes the pre-step critic, quirk (c)).

        Returns:
            ``(loss, detached diagnostics)``.
        """
        batch = self.read_batch(tensordict)
        draws = self.draw_actor_randomness(batch)
        terms = self._actor_objective(
            batch["observation"], batch["action"], **draws, qvalue_params=qvalue_params
        )
        return self.combine_actor_terms(terms), actor_diagnostics(terms, draws["num_steps"])

    def qvalue_loss(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The critic TD loss on a batch with a freshly drawn ``k`` and noise.

        Returns:
            ``(loss, detached diagnostics)``; diagnostics include the per-sample
            ``td_error`` (``|Q - y|`` averaged over members) for prioritized replay.
        """
        batch = self.read_batch(tensordict)
        draws = self.draw_critic_randomness(batch)
        loss, q, target = self._critic_objective(**batch, **draws)
        return loss, critic_diagnostics(q, target, draws["num_steps"])

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both losses on one batch with the same parameters.

        Returns:
            A TensorDict with ``loss_actor``, ``loss_qvalue`` and detached diagnostics; the
            per-sample TD error is written into ``tensordict`` under the priority key.
        """
        loss_qvalue, meta_qvalue = self.qvalue_loss(tensordict)
        loss_actor, meta_actor = self.actor_loss(tensordict)
        td_error = meta_qvalue.pop("td_error")
        if tensordict.batch_dims == 1:
            tensordict.set(self.tensor_keys.priority, td_error)
        return TensorDict(
            {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, **meta_actor, **meta_qvalue}
        )
