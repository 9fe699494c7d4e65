"""Seeded evaluation of a TorchRL policy on an OGBench singletask env.

Examples:
    >>> from torchrl.envs.utils import RandomPolicy
    >>> env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", num_envs=2)
    >>> result = evaluate_policy(RandomPolicy(env.action_spec), env, num_episodes=2,
    ...                          max_episode_steps=20, seed=0)
    >>> result.num_episodes, result.episode_lengths, result.success_rate
    (2, [20, 20], 0.0)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from sorl_torchrl.envs.ogbench import SuccessTiming, make_ogbench_env

__all__ = ["EvaluationResult", "evaluate_policy"]

Policy = Callable[[TensorDictBase], TensorDictBase]


@dataclasses.dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate_policy`.

    Attributes:
        success_rate: Fraction of episodes that reached the goal.
        mean_return: Mean undiscounted episode return.
        episode_returns: Return of each episode.
        episode_lengths: Steps of each episode (it ends on success or at the horizon).
        successes: Whether each episode succeeded.
        env_steps: Env steps simulated, over all envs (including steps of envs that had
            already finished their episode while others were still running).
        wall_time_s: Wall time of the evaluation (env stepping and policy).
    """

    success_rate: float
    mean_return: float
    episode_returns: list[float]
    episode_lengths: list[int]
    successes: list[bool]
    env_steps: int
    wall_time_s: float

    @property
    def num_episodes(self) -> int:
        """Number of evaluated episodes."""
        return len(self.successes)

    @property
    def seconds_per_env_step(self) -> float:
        """Wall time per simulated env step (policy time included)."""
        return self.wall_time_s / max(self.env_steps, 1)

    @property
    def env_steps_per_second(self) -> float:
        """Simulated env steps per second of wall time."""
        return self.env_steps / max(self.wall_time_s, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        """All fields and derived figures, JSON-ready."""
        return {
            **dataclasses.asdict(self),
            "num_episodes": self.num_episodes,
            "seconds_per_env_step": self.seconds_per_env_step,
            "env_steps_per_second": self.env_steps_per_second,
        }


def evaluate_policy(
    policy: Policy,
    env: EnvBase | str,
    *,
    num_episodes: int = 10,
    seed: int = 0,
    num_envs: int = 1,
    parallel: bool = False,
    success_timing: SuccessTiming = "pre",
    max_episode_steps: int | None = None,
    exploration_type: ExplorationType = ExplorationType.DETERMINISTIC,
) -> EvaluationResult:
    """Run ``num_episodes`` seeded episodes of ``policy`` and summarise them.

    Episodes run in rounds of ``env.batch_size`` envs; each round is seeded with
    ``seed + round * num_envs`` (so the same seed gives the same episodes) and lasts until
    every env has finished its first episode (a finished env is reset and its further
    steps are ignored).

    Args:
        policy: Any TorchRL policy: reads ``"observation"``, writes ``"action"``.
        env: A TorchRL env (e.g. from :func:`make_ogbench_env`, batched or not) or an env id.
        num_episodes: Number of episodes.
        seed: Seed of the envs and of torch's RNG.
        num_envs: Batched envs to build when ``env`` is an id.
        parallel: Use a ParallelEnv when ``env`` is an id and ``num_envs > 1``.
        success_timing: Success timing when ``env`` is an id (``"pre"`` or ``"post"``).
        max_episode_steps: Episode cap (default: the env's horizon).
        exploration_type: Exploration mode of the policy during evaluation.

    Returns:
        Success rate, returns, lengths and timing.
    """
    owns_env = isinstance(env, str)
    if isinstance(env, str):
        env = make_ogbench_env(
            env, num_envs=num_envs, parallel=parallel, success_timing=success_timing
        )
    batch = env.batch_size.numel()
    horizon = max_episode_steps or getattr(env, "max_episode_steps", None)
    if horizon is None:
        raise ValueError("Pass max_episode_steps: the env has no max_episode_steps attribute.")
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool] = []
    env_steps = 0
    torch.manual_seed(seed)
    start = time.perf_counter()
    try:
        for round_index in range(math.ceil(num_episodes / batch)):
            env.set_seed(seed + round_index * batch)
            round_returns, round_lengths, round_successes, steps = _run_round(
                policy, env, horizon, exploration_type
            )
            keep = min(batch, num_episodes - len(returns))
            returns += round_returns[:keep]
            lengths += round_lengths[:keep]
            successes += round_successes[:keep]
            env_steps += steps
    finally:
        if owns_env:
            env.close()
    wall_time = time.perf_counter() - start
    return EvaluationResult(
        success_rate=sum(successes) / len(successes),
        mean_return=sum(returns) / len(returns),
        episode_returns=returns,
        episode_lengths=lengths,
        successes=successes,
        env_steps=env_steps,
        wall_time_s=wall_time,
    )


@torch.no_grad()
def _run_round(
    policy: Policy, env: EnvBase, horizon: int, exploration_type: ExplorationType
) -> tuple[list[float], list[int], list[bool], int]:
    """One episode per env; returns per-env return, length, success and steps simulated."""
    shape = env.batch_size
    episode_return = torch.zeros(shape)
    length = torch.zeros(shape, dtype=torch.long)
    success = torch.zeros(shape, dtype=torch.bool)
    finished = torch.zeros(shape, dtype=torch.bool)
    td = env.reset()
    steps = 0
    with set_exploration_type(exploration_type):
        for _ in range(horizon):
            td = policy(td)
            td, next_td = env.step_and_maybe_reset(td)
            steps += shape.numel()
            running = ~finished
            episode_return += td["next", "reward"].reshape(shape).cpu() * running
            length += running.long()
            success |= td["next", "success"].reshape(shape).cpu() & running
            finished |= td["next", "done"].reshape(shape).cpu()
            td = next_td
            if finished.all():
                break
    return (
        episode_return.reshape(-1).tolist(),
        length.reshape(-1).tolist(),
        success.reshape(-1).tolist(),
        steps,
    )
