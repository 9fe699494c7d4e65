"""The SORL loss terms: the math of :class:`~sorl_torchrl.ShortcutLoss`, written once.

Every term is a method that takes its randomness (noise, times, step counts) as arguments,
so it can be checked against its equation, and evaluates the networks' own methods with the
parameters it needs swapped in. :class:`ShortcutTerms` is mixed into the loss module, which
owns the networks, their parameters and the settings these methods read.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from tensordict import TensorDictBase

from sorl_torchrl._validation import check_power_of_two
from sorl_torchrl.modules.critic import aggregate_q, policy_q_term

__all__ = ["ShortcutTerms"]


class ShortcutTerms:
    """The terms of the SORL losses (see :class:`~sorl_torchrl.ShortcutLoss`).

    The private ``_critic_objective`` and ``_actor_objective`` are the bodies the update
    step runs (and compiles); the public ``*_loss`` term methods compose the same pieces.
    """

    # ------------------------------------------------------------------ helpers
    @property
    def bptt_step_choices(self) -> list[int]:
        """The step counts ``k`` the Q and TD losses draw from: ``1, 2, ..., M_BTT``."""
        return [2**i for i in range(int(math.log2(self.max_bptt_steps)) + 1)]

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
            >>> from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss
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
        return policy_q_term(values, self.actor_q_agg or self.q_agg, self.normalize_q_loss)

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

    def combine_actor_terms(self, terms: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``fm_coef * FM + alpha * SC + q_loss_coef * Q_loss``."""
        fm, sc, q_loss = terms[:3]
        return self.fm_coef * fm + self.alpha * sc + self.q_loss_coef * q_loss
