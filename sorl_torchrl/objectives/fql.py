"""The FQL loss (Flow Q-Learning) as a TorchRL ``LossModule``.

Paper: *Flow Q-Learning* (Park, Li, Levine, ICML 2025, https://arxiv.org/abs/2502.02538);
the terms follow the released code (``agents/fql.py``) to the letter. Every term is its own
method that takes its randomness as arguments; :meth:`FQLLoss.draw_randomness` draws it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch

from sorl_torchrl._validation import FLAG, Choice, Number, Settings
from sorl_torchrl.modules.actor import ShortcutActor, ShortcutModel
from sorl_torchrl.modules.critic import QAggregation, QEnsemble, aggregate_q, policy_q_term
from sorl_torchrl.modules.one_step_policy import OneStepPolicy
from sorl_torchrl.objectives._baseline_common import TEDLoss, check_critic
from sorl_torchrl.objectives.batch import critic_diagnostics
from sorl_torchrl.objectives.shortcut import ShortcutLoss

__all__ = ["FLOW_STEP_CODE", "FQLLoss", "FQL_SETTINGS"]

#: The step code fed to the BC flow network. FQL's flow ``f(s, x, t)`` has no step input:
#: it is the package's velocity network with its step-code input held at 0, which then
#: neither changes the velocity nor receives a gradient.
FLOW_STEP_CODE = 0.0

#: The checks of :class:`FQLLoss`'s settings (the recipes' config check can reuse them).
FQL_SETTINGS = Settings(
    "FQLLoss",
    {
        "discount": Number("[0, 1]"),
        "q_agg": Choice("mean", "min"),
        "alpha": Number("[0, inf)"),
        "flow_steps": Number("[1, inf)", integer=True),
        "normalize_q_loss": FLAG,
        "actor_q_agg": Choice("mean", "min", None),
        "clip_q_actions": FLAG,
        "validate_inputs": FLAG,
    },
)


class FQLLoss(TEDLoss):
    r"""FQL: critic TD loss, BC flow loss, one-step distillation and the Q loss.

    With ``m = 1 - terminated``, ``K = flow_steps`` and the four independent draws
    ``z', x0, t, z`` of :meth:`draw_randomness`:

    - ``loss_qvalue`` (:meth:`td_loss`): ``mean_{E,B} (Q_e(s, a) - y)^2`` with
      ``y = r + discount * m * agg_e Qbar_e(s', a')``, ``a' = clip(mu(s', z'))`` from the
      one-step policy without gradient, ``agg = q_agg`` over the target critic's members.
    - ``loss_bc_flow`` (:meth:`bc_flow_loss`): ``mean_{B,A} (f(s, x_t, t) - (a - x0))^2``,
      ``x_t = (1 - t) x0 + t a``, ``t ~ U[0, 1)`` per row.
    - ``loss_actor``: ``alpha * L_D + L_pi`` for the one-step policy ``mu``, where
      ``L_D = mean_{B,A} (mu(s, z) - sg(Euler_f(s, z)))^2`` (:meth:`distillation_loss`,
      the target clipped, ``mu`` not; :meth:`flow_actions` integrates ``K`` Euler steps
      ``x += f(s, x, i/K) / K``) and ``L_pi = -mean_b q`` with
      ``q = mean_e Q_e(s, clip(mu(s, z)))`` on the online critic without gradient
      (:meth:`q_loss`), times ``sg(1 / mean_b |q|)`` if ``normalize_q_loss`` (quirk (e):
      off in the paper, recommended by the README for new tasks).

    The released code's quirks, reproduced by default, each behind a switch:

    - quirk (c) ``actor_q_agg="mean"``: ``L_pi`` always averages the members; ``q_agg``
      acts in the TD target only. ``"min"`` takes the minimum; ``None`` follows ``q_agg``.
    - quirk (d) ``clip_q_actions=True``: the critic scores ``clip(mu(s, z), -1, 1)`` (no
      gradient for components outside ``[-1, 1]``), while ``L_D`` regresses the unclipped
      ``mu`` onto the clipped flow action. ``False`` scores the unclipped ``mu``.

    Gradients: ``loss_qvalue`` reaches the critic only, ``loss_bc_flow`` the flow network
    only, ``loss_actor`` the one-step policy only. The total ``L_Q + L_BC + alpha L_D + L_pi``
    is what :class:`~sorl_torchrl.objectives.joint_update.JointUpdateStep` minimises, with
    one Adam step per batch, as the released code does. Only the critic has a target.

    The BC flow network is the package's shortcut velocity network and Euler sampler
    (:class:`~sorl_torchrl.modules.ShortcutModel` with
    :class:`~sorl_torchrl.modules.networks.VelocityMLP`) evaluated at step code
    :data:`FLOW_STEP_CODE`, so FQL's ``K = 10`` steps run in the same loop as SORL's.

    Args:
        actor_network: the one-step policy ``mu(s, z)``.
        bc_flow_network: the BC flow ``f(s, x, t)``: a ``ShortcutModel`` (or a
            ``ShortcutActor``, whose model is used).
        qvalue_network: the critic ``Q(s, a)``, a ``QEnsemble`` with
            ``condition_on_steps=False`` (released code: 2 members, LayerNorm).
        discount: ``gamma``, in ``[0, 1]``.
        q_agg: aggregation of the target members in the TD target, ``"mean"`` or ``"min"``.
        alpha: weight of the distillation loss, finite and ``>= 0``.
        flow_steps: ``K``, Euler steps of the distillation target, an integer ``>= 1``.
        normalize_q_loss: scale the Q loss by ``sg(1 / mean|q|)`` (a bool).
        actor_q_agg: quirk (c), see above: ``"mean"``, ``"min"`` or ``None``.
        clip_q_actions: quirk (d), see above (a bool).
        validate_inputs: also check that every batch is finite and that ``terminated``
            holds only 0 and 1 (one device synchronisation per tensor on a GPU).

    Examples:
        >>> from sorl_torchrl import QEnsemble
        >>> from sorl_torchrl.modules.actor import ShortcutModel
        >>> from sorl_torchrl.modules.networks import VelocityMLP
        >>> from sorl_torchrl.objectives.joint_update import JointUpdateStep
        >>> from sorl_torchrl.toy import bimodal_bandit_batch
        >>> policy = OneStepPolicy(1, 2, num_cells=(16,))
        >>> flow = ShortcutModel(VelocityMLP(1, 2, (16,)), 1, 2)
        >>> critic = QEnsemble(1, 2, num_cells=(16,), condition_on_steps=False)
        >>> loss = FQLLoss(policy, flow, critic)
        >>> update = JointUpdateStep(loss)  # attaches the target update
        >>> out = loss(bimodal_bandit_batch(8))
        >>> sorted(key for key in out.keys() if key.startswith("loss_"))
        ['loss_actor', 'loss_bc_flow', 'loss_qvalue']
        >>> FQLLoss(policy, flow, critic, flow_steps=0)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: flow_steps must be an integer >= 1, got 0.
    """

    #: The TED keys, as for :class:`~sorl_torchrl.ShortcutLoss` (set with ``set_keys``).
    _AcceptedKeys = ShortcutLoss._AcceptedKeys

    SETTINGS: ClassVar[Settings] = FQL_SETTINGS
    #: Loss terms that an update step leaves out on delayed steps: none in FQL.
    DELAYED_TERMS: ClassVar[tuple[str, ...]] = ()
    #: Every update is a full update (ReBRAC's ``actor_freq`` is 2).
    delay: int = 1
    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = [
        "loss_qvalue",
        "loss_bc_flow",
        "loss_actor",
        "distill_loss",
        "q_loss",
        "q_policy",
        "lambda",
        "action_mse",
        "q_mean",
        "q_min",
        "q_max",
        "td_error_mean",
        "td_error_std",
        "target_value",
    ]

    actor_network: OneStepPolicy
    bc_flow_network: ShortcutModel
    qvalue_network: QEnsemble
    actor_network_params: TensorDictParams
    bc_flow_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_bc_flow_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: OneStepPolicy,
        bc_flow_network: ShortcutModel | ShortcutActor,
        qvalue_network: QEnsemble,
        *,
        discount: float = 0.99,
        q_agg: QAggregation = "mean",
        alpha: float = 10.0,
        flow_steps: int = 10,
        normalize_q_loss: bool = False,
        actor_q_agg: QAggregation | None = "mean",
        clip_q_actions: bool = True,
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(bc_flow_network, ShortcutActor):
            bc_flow_network = bc_flow_network.module
        for name, network, cls in (
            ("actor_network", actor_network, OneStepPolicy),
            ("bc_flow_network", bc_flow_network, ShortcutModel),
        ):
            if not isinstance(network, cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(network).__name__}.")
        check_critic(qvalue_network, actor_network, "FQLLoss")
        sizes = (actor_network.observation_dim, actor_network.action_dim)
        flow_sizes = (bc_flow_network.observation_dim, bc_flow_network.action_dim)
        if flow_sizes != sizes:
            raise ValueError(
                "actor_network and bc_flow_network disagree on observation/action size: "
                f"(obs, act) = {sizes} and {flow_sizes}. Build both for the same environment."
            )
        settings = self.SETTINGS.check(
            {
                "discount": discount,
                "q_agg": q_agg,
                "alpha": alpha,
                "flow_steps": flow_steps,
                "normalize_q_loss": normalize_q_loss,
                "actor_q_agg": actor_q_agg,
                "clip_q_actions": clip_q_actions,
                "validate_inputs": validate_inputs,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.observation_dim, self.action_dim = sizes
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(bc_flow_network, "bc_flow_network")
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

    # ------------------------------------------------------------------ draws
    def draw_randomness(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The four independent draws, in this order: ``z'``, ``x0``, ``t``, ``z``.

        Returns:
            ``{"next_noise": z' [B, A], "flow_noise": x0 [B, A], "flow_time": t [B, 1]
            (uniform in [0, 1)), "noise": z [B, A]}``.
        """
        action = batch["action"]
        return {
            "next_noise": torch.randn_like(action),
            "flow_noise": torch.randn_like(action),
            "flow_time": torch.rand_like(action[..., :1]),
            "noise": torch.randn_like(action),
        }

    # ------------------------------------------------------------------ the pieces, once
    def _one_step(self, observation: torch.Tensor, noise: torch.Tensor, clip: bool) -> torch.Tensor:
        """``mu(s, z)`` of the online one-step policy (clipped to ``[-1, 1]`` if ``clip``)."""
        with self._swap(self.actor_network_params, self.actor_network):
            return self.actor_network.module.sample(observation, noise, clip)

    def _bc_flow_error(
        self,
        observation_part: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor,
        time: torch.Tensor,
    ) -> torch.Tensor:
        """``mean (f(s, x_t, t) - (a - x0))^2``; call with the flow's params swapped in."""
        x_t = (1.0 - time) * noise + time * action
        velocity = self.bc_flow_network.velocity_from_part(
            observation_part, x_t, time, FLOW_STEP_CODE
        )
        return (velocity - (action - noise)).pow(2).mean()

    def _euler_target(self, observation_part: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``clip(Euler_f(s, z))`` with ``K`` steps, no gradient; call with the flow swapped in."""
        with torch.no_grad():
            return self.bc_flow_network.sample_from_part(
                observation_part.detach(), noise, self.flow_steps, fixed_step_code=FLOW_STEP_CODE
            )

    @staticmethod
    def _distillation_error(raw_action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (raw_action - target).pow(2).mean()

    def _score_policy(
        self, observation: torch.Tensor, policy_action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lam * -mean q, q [B, 1], lam)``, ``q`` over the members; the critic frozen."""
        with self._swap(self.qvalue_network_params.detach(), self.qvalue_network):
            values = self.qvalue_network.values(observation, policy_action)
        return policy_q_term(values, self.actor_q_agg or self.q_agg, self.normalize_q_loss)

    def _critic_objective(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
        next_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        critic = self.qvalue_network
        with torch.no_grad():
            next_action = self._one_step(next_observation, next_noise, clip=True)
            with self._swap(self.target_qvalue_network_params, critic):
                next_values = critic.values(next_observation, next_action)
            target = reward + self.discount * mask * aggregate_q(next_values, self.q_agg)
        with self._swap(self.qvalue_network_params, critic):
            q = critic.values(observation, action)
        return (q - target).pow(2).mean(), q, target

    def _actor_objective(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        flow_noise: torch.Tensor,
        flow_time: torch.Tensor,
        noise: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """L_BC, L_D and L_pi on one batch: the flow and the policy each run once on ``s``."""
        with self._swap(self.bc_flow_network_params, self.bc_flow_network):
            part = self.bc_flow_network.observation_part(observation)
            bc_flow = self._bc_flow_error(part, action, flow_noise, flow_time)
            target = self._euler_target(part, noise)
        raw = self._one_step(observation, noise, clip=False)
        distill = self._distillation_error(raw, target)
        policy_action = raw.clamp(-1.0, 1.0)
        scored = policy_action if self.clip_q_actions else raw
        q_loss, q, lam = self._score_policy(observation, scored)
        return {
            "loss_bc_flow": bc_flow,
            "loss_actor": self.alpha * distill + q_loss,
            "distill_loss": distill.detach(),
            "q_loss": q_loss.detach(),
            "q_policy": q.detach().mean(),
            "lambda": lam.detach(),
            "action_mse": (policy_action - action).detach().pow(2).mean(),
        }

    # ------------------------------------------------------------------ loss terms
    def td_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
        next_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``L_Q``: mean over members and batch of ``(Q(s, a) - y)^2``.

        Args:
            observation: ``[B, obs]``.
            action: dataset actions, ``[B, act]``.
            next_observation: ``[B, obs]``.
            reward: ``[B, 1]``.
            mask: ``1 - terminated``, ``[B, 1]`` float.
            next_noise: ``z'`` of the next action ``clip(mu(s', z'))``, ``[B, act]``.

        Returns:
            ``(loss, q [E, B, 1], y [B, 1])``.
        """
        return self._critic_objective(
            observation, action, next_observation, reward, mask, next_noise
        )

    def bc_flow_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor,
        time: torch.Tensor,
    ) -> torch.Tensor:
        """``L_BC = mean (f(s, x_t, t) - (a - x0))^2``, ``x_t = (1 - t) x0 + t a``.

        Args:
            observation: ``[B, obs]``.
            action: dataset actions ``a``, ``[B, act]``.
            noise: ``x0``, ``[B, act]``.
            time: ``t``, ``[B, 1]``.
        """
        with self._swap(self.bc_flow_network_params, self.bc_flow_network):
            part = self.bc_flow_network.observation_part(observation)
            return self._bc_flow_error(part, action, noise, time)

    def flow_actions(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``clip(Euler_f(s, z), -1, 1)``: ``x = z; x += f(s, x, i/K) / K`` for ``i < K``.

        Without gradient (the distillation target). ``[B, obs], [B, act] -> [B, act]``.
        """
        with self._swap(self.bc_flow_network_params, self.bc_flow_network):
            return self._euler_target(self.bc_flow_network.observation_part(observation), noise)

    def distillation_loss(self, observation: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``L_D = mean (mu(s, z) - sg(flow_actions(s, z)))^2`` (``mu`` not clipped).

        Args:
            observation: ``[B, obs]``.
            noise: ``z``, shared by the policy and the flow, ``[B, act]``.
        """
        raw = self._one_step(observation, noise, clip=False)
        return self._distillation_error(raw, self.flow_actions(observation, noise))

    def q_loss(
        self, observation: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``L_pi = -mean q`` (times ``sg(1 / mean|q|)`` if normalised), ``q`` of ``clip(mu)``.

        Args:
            observation: ``[B, obs]``.
            noise: ``z`` of the policy action, ``[B, act]``.

        Returns:
            ``(loss, q [B, 1], lam)``; ``q`` aggregates the critic's members by
            ``actor_q_agg`` (no gradient reaches the critic) and ``lam`` is the
            normalisation factor (1 if off).
        """
        action = self._one_step(observation, noise, clip=self.clip_q_actions)
        return self._score_policy(observation, action)

    # ------------------------------------------------------------------ the whole loss
    def compute_terms(
        self, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every term on one batch with given draws (the body an update step compiles).

        Args:
            batch: from :meth:`read_batch`.
            draws: from :meth:`draw_randomness`.

        Returns:
            The ``loss_*`` terms, detached diagnostics and the per-sample ``td_error``
            ``[B]`` (``|Q - y|`` averaged over members) for prioritized replay.
        """
        loss_qvalue, q, target = self._critic_objective(**batch, next_noise=draws["next_noise"])
        critic_meta = critic_diagnostics(q, target, 1)
        critic_meta.pop("critic_bptt_steps")  # FQL's critic does not read a step count
        actor = self._actor_objective(
            batch["observation"],
            batch["action"],
            draws["flow_noise"],
            draws["flow_time"],
            draws["noise"],
        )
        return {"loss_qvalue": loss_qvalue, **actor, **critic_meta}

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All terms on one batch with fresh draws and the same parameters.

        Returns:
            A TensorDict with ``loss_qvalue``, ``loss_bc_flow``, ``loss_actor`` and detached
            diagnostics; the per-sample TD error is written into ``tensordict`` under the
            priority key (the only change to it).
        """
        batch = self.read_batch(tensordict)
        out = self.compute_terms(batch, self.draw_randomness(batch))
        td_error = out.pop("td_error")
        if tensordict.batch_dims == 1:
            tensordict.set(self.tensor_keys.priority, td_error)
        return TensorDict(out)
