"""Best-of-N with a learned critic for any policy that samples: every algorithm's verifier.

:class:`~sorl_torchrl.modules.verifier.VerifierSampler` scales SORL's shortcut actor in two
ways, its Euler steps ``k`` and its candidates ``N``. :class:`BestOfNSampler` does the second
for a policy without steps (FQL's :class:`~sorl_torchrl.modules.one_step_policy.OneStepPolicy`,
IQL's :class:`~sorl_torchrl.modules.baseline_actors.GaussianActor`, ReBRAC's
:class:`~sorl_torchrl.modules.baseline_actors.TanhActor`), with the same selection
(:func:`~sorl_torchrl.modules.verifier.select_best`) and the same interface, so a
comparison of algorithms under test-time scaling separates what the verifier adds from what
the policy brings. :func:`best_of_n` picks the sampler a policy needs, :func:`plain_policy`
gives the policy itself for ``N = 1`` and :func:`sampling_policy` either, for any ``(k, N)``
of any policy with or without a critic.

Candidates: FQL's one-step policy draws fresh noise for each one. IQL's and ReBRAC's
evaluation policies are deterministic (temperature 0: all ``N`` candidates would be the same
action), so their ``N > 1`` candidates are sampled at ``candidate_temperature`` (default 1,
their exploration noise: ``N(mu(s), I)`` for IQL, ``tanh(mu(s))`` plus clipped noise of
scale 0.2 for ReBRAC). ``N = 1`` is always the policy's own evaluation action.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._validation import Number, SettingError, Settings
from sorl_torchrl.modules.actor import ShortcutActor
from sorl_torchrl.modules.critic import QAggregation, QEnsemble
from sorl_torchrl.modules.verifier import CANDIDATE_SETTINGS, CandidateSampler, VerifierSampler

__all__ = [
    "BEST_OF_N_SETTINGS",
    "BestOfNSampler",
    "best_of_n",
    "check_single_step",
    "has_inference_steps",
    "plain_policy",
    "sampling_policy",
]

#: The checks of :class:`BestOfNSampler`'s settings.
BEST_OF_N_SETTINGS = Settings(
    "BestOfNSampler",
    {
        **CANDIDATE_SETTINGS,
        "candidate_temperature": Number("[0, inf)", meaning="0: N copies of the mode"),
    },
)


def has_inference_steps(actor: nn.Module) -> bool:
    """Whether ``k`` (Euler steps per action) means anything to ``actor``: a shortcut actor.

    Examples:
        >>> from sorl_torchrl.modules.one_step_policy import OneStepPolicy
        >>> has_inference_steps(ShortcutActor(3, 2, num_cells=(8,)))
        True
        >>> has_inference_steps(OneStepPolicy(3, 2, num_cells=(8,)))
        False
    """
    return isinstance(actor, ShortcutActor)


def check_single_step(actor: nn.Module, inference_steps: int, name: str = "inference_steps") -> int:
    """``1``, the only step count of a policy without Euler steps; any other is refused.

    Raises:
        SettingError: ``inference_steps`` is not 1.

    Examples:
        >>> from sorl_torchrl.modules.baseline_actors import GaussianActor
        >>> check_single_step(GaussianActor(3, 2, num_cells=(8,)), 2)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: inference_steps must be 1 (GaussianActor ...
    """
    if isinstance(inference_steps, bool) or inference_steps != 1:
        raise SettingError(
            name,
            inference_steps,
            f"1 ({type(actor).__name__} computes an action in one network call: it has no "
            "inference steps)",
            "Scale it with num_candidates (best-of-N) instead.",
        )
    return 1


class BestOfNSampler(CandidateSampler):
    """Draw ``N`` candidate actions per observation from any policy; keep the best by ``Q``.

    The sibling of :class:`~sorl_torchrl.modules.verifier.VerifierSampler` for policies
    without Euler steps: the same noise ``[*B, N, act]`` (drawn outside any compiled graph),
    the same pairing of each candidate with its own observation, the same selection
    (:func:`~sorl_torchrl.modules.verifier.select_best`), checks, compilation and tensordict
    interface. ``inference_steps`` is always 1.

    Args:
        actor: the policy that proposes candidates: any module with ``observation_dim``,
            ``action_dim`` and ``sample(observation, noise=...)`` that maps observations
            ``[*B, 1, obs]`` and noise ``[*B, N, act]`` to actions ``[*B, N, act]`` (FQL's
            one-step policy, IQL's Gaussian actor, ReBRAC's tanh actor). A policy with a
            ``temperature`` also takes ``sample(..., temperature=...)``.
        critic: the Q ensemble that scores the candidates (the algorithm's own critic).
        num_candidates: ``N``, candidates per observation (an integer >= 1). ``N = 1``
            skips the critic and is the policy's own action for the same noise.
        q_agg: ``"mean"`` or ``"min"`` over ensemble members.
        candidate_temperature: for a policy with a ``temperature``, the temperature of the
            ``N > 1`` candidates (default 1.0: its exploration noise; ``N = 1`` keeps the
            policy's own, 0 for the deterministic evaluation action). Policies without one
            (FQL's, fresh noise per candidate) ignore it.
        return_candidates: also write ``candidate_actions`` ``[*B, N, act]`` and
            ``candidate_scores`` ``[*B, N]``.
        in_keys: the observation key.
        out_keys: the action key, then (if ``return_candidates``) candidates and scores.
        compile: compile sampling, scoring and selection with ``torch.compile`` (see
            :meth:`compile_select`).

    Examples:
        >>> from tensordict import TensorDict
        >>> from sorl_torchrl.modules.baseline_actors import GaussianActor
        >>> actor = GaussianActor(3, 2, num_cells=(16,))
        >>> critic = QEnsemble(3, 2, num_cells=(16,), condition_on_steps=False)
        >>> policy = BestOfNSampler(actor, critic, num_candidates=8, q_agg="min",
        ...                         return_candidates=True)
        >>> out = policy(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))
        >>> out["action"].shape, out["candidate_actions"].shape, out["candidate_scores"].shape
        (torch.Size([4, 2]), torch.Size([4, 8, 2]), torch.Size([4, 8]))
        >>> bool(out["candidate_actions"].std(dim=1).min() > 0)  # temperature 1: distinct
        True
        >>> policy.inference_steps = 4
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: inference_steps must be 1 (GaussianActor ...
    """

    SETTINGS: ClassVar[Settings] = BEST_OF_N_SETTINGS

    def __init__(
        self,
        actor: nn.Module,
        critic: QEnsemble,
        num_candidates: int = 1,
        *,
        q_agg: QAggregation = "mean",
        candidate_temperature: float = 1.0,
        return_candidates: bool = False,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] | None = None,
        compile: bool | str = False,
    ) -> None:
        if not isinstance(critic, QEnsemble):
            raise TypeError(f"critic must be a QEnsemble, got {type(critic).__name__}.")
        missing = [
            name for name in ("observation_dim", "action_dim", "sample") if not hasattr(actor, name)
        ]
        if not isinstance(actor, nn.Module) or missing:
            raise TypeError(
                f"BestOfNSampler needs a policy module with observation_dim, action_dim and "
                f"sample(observation, noise=...); {type(actor).__name__} lacks "
                f"{', '.join(missing) or 'nn.Module'}."
            )
        if has_inference_steps(actor):
            raise TypeError(
                "A ShortcutActor scales with inference steps too: use VerifierSampler (or "
                "best_of_n, which picks the sampler a policy needs)."
            )
        settings = self.SETTINGS.check(
            {
                "num_candidates": num_candidates,
                "q_agg": q_agg,
                "candidate_temperature": candidate_temperature,
                "return_candidates": return_candidates,
                "compile": compile,
            }
        )
        super().__init__(actor, critic, settings, in_keys, out_keys)
        self.candidate_temperature = settings["candidate_temperature"]
        self.takes_temperature = hasattr(actor, "temperature")

    @property
    def inference_steps(self) -> int:
        """``k``: always 1 (the policy has no Euler steps; setting another value raises)."""
        return 1

    @inference_steps.setter
    def inference_steps(self, value: int) -> None:
        check_single_step(self.actor, value)

    def _steps_for_call(self, inference_steps: int | None) -> int:
        return 1 if inference_steps is None else check_single_step(self.actor, inference_steps)

    def _sample_candidates(
        self, observation: torch.Tensor, noise: torch.Tensor, n: int, k: int
    ) -> torch.Tensor:
        """The policy's samples for each candidate's noise (tempered when ``N > 1``)."""
        if self.takes_temperature and n > 1:
            return self.actor.sample(
                observation, noise=noise, temperature=self.candidate_temperature
            )
        return self.actor.sample(observation, noise=noise)


def best_of_n(
    actor: nn.Module,
    critic: QEnsemble,
    num_candidates: int = 1,
    inference_steps: int = 1,
    *,
    q_agg: QAggregation = "mean",
    compile: bool | str = False,
) -> VerifierSampler | BestOfNSampler:
    """The best-of-N sampler of ``actor`` with ``critic`` as verifier, for ``(k, N)``.

    A :class:`~sorl_torchrl.modules.verifier.VerifierSampler` for a shortcut actor (``k``
    Euler steps), else a :class:`BestOfNSampler` (``k`` must be 1).

    Raises:
        SettingError: ``k`` is not a power of two, or not 1 for a policy without steps;
            ``N < 1``; an unknown compile mode.

    Examples:
        >>> from sorl_torchrl.modules.one_step_policy import OneStepPolicy
        >>> critic = QEnsemble(3, 2, num_cells=(8,), condition_on_steps=False)
        >>> type(best_of_n(OneStepPolicy(3, 2, num_cells=(8,)), critic, 4)).__name__
        'BestOfNSampler'
        >>> type(best_of_n(ShortcutActor(3, 2, num_cells=(8,)), critic, 4, 2)).__name__
        'VerifierSampler'
    """
    if has_inference_steps(actor):
        return VerifierSampler(
            actor, critic, num_candidates, inference_steps, q_agg=q_agg, compile=compile
        )
    check_single_step(actor, inference_steps)
    return BestOfNSampler(actor, critic, num_candidates, q_agg=q_agg, compile=compile)


def plain_policy(actor: nn.Module, inference_steps: int = 1) -> TensorDictModuleBase:
    """The policy alone, without a verifier (``N = 1``), acting with ``k`` steps.

    A shortcut actor is wrapped in a new :class:`~sorl_torchrl.ShortcutActor` that shares its
    velocity network and has ``inference_steps`` as its default ``k``; any other policy is
    returned as it is (``k`` must be 1).

    Raises:
        SettingError: ``k`` is not a power of two, or not 1 for a policy without steps.

    Examples:
        >>> actor = ShortcutActor(3, 2, num_cells=(8,))
        >>> twin = plain_policy(actor, 4)
        >>> twin.inference_steps, twin.module.network is actor.module.network
        (4, True)
    """
    if not has_inference_steps(actor):
        check_single_step(actor, inference_steps)
        return actor
    return ShortcutActor(
        actor.observation_dim,
        actor.action_dim,
        network=actor.module.network,
        inference_steps=inference_steps,
        in_keys=actor.in_keys,
        out_keys=actor.out_keys,
    ).eval()


def sampling_policy(
    actor: nn.Module,
    critic: QEnsemble | None,
    inference_steps: int = 1,
    num_candidates: int = 1,
    *,
    q_agg: QAggregation = "mean",
    compile: bool | str = False,
) -> TensorDictModuleBase:
    """The TorchRL policy for ``(k, N)``: best-of-N with ``critic``, or the policy alone.

    With a critic: :func:`best_of_n` (a :class:`~sorl_torchrl.VerifierSampler` for a
    shortcut actor, else a :class:`BestOfNSampler`). Without one (a model trained without a
    critic, e.g. flow BC with ``network.num_critics: 0``) only ``N = 1`` exists: the policy
    itself with ``k`` steps (:func:`plain_policy`).

    Raises:
        SettingError: ``N > 1`` without a critic; ``k`` not a power of two, or not 1 for a
            policy without steps; ``N < 1``; an unknown compile mode.

    Examples:
        >>> actor = ShortcutActor(3, 2, num_cells=(8,))
        >>> type(sampling_policy(actor, None, 4)).__name__
        'ShortcutActor'
        >>> sampling_policy(actor, None, 4, num_candidates=8)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: num_candidates must be 1 (this model has no ...
    """
    if critic is not None:
        return best_of_n(
            actor, critic, num_candidates, inference_steps, q_agg=q_agg, compile=compile
        )
    if num_candidates != 1:
        raise SettingError(
            "num_candidates",
            num_candidates,
            "1 (this model has no critic to verify candidates with)",
            "Train it with a critic (network.num_critics >= 1) for best-of-N.",
        )
    return plain_policy(actor, inference_steps)
