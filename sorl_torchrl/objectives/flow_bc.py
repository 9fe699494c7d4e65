"""Flow behaviour cloning: the SORL shortcut actor trained without its Q loss.

The actor loss is SORL's flow-matching and self-consistency terms (the same methods as
:class:`~sorl_torchrl.ShortcutLoss`, from :class:`~sorl_torchrl.objectives.shortcut_terms.
ShortcutTerms`). A critic is optional: with one, its TD loss trains it for a verifier
(:class:`~sorl_torchrl.VerifierSampler` picks the best of ``N`` sampled actions); without
one, nothing of a critic is built, evaluated or stored.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import unravel_key

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import Settings
from sorl_torchrl.modules.actor import ShortcutActor
from sorl_torchrl.modules.critic import QAggregation, QEnsemble
from sorl_torchrl.objectives._baseline_common import TEDLoss
from sorl_torchrl.objectives.batch import critic_diagnostics
from sorl_torchrl.objectives.shortcut import LOSS_SETTINGS, ShortcutLoss
from sorl_torchrl.objectives.shortcut_terms import ShortcutTerms

__all__ = ["CRITIC_OUT_KEYS", "FLOW_BC_SETTINGS", "FlowBCLoss"]

#: The output keys a critic adds: its loss and the diagnostics of
#: :func:`~sorl_torchrl.objectives.batch.critic_diagnostics`.
CRITIC_OUT_KEYS = [
    "loss_qvalue",
    "q_mean",
    "q_min",
    "q_max",
    "td_error_mean",
    "td_error_std",
    "target_value",
    "critic_bptt_steps",
]

#: The checks of :class:`FlowBCLoss`'s settings: those of :class:`ShortcutLoss` it shares.
FLOW_BC_SETTINGS = Settings(
    "FlowBCLoss",
    {
        name: LOSS_SETTINGS[name]
        for name in (
            "discount",
            "q_agg",
            "alpha",
            "fm_coef",
            "discretization_steps",
            "max_bptt_steps",
            "time_epsilon",
            "next_action_grad",
            "sc_target_network",
            "validate_inputs",
        )
    },
    rules=LOSS_SETTINGS.rules,
)


class FlowBCLoss(ShortcutTerms, TEDLoss):
    r"""Flow BC: ``fm_coef * FM + alpha * SC`` for the shortcut actor, and optionally a critic.

    ``loss_actor`` is :class:`~sorl_torchrl.ShortcutLoss`'s actor loss without its Q term:
    flow matching (:meth:`flow_matching_loss`) at step code ``log2 M_disc`` plus
    self-consistency (:meth:`self_consistency_loss`) against the EMA target actor.

    With ``qvalue_network`` given, ``loss_qvalue`` (:meth:`td_loss`) is SORL's TD loss:
    ``mean (Q(s, a, k) - y)^2``, ``y = r + discount * m * agg Q_target(s', a', k)``,
    ``a'`` a ``k``-step sample of the online actor, ``k`` drawn from ``1, 2, ..., M_BTT``.
    By default the target is detached from the actor (``next_action_grad=False``), so the
    actor is trained by behaviour cloning alone; ``True`` lets the TD loss reach the actor
    as in ShortcutLoss's quirk (a), i.e. ``ShortcutLoss(q_loss_coef=0)``. With
    ``qvalue_network=None`` the loss has no critic: it reads only observations and actions.

    Train it with :class:`~sorl_torchrl.objectives.joint_update.JointUpdateStep`, which
    also moves the target actor (and the target critic).

    Args:
        actor_network: the shortcut actor. The loss records ``discretization_steps`` on it
            (``ShortcutActor.trained_steps``).
        qvalue_network: the Q ensemble a verifier will use, or ``None`` for none.
        discount: ``gamma``, in ``[0, 1]`` (with a critic).
        q_agg: aggregation of the target ensemble in the TD target (with a critic).
        alpha: weight of the SC loss, finite and ``>= 0``.
        fm_coef: weight of the FM loss, finite and ``>= 0``.
        discretization_steps: ``M_disc``, a power of two ``>= 2``.
        max_bptt_steps: ``M_BTT``, the largest ``k`` of the TD loss's next actions (with a
            critic), a power of two ``<= discretization_steps``.
        time_epsilon: ``eps`` of the interpolation path, in ``[0, 1)``.
        next_action_grad: let the TD loss reach the actor (see above; a bool).
        sc_target_network: ``"target"`` (released code) or ``"online"`` (the paper).
        validate_inputs: also check that every batch is finite (and ``terminated`` binary).

    Examples:
        >>> from sorl_torchrl import QEnsemble, ShortcutActor
        >>> from sorl_torchrl.objectives.joint_update import JointUpdateStep
        >>> from sorl_torchrl.toy import bimodal_bandit_batch
        >>> loss = FlowBCLoss(ShortcutActor(1, 2, num_cells=(16,)))
        >>> update = JointUpdateStep(loss, lr=1e-4)
        >>> info = update(bimodal_bandit_batch(8))
        >>> sorted(key for key in info.keys() if key.startswith("loss_"))
        ['loss_actor']
        >>> loss.in_keys
        ['observation', 'action']
        >>> critic = QEnsemble(1, 2, num_cells=(16,))
        >>> with_verifier = FlowBCLoss(ShortcutActor(1, 2, num_cells=(16,)), critic)
        >>> sorted(key for key in JointUpdateStep(with_verifier)(bimodal_bandit_batch(8)).keys()
        ...        if key.startswith("loss_"))
        ['loss_actor', 'loss_qvalue']
    """

    #: The TED keys, as for :class:`~sorl_torchrl.ShortcutLoss` (set with ``set_keys``).
    _AcceptedKeys = ShortcutLoss._AcceptedKeys

    SETTINGS: ClassVar[Settings] = FLOW_BC_SETTINGS
    DELAYED_TERMS: ClassVar[tuple[str, ...]] = ()
    delay: int = 1
    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    #: The output keys without a critic; a critic adds :data:`CRITIC_OUT_KEYS`.
    out_keys = ["loss_actor", "fm_loss", "sc_loss"]

    actor_network: ShortcutActor
    qvalue_network: QEnsemble | None
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ShortcutActor,
        qvalue_network: QEnsemble | None = None,
        *,
        discount: float = 0.99,
        q_agg: QAggregation = "mean",
        alpha: float = 10.0,
        fm_coef: float = 10.0,
        discretization_steps: int = 8,
        max_bptt_steps: int = 8,
        time_epsilon: float = 1e-5,
        next_action_grad: bool = False,
        sc_target_network: Literal["target", "online"] = "target",
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(actor_network, ShortcutActor):
            raise TypeError(
                f"actor_network must be a ShortcutActor, got {type(actor_network).__name__}."
            )
        if qvalue_network is not None:
            if not isinstance(qvalue_network, QEnsemble):
                raise TypeError(
                    "qvalue_network must be a QEnsemble or None, got "
                    f"{type(qvalue_network).__name__}."
                )
            actor_sizes = (actor_network.observation_dim, actor_network.action_dim)
            critic_sizes = (qvalue_network.observation_dim, qvalue_network.action_dim)
            if actor_sizes != critic_sizes:
                raise ValueError(
                    "actor_network and qvalue_network disagree on observation/action size: "
                    f"(obs, act) = {actor_sizes} and {critic_sizes}. Build both for the same "
                    "environment."
                )
        settings = self.SETTINGS.check(
            {
                "discount": discount,
                "q_agg": q_agg,
                "alpha": alpha,
                "fm_coef": fm_coef,
                "discretization_steps": discretization_steps,
                "max_bptt_steps": max_bptt_steps,
                "time_epsilon": time_epsilon,
                "next_action_grad": next_action_grad,
                "sc_target_network": sc_target_network,
                "validate_inputs": validate_inputs,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.observation_dim = actor_network.observation_dim
        self.action_dim = actor_network.action_dim
        actor_network.trained_steps = self.discretization_steps
        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        if qvalue_network is None:
            self.qvalue_network = None
        else:
            self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)
            self.out_keys = [*self.out_keys, *CRITIC_OUT_KEYS]

    @property
    def has_critic(self) -> bool:
        """Whether the loss trains a critic (for a verifier)."""
        return self.qvalue_network is not None

    # ------------------------------------------------------------------ keys and batches
    def _set_in_keys(self) -> None:
        keys = self.tensor_keys
        self._in_keys = [keys.observation, keys.action]
        if self.has_critic:
            self._in_keys += [
                ("next", keys.observation),
                ("next", keys.reward),
                ("next", keys.terminated),
            ]

    def read_batch(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor]:
        """The tensors the terms read: see :func:`~sorl_torchrl.objectives.batch.read_ted_batch`.

        Without a critic only ``{"observation", "action"}``, checked the same way.
        """
        if self.has_critic:
            return super().read_batch(tensordict)
        wanted = {"observation": self.tensor_keys.observation, "action": self.tensor_keys.action}
        present = set(tensordict.keys(True, True))
        missing = [unravel_key(k) for k in wanted.values() if unravel_key(k) not in present]
        if missing:
            raise KeyError(
                f"FlowBCLoss is missing the keys {missing} in its input tensordict (it has "
                f"{sorted(map(str, present))}). Rename the data or call "
                "loss.set_keys(observation=..., action=...)."
            )
        batch = {}
        for name, key in wanted.items():
            value = tensordict.get(key)
            value = value.reshape(-1, *value.shape[tensordict.batch_dims :])
            check_feature_dim(value, getattr(self, f"{name}_dim"), name)
            batch[name] = as_model_dtype(value, self.dtype, name)
            if self.validate_inputs:
                check_finite(batch[name], name)
        return batch

    def draw_randomness(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | int]:
        """The FM and SC draws of ShortcutLoss's actor loss, then the critic's ``k`` and noise.

        Returns:
            ``fm_noise``, ``fm_time``, ``sc_noise``, ``sc_time``, ``step_codes`` (see
            :meth:`draw_actor_randomness`) and, with a critic, ``critic_noise`` and
            ``critic_num_steps`` (see :meth:`draw_critic_randomness`).
        """
        draws = self.draw_actor_randomness(batch)
        for unused in ("q_noise", "num_steps"):  # drawn for the Q loss, which is off
            draws.pop(unused)
        if self.has_critic:
            critic = self.draw_critic_randomness(batch)
            draws["critic_noise"], draws["critic_num_steps"] = critic["noise"], critic["num_steps"]
        return draws

    # ------------------------------------------------------------------ the whole loss
    def _flow_objective(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        fm_noise: torch.Tensor,
        fm_time: torch.Tensor,
        sc_noise: torch.Tensor,
        sc_time: torch.Tensor,
        step_codes: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FM and SC as :meth:`flow_matching_loss` and :meth:`self_consistency_loss`, stacked."""
        sc_row = self._self_consistency_row(observation, sc_noise, action, sc_time, step_codes)
        with self._swap(self.actor_network_params, self.actor_network):
            part = self._policy.observation_part(observation)
            fm_row = self._flow_matching_row(fm_noise, action, fm_time)
            fm, sc = self._flow_errors(part, [fm_row, sc_row])
        return fm, sc

    def compute_terms(
        self, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor | int]
    ) -> dict[str, torch.Tensor]:
        """Every term on one batch with given draws (the body an update step compiles).

        Returns:
            ``loss_actor``, ``fm_loss``, ``sc_loss`` and, with a critic, ``loss_qvalue``,
            its diagnostics and the per-sample ``td_error`` ``[B]``.
        """
        observation, action = batch["observation"], batch["action"]
        flow_draws = {k: v for k, v in draws.items() if not k.startswith("critic_")}
        fm, sc = self._flow_objective(observation, action, **flow_draws)
        out = {
            "loss_actor": self.fm_coef * fm + self.alpha * sc,
            "fm_loss": fm.detach(),
            "sc_loss": sc.detach(),
        }
        if self.has_critic:
            k = draws["critic_num_steps"]
            loss_qvalue, q, target = self._critic_objective(
                **batch, noise=draws["critic_noise"], num_steps=k
            )
            out.update(loss_qvalue=loss_qvalue, **critic_diagnostics(q, target, k))
        return out

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All terms on one batch with fresh draws.

        Returns:
            A TensorDict with ``loss_actor`` (and ``loss_qvalue``) and detached diagnostics;
            with a critic the per-sample TD error is written into ``tensordict`` under the
            priority key (the only change to it).
        """
        batch = self.read_batch(tensordict)
        out = self.compute_terms(batch, self.draw_randomness(batch))
        td_error = out.pop("td_error", None)
        if td_error is not None and tensordict.batch_dims == 1:
            tensordict.set(self.tensor_keys.priority, td_error)
        return TensorDict(out)
