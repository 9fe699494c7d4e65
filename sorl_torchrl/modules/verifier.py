"""Best-of-N sampling with the Q ensemble as verifier (parallel test-time scaling).

:func:`select_best` is the one selection rule: score every candidate of every observation
with the critic, aggregate its members, keep the argmax. Two samplers wrap it as TorchRL
policies and share everything else (candidate noise, checks, compilation, the tensordict
interface): :class:`VerifierSampler` for SORL's shortcut actor with ``k`` Euler steps, and
:class:`~sorl_torchrl.modules.best_of_n.BestOfNSampler` for any other sampling policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._compile import CompiledMethod, compile_mode
from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import (
    FLAG,
    Check,
    Choice,
    Number,
    PowerOfTwo,
    Settings,
    check_compile,
    check_power_of_two,
)
from sorl_torchrl.modules.actor import ShortcutActor
from sorl_torchrl.modules.critic import QAggregation, QEnsemble

__all__ = [
    "CANDIDATE_SETTINGS",
    "VERIFIER_SETTINGS",
    "CandidateSampler",
    "VerifierSampler",
    "select_best",
]

#: The checks shared by every best-of-N sampler (:class:`CandidateSampler`).
CANDIDATE_SETTINGS: dict[str, Check] = {
    "num_candidates": Number("[1, inf)", integer=True),
    "q_agg": Choice("mean", "min"),
    "return_candidates": FLAG,
    "compile": check_compile,
}

#: The checks of :class:`VerifierSampler`'s settings; per-call overrides run the same ones.
VERIFIER_SETTINGS = Settings(
    "VerifierSampler", {**CANDIDATE_SETTINGS, "inference_steps": check_power_of_two}
)


def select_best(
    critic: QEnsemble,
    observation: torch.Tensor,
    candidates: torch.Tensor,
    q_agg: QAggregation = "mean",
    inference_steps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate with the highest aggregated ``Q`` for each observation, and every score.

    Candidate ``j`` of observation ``i`` is scored against observation ``i`` only: the
    observations ``[*B, obs]`` are broadcast over the candidate axis of ``[*B, N, act]``.

    Args:
        critic: the Q ensemble.
        observation: ``[*B, obs]``.
        candidates: ``[*B, N, act]``.
        q_agg: ``"mean"`` or ``"min"`` over the ensemble members.
        inference_steps: ``k`` of the candidates, for a critic conditioned on the step count
            (ignored by one that is not).

    Returns:
        ``(action [*B, act], scores [*B, N])``.

    Examples:
        >>> class Distance(QEnsemble):  # Q(s, a) = -|a - s|^2 in both members
        ...     def values(self, observation, action, inference_steps=None):
        ...         q = -(action - observation).pow(2).sum(-1, keepdim=True)
        ...         return torch.stack([q, q])
        >>> critic = Distance(2, 2, num_cells=(4,), condition_on_steps=False)
        >>> observation = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> candidates = torch.tensor([[[1.0, 1.0], [0.0, 0.5]], [[1.0, 1.0], [0.0, 0.5]]])
        >>> action, scores = select_best(critic, observation, candidates)
        >>> action.tolist(), scores.tolist()
        ([[0.0, 0.5], [1.0, 1.0]], [[-2.0, -0.25], [0.0, -1.25]])
    """
    batch, n = observation.shape[:-1], candidates.shape[-2]
    obs = observation.unsqueeze(-2).expand(*batch, n, observation.shape[-1])
    values = critic.values(obs, candidates, inference_steps)
    scores = critic.aggregate(values, q_agg).squeeze(-1)
    best = scores.argmax(dim=-1, keepdim=True)
    index = best.unsqueeze(-1).expand(*batch, 1, candidates.shape[-1])
    return candidates.gather(-2, index).squeeze(-2), scores


