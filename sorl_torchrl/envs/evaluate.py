"""Seeded evaluation of a TorchRL policy on an OGBench singletask env, one env or several.

Episode ``i`` always gets the seed ``seed + i``, however many envs run side by side, so a
deterministic policy plays the same episodes with 1 env or 8 (see :func:`evaluate_policy`).

Examples:
    >>> from torchrl.envs.utils import RandomPolicy
    >>> env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", num_envs=2)
    >>> result = evaluate_policy(RandomPolicy(env.action_spec), env, num_episodes=2,
    ...                          max_episode_steps=20, seed=0)
    >>> result.num_episodes, result.episode_lengths, result.success_rate
    (2, [20, 20], 0.0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type
from torchrl.envs.batched_envs import BatchedEnvBase

from sorl_torchrl._validation import SEED, Number, Settings
from sorl_torchrl.envs.ogbench import SuccessTiming, make_ogbench_env

__all__ = [
    "EVALUATION_SETTINGS",
    "EvaluationResult",
    "env_attribute",
    "evaluate_policy",
    "evaluation_env",
]

Policy = Callable[[TensorDictBase], TensorDictBase]

#: The checks of :func:`evaluate_policy`'s counts and seed (the (k, N) grid uses them too).
EVALUATION_SETTINGS = Settings(
    "evaluate_policy",
    {
        "num_episodes": Number("[1, inf)", integer=True),
        "seed": SEED,
        "num_envs": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: 1, or the env's own"
        ),
        "max_episode_steps": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: the environment's horizon"
        ),
    },
)


@dataclasses.dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate_policy`.

    Attributes:
        success_rate: Fraction of episodes that reached the goal (``None`` for an env that
            reports no success, e.g. a gymnasium MuJoCo env: see ``mean_return``).
        mean_return: Mean undiscounted episode return.
        episode_returns: Return of each episode.
        episode_lengths: Steps of each episode (it ends on success or at the horizon).
        successes: Whether each episode succeeded.
        env_steps: Env steps simulated, over all envs (including steps of envs that had
            already finished their episode while others were still running).
        wall_time_s: Wall time of the evaluation (env stepping and policy).
    """

    success_rate: float | None
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


def env_attribute(env: EnvBase, name: str) -> Any:
    """An attribute that :func:`make_ogbench_env` sets on its env, or ``None`` without it.

    A batched env's workers are never asked (TorchRL would start them to look).

    Examples:
        >>> env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0")
        >>> env_attribute(env, "max_episode_steps"), env_attribute(env, "no_such_attribute")
        (1000, None)
    """
    if name in vars(env):
        return vars(env)[name]
    if isinstance(env, BatchedEnvBase):
        return None
    return getattr(env, name, None)


@contextlib.contextmanager
def evaluation_env(
    env: EnvBase | Callable[..., EnvBase], num_envs: int | None = None
) -> Iterator[EnvBase]:
    """The env to evaluate on: ``env`` itself, or one a factory builds (and closes after).

    Args:
        env: An env, used as it is and left open; or a factory, called once as
            ``env(num_envs=num_envs)`` to build one env of that batch size (unbatched for 1),
            e.g. ``functools.partial(make_ogbench_env, env_id, parallel=True)``. The env it
            built is closed on the way out, and torch's thread count is restored (a
            :class:`~torchrl.envs.ParallelEnv` changes it when it starts and when it closes).
        num_envs: Envs to run side by side. With a factory, how many it builds (None: 1);
            with an env, None or the env's batch size (a check).

    Yields:
        The env.

    Raises:
        SettingError: ``num_envs`` is not an integer >= 1.
        ValueError: ``num_envs`` differs from the given env's batch size, or the factory
            built another number of envs.
        TypeError: ``env`` is neither an env nor a callable.

    Examples:
        >>> import functools
        >>> factory = functools.partial(make_ogbench_env, "pointmaze-medium-navigate-singletask-v0")
        >>> with evaluation_env(factory, num_envs=2) as env:
        ...     print(env.reset()["observation"].shape, env.is_closed)
        torch.Size([2, 2]) False
        >>> env.is_closed
        True
    """
    num_envs = EVALUATION_SETTINGS["num_envs"](num_envs, "num_envs")
    if isinstance(env, EnvBase):
        if num_envs is not None and num_envs != env.batch_size.numel():
            raise ValueError(
                f"num_envs={num_envs}, but the env given has batch size {tuple(env.batch_size)}: "
                "pass num_envs=None to use the env as it is, or pass a factory "
                "(functools.partial(make_ogbench_env, env_id)) to build num_envs envs."
            )
        yield env
        return
    if not callable(env):
        raise TypeError(
            f"env must be a TorchRL env or a factory env(num_envs=n), got {type(env).__name__}."
        )
    threads = torch.get_num_threads()
    built = env(num_envs=num_envs or 1)
    try:
        if built.batch_size.numel() != (num_envs or 1):
            raise ValueError(
                f"The env factory was asked for num_envs={num_envs or 1} envs and built an env "
                f"of batch size {tuple(built.batch_size)}: it must honour its num_envs argument."
            )
        yield built
    finally:
        if not built.is_closed:  # a batched env that never started is closed already
            built.close()
        torch.set_num_threads(threads)


