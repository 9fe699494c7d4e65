"""The SORL loss as a TorchRL ``LossModule``.

Paper: *Scaling Offline RL via Efficient and Expressive Shortcut Models*
(Espinosa-Dice et al., 2025, https://arxiv.org/abs/2505.22866). Every term is its own
method that takes its randomness (noise, times, step counts) as arguments, so it can be
checked against its equation; :meth:`ShortcutLoss.actor_loss` and
:meth:`ShortcutLoss.qvalue_loss` draw that randomness and call them.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey, unravel_key
from torch import nn
from torchrl.objectives.common import LossModule

from sorl_torchrl._validation import check_feature_dim, check_finite, check_power_of_two
from sorl_torchrl.modules.actor import ShortcutActor
from sorl_torchrl.modules.critic import QAggregation, QEnsemble, aggregate_q

__all__ = ["ShortcutLoss"]


class ShortcutLoss(LossModule):
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
        actor_network: the shortcut actor.
        qvalue_network: the Q ensemble (its members are stacked parameters).
        discount: ``gamma``.
        q_agg: aggregation of the target ensemble in the TD target, ``"mean"`` or ``"min"``.
        q_loss_coef: weight of the Q loss (released default 100; tuned per environment).
        alpha: weight of the SC loss.
        fm_coef: weight of the FM loss.
        discretization_steps: ``M_disc``, a power of two (FM grid and SC step codes).
        max_bptt_steps: ``M_BTT``, a power of two; ``k`` is drawn from ``{1, 2, ..., M_BTT}``.
        normalize_q_loss: scale the Q loss by ``stopgrad(1 / mean|Q|)``.
        time_epsilon: ``eps`` of the interpolation path.
        next_action_grad: quirk (a), see above.
        actor_q_agg: quirk (e), see above.
        sc_target_network: ``"target"`` or ``"online"``, see above.
        validate_inputs: also check that every batch is finite (one device synchronisation
            per batch on a GPU). Keys and shapes are always checked. Switch it off for data
            validated once when it was loaded, as the recipes do for OGBench buffers.

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
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (set with ``loss.set_keys(...)``).

        Attributes:
            observation: observation key (``("next", observation)`` is the next one).
                Defaults to ``"observation"``.
            action: dataset action key. Defaults to ``"action"``.
            reward: reward key, read under ``"next"``. Defaults to ``"reward"``.
            terminated: termination key, read under ``"next"``; ``mask = 1 - terminated``.
                Defaults to ``"terminated"``.
            done: episode-end key (not used by the TD target, which uses ``mask``).
                Defaults to ``"done"``.
            priority: where the per-sample TD error is written for prioritized replay.
                Defaults to ``"td_error"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        terminated: NestedKey = "terminated"
        done: NestedKey = "done"
        priority: NestedKey = "td_error"

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
            raise TypeError(f"actor_network must be a ShortcutActor, got {type(actor_network)}.")
        if not isinstance(qvalue_network, QEnsemble):
            raise TypeError(f"qvalue_network must be a QEnsemble, got {type(qvalue_network)}.")
        if (actor_network.observation_dim, actor_network.action_dim) != (
            qvalue_network.observation_dim,
            qvalue_network.action_dim,
        ):
            raise ValueError(
                "actor_network and qvalue_network disagree on observation/action size."
            )
        for name, value in (("q_agg", q_agg), ("actor_q_agg", actor_q_agg)):
            if value not in ("mean", "min") and not (name == "actor_q_agg" and value is None):
                raise ValueError(f"{name} must be 'mean' or 'min', got {value!r}.")
        if sc_target_network not in ("target", "online"):
            raise ValueError(
                f"sc_target_network must be 'target' or 'online', got {sc_target_network!r}."
            )
        self.discretization_steps = check_power_of_two(discretization_steps, "discretization_steps")
        if self.discretization_steps < 2:
            raise ValueError("discretization_steps must be at least 2 (it was 1).")
        self.max_bptt_steps = check_power_of_two(max_bptt_steps, "max_bptt_steps")
        self.discount = float(discount)
        self.q_agg = q_agg
        self.q_loss_coef = float(q_loss_coef)
        self.alpha = float(alpha)
        self.fm_coef = float(fm_coef)
        self.normalize_q_loss = normalize_q_loss
        self.time_epsilon = float(time_epsilon)
        self.next_action_grad = next_action_grad
        self.actor_q_agg = actor_q_agg
        self.sc_target_network = sc_target_network
        self.validate_inputs = validate_inputs
        self.observation_dim = actor_network.observation_dim
        self.action_dim = actor_network.action_dim
        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

    # ------------------------------------------------------------------ keys
    def _set_in_keys(self) -> None:
        keys = self.tensor_keys
        self._in_keys = [
            keys.observation,
            keys.action,
            ("next", keys.observation),
            ("next", keys.reward),
            ("next", keys.terminated),
        ]

    @property
    def in_keys(self) -> list[NestedKey]:
        """The tensordict keys the loss reads."""
        if getattr(self, "_in_keys", None) is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    # ------------------------------------------------------------------ helpers
    @property
    def bptt_step_choices(self) -> list[int]:
        """The step counts ``k`` the Q and TD losses draw from: ``1, 2, ..., M_BTT``."""
        return [2**i for i in range(int(math.log2(self.max_bptt_steps)) + 1)]

    @staticmethod
    def _swap(params: TensorDictBase, network: nn.Module) -> AbstractContextManager:
        """Evaluate ``network`` with ``params`` for the duration of a ``with`` block."""
        return params.to_module(network, preserve_module_state=False)

    @property
    def _policy(self):
        """The actor's ``ShortcutModel`` (its methods run with whichever params are swapped in)."""
        return self.actor_network.module

    def _sc_actor_params(self) -> TensorDictBase:
        if self.sc_target_network == "target":
            return self.target_actor_network_params
        return self.actor_network_params.detach()

    def interpolate(
        self, noise: torch.Tensor, action: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The path point ``x_t = (1 - (1-eps) t) a0 + t a1`` and velocity ``a1 - (1-eps) a0``."""
        eps = self.time_epsilon
        x_t = (1 - (1 - eps) * time) * noise + time * action
        return x_t, action - (1 - eps) * noise

    def self_consistency_step_codes(
        self, batch_size: int, device: torch.device | None = None
    ) -> torch.Tensor:
        """Deterministic SC step codes ``[B, 1]``: ``log2 M - 1, ..., 0`` in equal groups.

        Rows left over after ``log2 M`` equal groups get code 0.

        Examples:
            >>> from sorl_torchrl import QEnsemble, ShortcutActor
            >>> loss = ShortcutLoss(ShortcutActor(1, 1, num_cells=(4,)),
            ...                     QEnsemble(1, 1, num_cells=(4,)))
            >>> loss.self_consistency_step_codes(7).flatten().tolist()
            [2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0]
        """
        groups = int(math.log2(self.discretization_steps))
        per_group = batch_size // groups
        codes = torch.arange(groups - 1, -1, -1, device=device).repeat_interleave(per_group)
        codes = torch.cat([codes, codes.new_zeros(batch_size - codes.numel())])
        return codes.to(torch.get_default_dtype()).unsqueeze(-1)

    def draw_num_steps(self) -> int:
        """Draw ``k`` uniformly from :attr:`bptt_step_choices` (CPU RNG: no device sync)."""
        choices = self.bptt_step_choices
        return choices[int(torch.randint(len(choices), ()))]

    # ------------------------------------------------------------------ the math, once
    def _flow_errors(
        self,
        observation_part: torch.Tensor,
        rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    ) -> list[torch.Tensor]:
        """Mean squared velocity errors of several ``(x_t, t, d, target)`` row blocks.

        All blocks share the online actor and the observations, so they run as one stacked
        forward. Call with the online actor's parameters swapped in.
        """
        if len(rows) == 1:
            x, time, code, _ = rows[0]
            preds = [self._policy.velocity_from_part(observation_part, x, time, code)]
        else:
            xs, times, codes, _ = zip(*rows)
            stacked = self._policy.velocity_from_part(
                torch.cat([observation_part] * len(rows)),
                torch.cat(xs),
                torch.cat(times),
                torch.cat(codes),
            )
            preds = stacked.chunk(len(rows))
        return [(pred - row[3]).pow(2).mean() for pred, row in zip(preds, rows)]

    def _flow_matching_row(
        self, noise: torch.Tensor, action: torch.Tensor, time: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_t, target = self.interpolate(noise, action, time)
        code = torch.full_like(time, math.log2(self.discretization_steps))
        return x_t, time, code, target

    def _self_consistency_row(
        self,
        observation: torch.Tensor,
        noise: torch.Tensor,
        action: torch.Tensor,
        time: torch.Tensor,
        step_code: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_t, _ = self.interpolate(noise, action, time)
        return x_t, time, step_code, self.self_consistency_target(observation, x_t, time, step_code)

    def self_consistency_target(
        self,
        observation: torch.Tensor,
        x_t: torch.Tensor,
        time: torch.Tensor,
        step_code: torch.Tensor,
    ) -> torch.Tensor:
        """Two half steps of size ``h/2`` (code ``d + 1``) averaged: ``(v1 + v2) / 2``, no grad.

        Uses the target actor (``sc_target_network="target"``) or the online one.
        """
        policy = self._policy
        half = 0.5 * torch.exp2(-step_code)
        with torch.no_grad(), self._swap(self._sc_actor_params(), self.actor_network):
            part = policy.observation_part(observation)
            v1 = policy.velocity_from_part(part, x_t, time, step_code + 1)
            v2 = policy.velocity_from_part(part, x_t + half * v1, time + half, step_code + 1)
        return 0.5 * (v1 + v2)

    def _score_policy(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        num_steps: int,
        qvalue_params: TensorDictBase | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The Q loss of policy actions: ``lam * -mean(Q)``, no gradient into the critic."""
        params = self.qvalue_network_params if qvalue_params is None else qvalue_params
        with self._swap(params.detach(), self.qvalue_network):
            values = self.qvalue_network.values(observation, action, float(num_steps))
        q = aggregate_q(values, self.actor_q_agg or self.q_agg)
        loss = -q.mean()
        lam = (1.0 / q.abs().mean()).detach() if self.normalize_q_loss else torch.ones_like(loss)
        return lam * loss, q, lam

    def _critic_objective(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The body of :meth:`td_loss` (compiled whole by the update step)."""
        policy, critic = self._policy, self.qvalue_network
        grad = nullcontext() if self.next_action_grad else torch.no_grad()
        with grad, self._swap(self.actor_network_params, self.actor_network):
            part = policy.observation_part(next_observation)
            next_action = policy.sample_from_part(part, noise, num_steps)
        with self._swap(self.target_qvalue_network_params, critic):
            next_values = critic.values(next_observation, next_action, float(num_steps))
        target = reward + self.discount * mask * aggregate_q(next_values, self.q_agg)
        if not self.next_action_grad:
            target = target.detach()
        with self._swap(self.qvalue_network_params, critic):
            q = critic.values(observation, action, float(num_steps))
        return (q - target).pow(2).mean(), q, target

    def _actor_objective(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        fm_noise: torch.Tensor,
        fm_time: torch.Tensor,
        sc_noise: torch.Tensor,
        sc_time: torch.Tensor,
        step_codes: torch.Tensor,
        q_noise: torch.Tensor,
        num_steps: int,
        qvalue_params: TensorDictBase | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """FM, SC and Q loss on one batch (compiled whole by the update step).

        The online actor processes the observations once for the three terms; the FM and
        SC predictions run as one stacked forward.

        Returns:
            ``(fm, sc, q_loss, q, lam)`` as :meth:`flow_matching_loss`,
            :meth:`self_consistency_loss` and :meth:`q_loss` would return them.
        """
        policy = self._policy
        sc_row = self._self_consistency_row(observation, sc_noise, action, sc_time, step_codes)
        with self._swap(self.actor_network_params, self.actor_network):
            part = policy.observation_part(observation)
            fm_row = self._flow_matching_row(fm_noise, action, fm_time)
            fm, sc = self._flow_errors(part, [fm_row, sc_row])
            policy_action = policy.sample_from_part(part, q_noise, num_steps)
        q_loss, q, lam = self._score_policy(observation, policy_action, num_steps, qvalue_params)
        return fm, sc, q_loss, q, lam

    # ------------------------------------------------------------------ loss terms
    def flow_matching_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor,
        time: torch.Tensor,
    ) -> torch.Tensor:
        """FM: ``mean |f(s, x_t, t, log2 M) - v*|^2`` (online actor).

        Args:
            observation: ``[B, obs]``.
            action: dataset actions ``a1``, ``[B, act]``.
            noise: ``a0``, ``[B, act]``.
            time: ``t``, ``[B, 1]`` (on the grid ``k / M`` in training).
        """
        with self._swap(self.actor_network_params, self.actor_network):
            part = self._policy.observation_part(observation)
            (fm,) = self._flow_errors(part, [self._flow_matching_row(noise, action, time)])
        return fm

    def self_consistency_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        noise: torch.Tensor,
        time: torch.Tensor,
        step_code: torch.Tensor,
    ) -> torch.Tensor:
        """SC: ``mean |f(s, x_t, t, d) - (v1 + v2) / 2|^2``.

        Args:
            observation: ``[B, obs]``.
            action: dataset actions ``a1``, ``[B, act]``.
            noise: ``a0``, ``[B, act]``.
            time: ``t``, ``[B, 1]`` (on the grid of step ``2^-d`` in training).
            step_code: ``d``, ``[B, 1]`` (float).
        """
        row = self._self_consistency_row(observation, noise, action, time, step_code)
        with self._swap(self.actor_network_params, self.actor_network):
            (sc,) = self._flow_errors(self._policy.observation_part(observation), [row])
        return sc

    def q_loss(
        self,
        observation: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        qvalue_params: TensorDictBase | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BPTT Q loss ``-mean(Q(s, a_pi, k))`` (times ``stopgrad(1/mean|Q|)`` if normalised).

        Args:
            observation: ``[B, obs]``.
            noise: ``a0`` of the policy sample, ``[B, act]``.
            num_steps: ``k``, Euler steps of the policy sample (gradients through all).
            qvalue_params: critic parameters that score the actions (no gradient reaches
                them); the online critic if ``None``.

        Returns:
            ``(q_loss, q [B, 1], lam)`` where ``lam`` is the normalisation factor (1 if off).
        """
        num_steps = check_power_of_two(num_steps, "num_steps")
        policy = self._policy
        with self._swap(self.actor_network_params, self.actor_network):
            action = policy.sample_from_part(policy.observation_part(observation), noise, num_steps)
        return self._score_policy(observation, action, num_steps, qvalue_params)

    def td_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Critic TD loss: mean over members and batch of ``(Q(s, a, k) - y)^2``.

        Args:
            observation: ``[B, obs]``.
            action: dataset actions, ``[B, act]``.
            next_observation: ``[B, obs]``.
            reward: ``[B, 1]``.
            mask: ``1 - terminated``, ``[B, 1]`` float.
            noise: ``a0`` of the next-action sample, ``[B, act]``.
            num_steps: ``k`` of the next-action sample (and the critic's step input).

        Returns:
            ``(loss, q [E, B, 1], y [B, 1])``.
        """
        num_steps = check_power_of_two(num_steps, "num_steps")
        return self._critic_objective(
            observation, action, next_observation, reward, mask, noise, num_steps
        )

    # ------------------------------------------------------------------ batches
    def read_batch(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor]:
        """The tensors the losses read from a TED batch, flattened to one batch dim.

        Keys and shapes are always checked (no device synchronisation); values are checked
        to be finite when ``validate_inputs`` is on. ``terminated`` becomes the float
        ``mask = 1 - terminated``.

        Returns:
            ``{"observation", "action", "next_observation", "reward", "mask"}``.
        """
        keys = self.tensor_keys
        wanted = {
            "observation": keys.observation,
            "action": keys.action,
            "next_observation": ("next", keys.observation),
            "reward": ("next", keys.reward),
            "terminated": ("next", keys.terminated),
        }
        present = set(tensordict.keys(True, True))
        missing = [unravel_key(k) for k in wanted.values() if unravel_key(k) not in present]
        if missing:
            raise KeyError(
                f"ShortcutLoss is missing the keys {missing} in its input tensordict "
                f"(it has {sorted(map(str, present))}). Rename the data or call "
                "loss.set_keys(observation=..., action=..., reward=..., terminated=...)."
            )
        batch = {name: tensordict.get(key) for name, key in wanted.items()}
        if tensordict.batch_dims != 1:
            batch = {k: v.reshape(-1, *v.shape[tensordict.batch_dims :]) for k, v in batch.items()}
        check_feature_dim(batch["observation"], self.observation_dim, "observation")
        check_feature_dim(batch["next_observation"], self.observation_dim, "next observation")
        check_feature_dim(batch["action"], self.action_dim, "action")
        check_feature_dim(batch["reward"], 1, "reward")
        check_feature_dim(batch["terminated"], 1, "terminated")
        if self.validate_inputs:
            for name in ("observation", "action", "next_observation", "reward"):
                check_finite(batch[name], name)
        batch["mask"] = 1.0 - batch.pop("terminated").to(batch["reward"].dtype)
        return batch

    def draw_critic_randomness(self, batch: dict[str, torch.Tensor]) -> dict:
        """The critic loss's random draws, in their fixed order: ``k``, then the noise."""
        num_steps = self.draw_num_steps()
        return {"noise": torch.randn_like(batch["action"]), "num_steps": num_steps}

    def draw_actor_randomness(self, batch: dict[str, torch.Tensor]) -> dict:
        """The actor loss's random draws, in their fixed order (FM, SC, then ``k`` and Q)."""
        obs, action = batch["observation"], batch["action"]
        size, device, m = obs.shape[0], obs.device, self.discretization_steps
        fm_time = torch.randint(m, (size, 1), device=device).to(obs.dtype) / m
        fm_noise = torch.randn_like(action)
        codes = self.self_consistency_step_codes(size, device).to(obs.dtype)
        sections = torch.exp2(codes)
        sc_time = torch.floor(torch.rand_like(codes) * sections) / sections
        sc_noise = torch.randn_like(action)
        num_steps = self.draw_num_steps()
        return {
            "fm_noise": fm_noise,
            "fm_time": fm_time,
            "sc_noise": sc_noise,
            "sc_time": sc_time,
            "step_codes": codes,
            "q_noise": torch.randn_like(action),
            "num_steps": num_steps,
        }

    def critic_metadata(
        self, q: torch.Tensor, target: torch.Tensor, num_steps: int
    ) -> dict[str, torch.Tensor]:
        """Detached critic diagnostics, with the per-sample ``td_error`` ``[B]``."""
        td_error = (q - target).detach()
        return {
            "q_mean": q.detach().mean(),
            "q_min": q.detach().min(),
            "q_max": q.detach().max(),
            "td_error_mean": td_error.mean(),
            "td_error_std": td_error.std(),
            "target_value": target.detach().mean(),
            "critic_bptt_steps": torch.full((), float(num_steps), device=q.device),
            "td_error": td_error.abs().mean(0).squeeze(-1),
        }

    def actor_metadata(self, terms: tuple[torch.Tensor, ...], num_steps: int) -> dict:
        """Detached actor diagnostics from :meth:`_actor_objective`'s terms."""
        fm, sc, q_loss, q, lam = terms
        return {
            "fm_loss": fm.detach(),
            "sc_loss": sc.detach(),
            "q_loss": q_loss.detach(),
            "q_policy": q.detach().mean(),
            "lambda": lam.detach(),
            "actor_bptt_steps": torch.full((), float(num_steps), device=fm.device),
        }

    def combine_actor_terms(self, terms: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``fm_coef * FM + alpha * SC + q_loss_coef * Q_loss``."""
        fm, sc, q_loss = terms[:3]
        return self.fm_coef * fm + self.alpha * sc + self.q_loss_coef * q_loss

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
        return self.combine_actor_terms(terms), self.actor_metadata(terms, draws["num_steps"])

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
        return loss, self.critic_metadata(q, target, draws["num_steps"])

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
