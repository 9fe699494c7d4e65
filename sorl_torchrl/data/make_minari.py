"""Record a local Minari dataset with Minari's own ``DataCollector`` on a gymnasium env.

    python -m sorl_torchrl.data.make_minari --env InvertedPendulum-v5 --episodes 50 --root DIR

(policy ``linear``, noise 1.5, seed 0 by default) writes
``<root>/sorl/invertedpendulum/linear-v0`` (the default id; ``--dataset-id`` names
another), which trains with ``sorl-train data.dataset=minari:sorl/invertedpendulum/linear-v0
data.root=<root>``. ``<root>`` defaults to ``MINARI_DATASETS_PATH``, else Minari's
``~/.minari/datasets``. Nothing is downloaded.

Policies: ``random`` samples the action space uniformly; ``linear`` is a stabilising linear
state feedback ``a = K s`` plus Gaussian noise of std ``--noise`` (in the env's action units),
clipped to the action bounds. For ``InvertedPendulum-v5`` (actions in ``[-3, 3]``, at most
1000 steps, reward 1 per step until the pole falls), noise 1.5 gives episodes of about 75 to
850 steps (median about 350), rarely the full 1000: data of mixed quality that offline RL can
improve on (the noise-free controller balances for the full 1000 steps). Episode ``i`` is
reset with seed ``seed + i`` (Minari records it).

Recording needs Minari's ``create`` (jax) and ``hdf5`` (h5py) extras.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from pathlib import Path

import gymnasium
import numpy as np

from sorl_torchrl.data.minari_local import minari_datasets_path, minari_root

__all__ = ["LINEAR_GAINS", "POLICIES", "MinariRecording", "default_dataset_id", "main", "record"]

POLICIES = ("random", "linear")

#: ``K`` of the ``linear`` policy per env: ``a = K @ s`` (InvertedPendulum's state is cart
#: position, pole angle, cart velocity, pole angular velocity).
LINEAR_GAINS: dict[str, tuple[float, ...]] = {"InvertedPendulum-v5": (0.5, 10.0, 1.0, 2.0)}


@dataclasses.dataclass(frozen=True)
class MinariRecording:
    """What :func:`record` wrote.

    Attributes:
        dataset_id: The Minari id.
        root: The Minari datasets dir it is in (``data.root`` of the recipes).
        path: The dataset dir.
        episodes: Episodes recorded.
        steps: Transitions recorded.
        mean_return: Mean undiscounted episode return.
        wall_time_s: Time taken.
    """

    dataset_id: str
    root: Path
    path: Path
    episodes: int
    steps: int
    mean_return: float
    wall_time_s: float


def default_dataset_id(env_id: str, policy: str) -> str:
    """``sorl/<env name, lower case>/<policy>-v0``.

    Examples:
        >>> default_dataset_id("InvertedPendulum-v5", "linear")
        'sorl/invertedpendulum/linear-v0'
    """
    name = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    return f"sorl/{name}/{policy}-v0"


def _policy(policy: str, env: gymnasium.Env, env_id: str, noise: float, seed: int):
    """The action function ``obs -> action``."""
    space = env.action_space
    if not isinstance(space, gymnasium.spaces.Box):
        raise ValueError(f"{env_id} has a {type(space).__name__} action space; a Box is needed.")
    if policy == "random":
        space.seed(seed)
        return lambda obs: space.sample()
    if policy != "linear":
        raise ValueError(f"Unknown policy {policy!r}; choose one of {', '.join(POLICIES)}.")
    if env_id not in LINEAR_GAINS:
        raise ValueError(
            f"The linear policy has gains for {', '.join(LINEAR_GAINS)} only, not {env_id}; "
            "use --policy random for other envs."
        )
    gains = np.asarray(LINEAR_GAINS[env_id])
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        action = gains @ obs + noise * rng.standard_normal(space.shape)
        return np.clip(action, space.low, space.high).astype(space.dtype)

    return act


def record(
    env_id: str = "InvertedPendulum-v5",
    *,
    dataset_id: str | None = None,
    episodes: int = 50,
    policy: str = "linear",
    noise: float = 1.5,
    seed: int = 0,
    max_episode_steps: int | None = None,
    root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> MinariRecording:
    """Record ``episodes`` episodes of ``policy`` in ``env_id`` as a local Minari dataset.

    Args:
        env_id: Gymnasium env id (a Box action space).
        dataset_id: Minari id (default: :func:`default_dataset_id`).
        episodes: Episodes to record.
        policy: ``"random"`` or ``"linear"`` (see the module docstring).
        noise: Std of the ``linear`` policy's Gaussian action noise.
        seed: Seed of the resets and of the policy's noise.
        max_episode_steps: Time limit of the episodes (default: the env's); it is also the
            time limit of the evaluation env the dataset records.
        root: Minari datasets dir (default: ``MINARI_DATASETS_PATH``, else Minari's).
        overwrite: Replace an existing dataset of that id.

    Raises:
        FileExistsError: The dataset exists and ``overwrite`` is false.
        ValueError: Bad policy, env or count.

    Examples:
        >>> import tempfile
        >>> done = record(episodes=2, policy="random", root=tempfile.mkdtemp())
        >>> done.dataset_id, done.episodes, (done.path / "data" / "main_data.hdf5").is_file()
        ('sorl/invertedpendulum/random-v0', 2, True)
    """
    import minari

    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    dataset_id = dataset_id or default_dataset_id(env_id, policy)
    base = minari_root(root)
    start = time.perf_counter()
    with minari_datasets_path(base):
        if (base / dataset_id).exists():
            if not overwrite:
                raise FileExistsError(
                    f"The Minari dataset {dataset_id!r} already exists in {base}: pass "
                    "--overwrite to replace it, or choose another --dataset-id."
                )
            minari.delete_dataset(dataset_id)
        limit = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
        gym_env = gymnasium.make(env_id, **limit)
        collector = minari.DataCollector(gym_env)
        try:
            act = _policy(policy, collector, env_id, noise, seed)
            returns, steps = [], 0
            for episode in range(episodes):
                obs, _ = collector.reset(seed=seed + episode)
                total, finished = 0.0, False
                while not finished:
                    obs, reward, terminated, truncated, _ = collector.step(act(obs))
                    total += float(reward)
                    steps += 1
                    finished = terminated or truncated
                returns.append(total)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is set to None.*")
                collector.create_dataset(
                    dataset_id,
                    eval_env=gym_env.spec,
                    algorithm_name=_describe_policy(policy, noise),
                    author="sorl-torchrl",
                    description=(
                        f"{episodes} episodes of {_describe_policy(policy, noise)} in {env_id}, "
                        f"reset seeds {seed}..{seed + episodes - 1}."
                    ),
                )
        finally:
            collector.close()
    return MinariRecording(
        dataset_id=dataset_id,
        root=base,
        path=base / dataset_id,
        episodes=episodes,
        steps=steps,
        mean_return=float(np.mean(returns)),
        wall_time_s=time.perf_counter() - start,
    )


def _describe_policy(policy: str, noise: float) -> str:
    if policy == "linear":
        return f"linear state feedback + Gaussian noise (std {noise})"
    return "uniform random actions"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m sorl_torchrl.data.make_minari --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m sorl_torchrl.data.make_minari",
        description="Record a local Minari dataset with minari.DataCollector (no download).",
    )
    parser.add_argument("--env", default="InvertedPendulum-v5", help="gymnasium env id")
    parser.add_argument(
        "--dataset-id", default=None, help="Minari id (default: sorl/<env>/<policy>-v0)"
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--policy", choices=POLICIES, default="linear")
    parser.add_argument("--noise", type=float, default=1.5, help="action noise std (linear)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-episode-steps", type=int, default=None, help="time limit (default: the env's)"
    )
    parser.add_argument(
        "--root", default=None, help="Minari datasets dir (default: MINARI_DATASETS_PATH)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    args = parser.parse_args(argv)
    try:
        done = record(
            args.env,
            dataset_id=args.dataset_id,
            episodes=args.episodes,
            policy=args.policy,
            noise=args.noise,
            seed=args.seed,
            max_episode_steps=args.max_episode_steps,
            root=args.root,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(
        f"Recorded {done.episodes} episodes ({done.steps} transitions, mean return "
        f"{done.mean_return:.1f}) in {done.wall_time_s:.1f} s: {done.path}\n"
        f"Train on it: sorl-train data.dataset=minari:{done.dataset_id} "
        f"data.root={done.root}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