def evaluate_policy(
    policy: Policy,
    env: EnvBase | Callable[..., EnvBase] | str,
    *,
    num_episodes: int = 10,
    seed: int = 0,
    num_envs: int | None = None,
    parallel: bool = False,
    success_timing: SuccessTiming = "post",
    max_episode_steps: int | None = None,
    exploration_type: ExplorationType = ExplorationType.DETERMINISTIC,
    on_episodes: Callable[[int], object] | None = None,
) -> EvaluationResult:
    """Run ``num_episodes`` seeded episodes of ``policy`` and summarise them.

    Seeding: episode ``i`` (from 0) is seeded with ``seed + i`` whatever the number of envs.
    The envs play rounds of one episode each; at the start of a round every env is reset
    with its episode's seed and then reset again, and the episode starts from that second
    reset (what ``env.set_seed(seed + i)`` and ``env.reset()`` give on one env). A round
    lasts until every env has finished its episode (a finished env is reset and its further
    steps are ignored). torch's RNG is seeded with ``seed`` once, at the start, in a fork of
    the caller's stream (the CPU's and the policy's CUDA devices'): the caller's random state
    is the same after the call as before it.

    So a deterministic policy plays the same episodes with any ``num_envs``. A policy that
    draws noise from torch's RNG (:class:`~sorl_torchrl.modules.VerifierSampler`) draws it
    for the whole batch of envs at once: its episodes are reproducible for one
    ``(seed, num_envs)``, but another ``num_envs`` gives other noise, hence other episodes.
    A batched env other than a :class:`~torchrl.envs.SerialEnv` or
    :class:`~torchrl.envs.ParallelEnv` is seeded with ``env.set_seed(seed + i)`` for the
    round's first episode ``i`` (TorchRL's chained seeds): its episodes depend on its size.

    Args:
        policy: Any TorchRL policy: reads ``"observation"``, writes ``"action"``.
        env: A TorchRL env (e.g. from :func:`make_ogbench_env`, batched or not, left
            open), a factory ``env(num_envs=n)`` (see :func:`evaluation_env`) or an env id
            (both built here and closed after).
        num_episodes: Number of episodes.
        seed: Seed of the first episode (episode ``i`` gets ``seed + i``) and of torch's RNG.
        num_envs: Envs run side by side (a batch of ``num_envs`` per policy call) when
            ``env`` is a factory or an id (None: 1); with an env, None or its batch size.
        parallel: When ``env`` is an id and ``num_envs > 1``: a ParallelEnv (one process per
            env) instead of a SerialEnv (all in this process).
        success_timing: When ``env`` is an id: ``"post"`` (the default, ogbench 1.1 and the
            published numbers) or ``"pre"``; see :mod:`sorl_torchrl.envs.ogbench`.
        max_episode_steps: Episode cap (default: the env's horizon).
        exploration_type: Exploration mode of the policy during evaluation.
        on_episodes: Called after each round with the number of episodes it added (e.g. a
            progress bar's ``update``).

    Returns:
        Success rate, returns, lengths and timing.

    Raises:
        SettingError: ``num_episodes``, ``seed``, ``num_envs`` or ``max_episode_steps`` is
            out of range (:data:`EVALUATION_SETTINGS`; ``SettingsError``: several).
        ValueError: No ``max_episode_steps`` and the env has no horizon attribute.
    """
    checked = EVALUATION_SETTINGS.check(
        {
            "num_episodes": num_episodes,
            "seed": seed,
            "num_envs": num_envs,
            "max_episode_steps": max_episode_steps,
        }
    )
    if isinstance(env, str):
        env = functools.partial(
            make_ogbench_env, env, parallel=parallel, success_timing=success_timing
        )
    with evaluation_env(env, checked["num_envs"]) as built:
        horizon = checked["max_episode_steps"] or env_attribute(built, "max_episode_steps")
        if horizon is None:
            raise ValueError(
                "Pass max_episode_steps: the env has no max_episode_steps attribute "
                "(make_ogbench_env sets it)."
            )
        return _evaluate(
            policy,
            built,
            checked["num_episodes"],
            checked["seed"],
            horizon,
            exploration_type,
            on_episodes,
        )