def _dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype a module computes in: its first parameter's, else torch's default."""
    first = next(module.parameters(), None)
    return torch.get_default_dtype() if first is None else first.dtype


class CandidateSampler(TensorDictModuleBase):
    """What every best-of-N sampler shares: draw ``N`` candidates, keep the best by ``Q``.

    A subclass says how candidates are sampled (:meth:`_sample_candidates`) and which step
    counts ``k`` a call may ask for (:meth:`_steps_for_call`); this class holds the rest:
    the noise ``[*B, N, act]`` drawn outside any compiled graph, the checks, the selection
    (:func:`select_best`), compilation and the tensordict interface. Not used directly: see
    :class:`VerifierSampler` and :class:`~sorl_torchrl.modules.best_of_n.BestOfNSampler`.
    """

    SETTINGS: ClassVar[Settings]

    def __init__(
        self,
        actor: nn.Module,
        critic: QEnsemble,
        settings: dict,
        in_keys: Sequence[NestedKey],
        out_keys: Sequence[NestedKey] | None,
    ) -> None:
        super().__init__()
        if actor.observation_dim != critic.observation_dim or (
            actor.action_dim != critic.action_dim
        ):
            raise ValueError(
                "actor and critic disagree on sizes: actor (obs, act) = "
                f"({actor.observation_dim}, {actor.action_dim}), critic = "
                f"({critic.observation_dim}, {critic.action_dim}). Build both for the same "
                "environment."
            )
        self.actor = actor
        self.critic = critic
        self.num_candidates = settings["num_candidates"]
        self.q_agg = settings["q_agg"]
        self.return_candidates = return_candidates = settings["return_candidates"]
        if out_keys is None:
            out_keys = ["action"] + (
                ["candidate_actions", "candidate_scores"] if return_candidates else []
            )
        if len(out_keys) != 1 + 2 * int(return_candidates):
            raise ValueError(
                f"out_keys must name the action{' and candidates, scores' * return_candidates}"
                f" ({1 + 2 * int(return_candidates)} keys), got {list(out_keys)}."
            )
        self.in_keys = list(in_keys)
        self.out_keys = list(out_keys)
        self.compile_select(settings["compile"])

    @property
    def num_candidates(self) -> int:
        """``N``, the number of candidates per observation."""
        return self._num_candidates

    @num_candidates.setter
    def num_candidates(self, value: int) -> None:
        self._num_candidates = self.SETTINGS["num_candidates"](value, "num_candidates")

    def compile_select(self, mode: bool | str | None = "default") -> CandidateSampler:
        """Compile candidate sampling, scoring and selection with ``torch.compile``.

        The noise is drawn outside the graph, so a compiled sampler consumes the random
        stream like an eager one and returns the same actions up to float rounding. One
        graph is built per batch shape, ``N`` and ``k``; a rollout with fixed sizes compiles
        once. If compilation fails, the sampler warns and runs eagerly from then on. A copy
        or an unpickled sampler compiles its own graphs on its first call.

        Args:
            mode: a ``torch.compile`` mode (``"default"``, ``"max-autotune-no-cudagraphs"``,
                ``"reduce-overhead"`` for CUDA graphs, ...) or ``True`` for ``"default"``;
                ``None`` or ``False`` runs eagerly.

        Returns:
            ``self``.

        Examples:
            >>> policy = VerifierSampler(ShortcutActor(3, 2, num_cells=(16,)),
            ...                          QEnsemble(3, 2, num_cells=(16,)), num_candidates=4)
            >>> policy.compile_select("default").compile_mode
            'default'
            >>> policy.compile_select(False).compile_mode is None
            True
        """
        self.compile_mode = compile_mode(mode)
        self._select = CompiledMethod(
            "_select_tensors", self.compile_mode, what=f"{type(self).__name__}.select"
        )
        return self

    @property
    def is_compiled(self) -> bool:
        """Whether :meth:`select` runs compiled (``False`` after a fallback to eager)."""
        return self._select.is_compiled

    def _steps_for_call(self, inference_steps: int | None) -> int:
        """The checked ``k`` of a call (the default when ``None``)."""
        raise NotImplementedError

    def _sample_candidates(
        self, observation: torch.Tensor, noise: torch.Tensor, n: int, k: int
    ) -> torch.Tensor:
        """``[*B, N, act]`` candidates from observations ``[*B, 1, obs]`` and their noise."""
        raise NotImplementedError

    @torch.no_grad()
    def select(
        self,
        observation: torch.Tensor,
        num_candidates: int | None = None,
        inference_steps: int | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Best-of-N from tensors.

        Args:
            observation: ``[*B, obs]``.
            num_candidates: ``N``; the module default if ``None``. Checked like the
                constructor's (an integer >= 1).
            inference_steps: ``k``; the module default if ``None``. Checked like the
                constructor's.
            noise: the noise of every candidate, ``[*B, N, act]``; fresh if ``None``.
                Float observations and noise are converted to the actor's dtype; integer
                ones are refused.

        Returns:
            ``(action [*B, act], candidates [*B, N, act], scores [*B, N] or None)``;
            scores are ``None`` when ``N == 1`` and ``return_candidates`` is off (no critic
            call is needed then).
        """
        n = self.num_candidates
        if num_candidates is not None:
            n = self.SETTINGS["num_candidates"](num_candidates, "num_candidates")
        k = self._steps_for_call(inference_steps)
        check_feature_dim(observation, self.actor.observation_dim, "observation")
        dtype = _dtype_of(self.actor)
        observation = as_model_dtype(observation, dtype, "observation")
        shape = (*observation.shape[:-1], n, self.actor.action_dim)
        if noise is None:
            noise = torch.randn(shape, device=observation.device, dtype=dtype)
        elif noise.shape != shape:
            raise ValueError(
                f"noise must have shape {list(shape)} "
                f"([*B, num_candidates, action_dim]), got {list(noise.shape)}."
            )
        else:
            noise = as_model_dtype(noise, dtype, "noise")
        return self._select(self, observation, noise, n, k)

    def _select_tensors(
        self, observation: torch.Tensor, noise: torch.Tensor, n: int, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`select` on validated tensors (the body that :meth:`compile_select` compiles)."""
        candidates = self._sample_candidates(observation.unsqueeze(-2), noise, n, k)
        if n == 1 and not self.return_candidates:
            return candidates.squeeze(-2), candidates, None
        action, scores = select_best(self.critic, observation, candidates, self.q_agg, float(k))
        return action, candidates, scores

    def forward(
        self,
        tensordict: TensorDictBase,
        *,
        num_candidates: int | None = None,
        inference_steps: int | None = None,
    ) -> TensorDictBase:
        """Write the selected action (and optionally candidates and scores) in place."""
        observation = tensordict.get(self.in_keys[0], None)
        if observation is None:
            raise KeyError(
                f"{type(self).__name__} needs the key {self.in_keys[0]!r} in the input "
                f"tensordict; found {list(tensordict.keys(True))}."
            )
        check_finite(observation, "observation")
        action, candidates, scores = self.select(observation, num_candidates, inference_steps)
        tensordict.set(self.out_keys[0], action)
        if self.return_candidates:
            tensordict.set(self.out_keys[1], candidates)
            tensordict.set(self.out_keys[2], scores)
        return tensordict


class VerifierSampler(CandidateSampler):
    """Draw ``N`` candidate actions per observation with ``k`` steps; keep the best by ``Q``.

    For a batch of observations ``[*B, obs]`` the actor samples candidates
    ``[*B, N, act]`` (candidate axis right after the batch axes, so every candidate stays
    paired with its own observation), the critic scores them with ``q_agg`` over its
    members, and the argmax per observation is returned (:func:`select_best`).
    ``num_candidates=1`` skips the critic and is exactly plain sampling with the same noise.

    The paper's symbols: ``N`` = ``num_candidates``, ``M_inf`` = ``inference_steps``.

    Args:
        actor: the shortcut actor that proposes candidates.
        critic: the Q ensemble that scores them. If it is conditioned on the step count,
            it is given ``inference_steps`` (as in the released code).
        num_candidates: ``N``, candidates per observation (an integer >= 1).
        inference_steps: ``k``, Euler steps per candidate (a power of two). More steps than
            the actor was trained for (its ``trained_steps``, ``M_disc``) warn once per
            ``k`` (:class:`~sorl_torchrl.modules.actor.StepsBeyondTrainingWarning`).
        q_agg: ``"mean"`` or ``"min"`` over ensemble members.
        return_candidates: (a bool) also write ``candidate_actions`` ``[*B, N, act]`` and
            ``candidate_scores`` ``[*B, N]`` to the output tensordict.
        in_keys: the observation key.
        out_keys: the action key, then (if ``return_candidates``) the candidates and
            scores keys.
        compile: compile sampling, scoring and selection with ``torch.compile`` (see
            :meth:`compile_select`): ``False`` (default) runs eagerly, ``True`` uses mode
            ``"default"``, a string names the mode.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = ShortcutActor(3, 2, num_cells=(16,))
        >>> critic = QEnsemble(3, 2, num_cells=(16,))
        >>> policy = VerifierSampler(actor, critic, num_candidates=8, inference_steps=2,
        ...                          return_candidates=True)
        >>> out = policy(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))
        >>> out["action"].shape, out["candidate_actions"].shape, out["candidate_scores"].shape
        (torch.Size([4, 2]), torch.Size([4, 8, 2]), torch.Size([4, 8]))
        >>> policy.select(torch.randn(4, 3), num_candidates=0)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: num_candidates must be an integer >= 1, got 0.
    """

    SETTINGS: ClassVar[Settings] = VERIFIER_SETTINGS

    def __init__(
        self,
        actor: ShortcutActor,
        critic: QEnsemble,
        num_candidates: int = 1,
        inference_steps: int = 1,
        *,
        q_agg: QAggregation = "mean",
        return_candidates: bool = False,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] | None = None,
        compile: bool | str = False,
    ) -> None:
        if not isinstance(actor, ShortcutActor) or not isinstance(critic, QEnsemble):
            raise TypeError(
                "VerifierSampler needs a ShortcutActor and a QEnsemble, got "
                f"{type(actor).__name__} and {type(critic).__name__} (any other sampling "
                "policy: BestOfNSampler)."
            )
        settings = self.SETTINGS.check(
            {
                "num_candidates": num_candidates,
                "inference_steps": inference_steps,
                "q_agg": q_agg,
                "return_candidates": return_candidates,
                "compile": compile,
            }
        )
        super().__init__(actor, critic, settings, in_keys, out_keys)
        self.inference_steps = settings["inference_steps"]

    inference_steps = PowerOfTwo("``k``, the Euler steps per candidate.")

    def _steps_for_call(self, inference_steps: int | None) -> int:
        """``k`` checked by the actor (a power of two; beyond its training it warns)."""
        k = self.inference_steps if inference_steps is None else inference_steps
        return self.actor.module.steps_for_call(k)

    def _sample_candidates(
        self, observation: torch.Tensor, noise: torch.Tensor, n: int, k: int
    ) -> torch.Tensor:
        """``k`` Euler steps from each candidate's noise (the actor's own sampler)."""
        return self.actor.sample(observation, k, noise)