def _evaluate(
    policy: Policy,
    env: EnvBase,
    num_episodes: int,
    seed: int,
    horizon: int,
    exploration_type: ExplorationType,
    on_episodes: Callable[[int], object] | None,
) -> EvaluationResult:
    """:func:`evaluate_policy` on a built env with checked arguments."""
    batch = env.batch_size.numel()
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool] = []
    env_steps = 0
    start = time.perf_counter()
    # The caller's random stream is left as it was: an evaluation in the middle of training
    # must not reset the sampler's and the update's noise to the evaluation seed.
    with torch.random.fork_rng(devices=cuda_devices(policy)):
        torch.manual_seed(seed)
        for first in range(0, num_episodes, batch):
            _seed_envs(env, range(seed + first, seed + first + batch))
            round_returns, round_lengths, round_successes, steps = _run_round(
                policy, env, horizon, exploration_type
            )
            keep = min(batch, num_episodes - first)
            returns += round_returns[:keep]
            lengths += round_lengths[:keep]
            successes += round_successes[:keep]
            env_steps += steps
            if on_episodes is not None:
                on_episodes(keep)
    wall_time = time.perf_counter() - start
    reported = success_reported(env)
    return EvaluationResult(
        success_rate=sum(successes) / len(successes) if reported else None,
        mean_return=sum(returns) / len(returns),
        episode_returns=returns,
        episode_lengths=lengths,
        successes=successes,
        env_steps=env_steps,
        wall_time_s=wall_time,
    )


def cuda_devices(policy: Policy) -> list[int]:
    """The CUDA devices of a policy's parameters (whose random streams a fork must cover)."""
    if not isinstance(policy, torch.nn.Module):
        return []
    return sorted({p.device.index or 0 for p in policy.parameters() if p.device.type == "cuda"})


def success_reported(env: EnvBase) -> bool:
    """Whether ``env``'s steps carry a ``success`` entry (OGBench's do; gymnasium MuJoCo's not)."""
    keys = env.full_observation_spec.keys(True) if hasattr(env, "full_observation_spec") else ()
    return "success" in keys or ("next", "success") in keys


def _seed_envs(env: EnvBase, seeds: Sequence[int]) -> None:
    """Reset each env of ``env`` with its own seed (see :func:`evaluate_policy`)."""
    if not env.batch_size:
        env.reset(seed=seeds[0])
    elif isinstance(env, BatchedEnvBase):
        env.reset(list_of_kwargs=[{"seed": seed} for seed in seeds])
    else:
        env.set_seed(seeds[0])


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
    reports_success = None
    with set_exploration_type(exploration_type):
        for _ in range(horizon):
            td = policy(td)
            td, next_td = env.step_and_maybe_reset(td)
            steps += shape.numel()
            running = ~finished
            episode_return += td["next", "reward"].reshape(shape).cpu() * running
            length += running.long()
            if reports_success is None:  # gymnasium MuJoCo envs, e.g., report no success
                reports_success = ("next", "success") in td.keys(include_nested=True)
            if reports_success:
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
