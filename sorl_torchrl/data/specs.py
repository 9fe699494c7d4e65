"""Registry of the OGBench datasets and singletask environments this package knows.

One :class:`DatasetSpec` per dataset, carrying the official generation settings (from
OGBench's ``data_gen_scripts/commands.sh``), the on-disk array shapes, the default
singletask task and the evaluation horizon. Every dataset can be downloaded from the
OGBench server (``sorl-data download``); most can also be regenerated locally with the
scripted oracles shipped in the ``ogbench`` package. The antmaze, humanoidmaze and antsoccer
datasets were collected by trained expert policies that are not distributed, so their specs
are *download only* (``spec.load_only``): the official files can be downloaded, verified and
loaded, but not generated. ``spec.obtain`` says which ways a dataset has.

Examples:
    >>> spec = get_dataset_spec("cube-single-play-v0")
    >>> spec.env_name, spec.num_episodes, spec.episode_length, spec.observation_dim
    ('cube-single-v0', 1000, 1001, 28)
    >>> parse_singletask_id("cube-single-play-singletask-task3-v0")
    SingletaskId(dataset_name='cube-single-play-v0',
                 env_id='cube-single-singletask-task3-v0', task=3)
    >>> parse_singletask_id("pointmaze-medium-navigate-singletask-v0").task
    1
    >>> spec = get_dataset_spec("antsoccer-arena-navigate-v0")
    >>> spec.load_only, spec.obtain, spec.observation_dim, spec.action_dim, spec.default_task
    (True, ('download',), 42, 8, 4)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Literal, NamedTuple

__all__ = [
    "DATASETS",
    "EXPERT_FAMILIES",
    "DatasetSpec",
    "SingletaskId",
    "get_dataset_spec",
    "parse_singletask_id",
    "parse_env_id",
    "list_datasets",
]

Family = Literal["cube", "scene", "puzzle", "pointmaze", "antmaze", "humanoidmaze", "antsoccer"]

EXPERT_FAMILIES: tuple[str, ...] = ("antmaze", "humanoidmaze", "antsoccer")
"""Families whose official data was collected by trained expert policies (download only)."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to generate, check and load one OGBench dataset.

    Attributes:
        name: Dataset name, e.g. ``"cube-single-play-v0"`` (files ``<name>.npz`` and
            ``<name>-val.npz``).
        env_name: Goal-conditioned OGBench env used to collect the data.
        family: ``"cube"``, ``"scene"``, ``"puzzle"``, ``"pointmaze"``, ``"antmaze"``,
            ``"humanoidmaze"`` or ``"antsoccer"``.
        dataset_type: ``"play"``, ``"noisy"``, ``"navigate"``, ``"stitch"`` or ``"explore"``.
        num_episodes: Official number of training episodes (validation adds 10 %).
        episode_length: Rows per episode on disk (the collection env's time limit).
        observation_dim: Observation size.
        action_dim: Action size.
        qpos_dim: MuJoCo ``qpos`` size.
        qvel_dim: MuJoCo ``qvel`` size.
        button_dim: ``button_states`` size (scene, puzzle), else ``None``.
        default_task: Task used by ``<...>-singletask-v0`` (no ``-taskN`` suffix).
        horizon: Evaluation episode length of the singletask env.
        noise: Oracle noise (play: plan noise; noisy: upper bound of the per-episode xi;
            navigate: action noise of the maze oracle or expert).
        noise_smoothing: Temporal smoothing of the plan oracle's noise (play only).
        min_norm: Minimum action norm of the Markov oracles (noisy only).
        p_random_action: Probability of a uniformly random action (noisy only).
        p_stack_range: Per-episode range of the cube stacking probability.
        load_only: The data was collected by a trained expert policy that is not
            distributed: the official files can be downloaded, verified and loaded, not
            generated (*download only*).
    """

    name: str
    env_name: str
    family: Family
    dataset_type: str
    num_episodes: int
    episode_length: int
    observation_dim: int
    action_dim: int
    qpos_dim: int
    qvel_dim: int
    button_dim: int | None
    default_task: int
    horizon: int
    noise: float
    noise_smoothing: float = 0.0
    min_norm: float = 0.0
    p_random_action: float = 0.0
    p_stack_range: tuple[float, float] = (0.0, 0.0)
    load_only: bool = False

    @property
    def env_prefix(self) -> str:
        """The env name without version, e.g. ``"cube-single"``."""
        return self.env_name[: -len("-v0")]

    @property
    def obtain(self) -> tuple[str, ...]:
        """The ways to get its files here: ``("generate", "download")`` or ``("download",)``.

        >>> get_dataset_spec("scene-play-v0").obtain
        ('generate', 'download')
        """
        return ("download",) if self.load_only else ("generate", "download")

    @property
    def oracle(self) -> str:
        """The data collector: ``"plan"``, ``"markov"``, ``"maze-subgoal"`` or ``"expert"``."""
        if self.load_only:
            return "expert"
        if self.family == "pointmaze":
            return "maze-subgoal"
        return "plan" if self.dataset_type == "play" else "markov"

    def singletask_env_id(self, task: int | None = None) -> str:
        """The OGBench singletask env id for ``task`` (``None``: the default task).

        >>> get_dataset_spec("scene-play-v0").singletask_env_id(4)
        'scene-singletask-task4-v0'
        """
        suffix = "" if task is None else f"-task{task}"
        return f"{self.env_prefix}-singletask{suffix}-v0"

    def generation_settings(self) -> dict:
        """The oracle settings recorded in the provenance file."""
        keys = ["oracle", "noise", "noise_smoothing", "min_norm", "p_random_action"]
        settings = {k: getattr(self, k) for k in keys}
        settings["p_stack_range"] = list(self.p_stack_range)
        settings["env_name"] = self.env_name
        return settings


_CUBE_DIMS = {  # name: (obs, qpos, qvel)
    "single": (28, 21, 20),
    "double": (37, 28, 26),
    "triple": (46, 35, 32),
    "quadruple": (55, 42, 38),
}
_CUBE_EPISODES = {"single": 1000, "double": 1000, "triple": 3000, "quadruple": 5000}
_CUBE_P_STACK = {
    "single": (0.0, 0.0),
    "double": (0.0, 0.25),
    "triple": (0.05, 0.35),
    "quadruple": (0.1, 0.5),
}
_CUBE_HORIZON = {"single": 200, "double": 500, "triple": 1000, "quadruple": 1000}
_PUZZLE_DIMS = {  # size: (obs, qpos=qvel, buttons, episodes, horizon)
    "3x3": (55, 23, 9, 1000, 500),
    "4x4": (83, 30, 16, 1000, 500),
    "4x5": (99, 34, 20, 3000, 1000),
    "4x6": (115, 38, 24, 5000, 1000),
}
_MAZES = {"medium": (1000, 1001), "large": (1000, 1001), "giant": (500, 2001)}
# Expert-data families (download only). Dims measured on the ogbench envs; episode counts and
# lengths from OGBench's data_gen_scripts/commands.sh; horizons from the singletask env
# registrations (ogbench/locomaze/__init__.py); default tasks from ogbench/locomaze/maze.py.
_EXPERT_DIMS = {  # family: (obs, act, qpos, qvel, default task)
    "antmaze": (29, 8, 15, 14, 1),
    "humanoidmaze": (69, 21, 28, 27, 1),
    "antsoccer": (42, 8, 22, 20, 4),
}
_EXPERT_DATASETS = [  # (family, env, type, episodes, rows per episode, horizon)
    *[("antmaze", m, "navigate", 1000, 1001, 1000) for m in ("medium", "large", "teleport")],
    ("antmaze", "giant", "navigate", 500, 2001, 1000),
    *[("antmaze", m, "stitch", 5000, 201, 1000) for m in ("medium", "large", "giant", "teleport")],
    *[("antmaze", m, "explore", 10000, 501, 1000) for m in ("medium", "large", "teleport")],
    *[("humanoidmaze", m, "navigate", 1000, 2001, 2000) for m in ("medium", "large")],
    ("humanoidmaze", "giant", "navigate", 1000, 4001, 4000),
    *[("humanoidmaze", m, "stitch", 5000, 401, 2000) for m in ("medium", "large")],
    ("humanoidmaze", "giant", "stitch", 10000, 401, 4000),
    ("antsoccer", "arena", "navigate", 1000, 1001, 1000),
    ("antsoccer", "medium", "navigate", 4000, 1001, 1000),
    ("antsoccer", "arena", "stitch", 5000, 201, 1000),
    ("antsoccer", "medium", "stitch", 8000, 501, 1000),
]
_PLAY = dict(noise=0.1, noise_smoothing=0.5)
_NOISY = dict(noise=0.1, min_norm=0.4)


def _build_registry() -> dict[str, DatasetSpec]:
    specs: list[DatasetSpec] = []
    for size, (obs, qpos, qvel) in _CUBE_DIMS.items():
        for dtype, extra in [("play", _PLAY), ("noisy", dict(_NOISY, p_random_action=0.1))]:
            specs.append(
                DatasetSpec(
                    name=f"cube-{size}-{dtype}-v0",
                    env_name=f"cube-{size}-v0",
                    family="cube",
                    dataset_type=dtype,
                    num_episodes=_CUBE_EPISODES[size],
                    episode_length=1001,
                    observation_dim=obs,
                    action_dim=5,
                    qpos_dim=qpos,
                    qvel_dim=qvel,
                    button_dim=None,
                    default_task=2,
                    horizon=_CUBE_HORIZON[size],
                    p_stack_range=_CUBE_P_STACK[size],
                    **extra,
                )
            )
    for dtype, extra in [("play", _PLAY), ("noisy", dict(_NOISY, p_random_action=0.1))]:
        specs.append(
            DatasetSpec(
                name=f"scene-{dtype}-v0",
                env_name="scene-v0",
                family="scene",
                dataset_type=dtype,
                num_episodes=1000,
                episode_length=1001,
                observation_dim=40,
                action_dim=5,
                qpos_dim=25,
                qvel_dim=24,
                button_dim=2,
                default_task=2,
                horizon=750,
                p_stack_range=(0.5, 0.5),
                **extra,
            )
        )
    for size, (obs, q, buttons, episodes, horizon) in _PUZZLE_DIMS.items():
        for dtype, extra in [("play", _PLAY), ("noisy", dict(_NOISY, p_random_action=0.2))]:
            specs.append(
                DatasetSpec(
                    name=f"puzzle-{size}-{dtype}-v0",
                    env_name=f"puzzle-{size}-v0",
                    family="puzzle",
                    dataset_type=dtype,
                    num_episodes=episodes,
                    episode_length=1001,
                    observation_dim=obs,
                    action_dim=5,
                    qpos_dim=q,
                    qvel_dim=q,
                    button_dim=buttons,
                    default_task=4,
                    horizon=horizon,
                    **extra,
                )
            )
    for maze, (episodes, length) in _MAZES.items():
        specs.append(
            DatasetSpec(
                name=f"pointmaze-{maze}-navigate-v0",
                env_name=f"pointmaze-{maze}-v0",
                family="pointmaze",
                dataset_type="navigate",
                num_episodes=episodes,
                episode_length=length,
                observation_dim=2,
                action_dim=2,
                qpos_dim=2,
                qvel_dim=2,
                button_dim=None,
                default_task=1,
                horizon=1000,
                noise=0.5,
            )
        )
    for family, env, dtype, episodes, length, horizon in _EXPERT_DATASETS:
        obs, act, qpos, qvel, task = _EXPERT_DIMS[family]
        specs.append(
            DatasetSpec(
                name=f"{family}-{env}-{dtype}-v0",
                env_name=f"{family}-{env}-v0",
                family=family,  # type: ignore[arg-type]
                dataset_type=dtype,
                num_episodes=episodes,
                episode_length=length,
                observation_dim=obs,
                action_dim=act,
                qpos_dim=qpos,
                qvel_dim=qvel,
                button_dim=None,
                default_task=task,
                horizon=horizon,
                noise=1.0 if dtype == "explore" else 0.2,
                load_only=True,
            )
        )
    return {spec.name: spec for spec in specs}


DATASETS: dict[str, DatasetSpec] = _build_registry()
"""All known datasets, by name (generatable and download only)."""


def list_datasets(*, load_only: bool = False) -> list[str]:
    """Names of the datasets that can be generated locally, sorted.

    Every dataset can also be downloaded (``sorl-data download``).

    Args:
        load_only: List the download-only datasets instead (collected by a trained expert:
            the official files can be downloaded, not generated).

    >>> "puzzle-3x3-noisy-v0" in list_datasets()
    True
    >>> list_datasets(load_only=True)[:3]
    ['antmaze-giant-navigate-v0', 'antmaze-giant-stitch-v0', 'antmaze-large-explore-v0']
    """
    return sorted(name for name, spec in DATASETS.items() if spec.load_only == load_only)


def _unknown(kind: str, name: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"Unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(choices))}.")


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name (``"<env>-<type>-v0"``; a ``-val`` suffix is accepted).

    Raises:
        ValueError: For an unknown name; the message lists the known ones.

    >>> get_dataset_spec("puzzle-4x4-noisy-v0-val").p_random_action
    0.2
    """
    base = name[: -len("-val")] if name.endswith("-val") else name
    try:
        return DATASETS[base]
    except KeyError:
        raise _unknown("dataset", base, list(DATASETS)) from None


class SingletaskId(NamedTuple):
    """A parsed singletask id: its dataset file, its OGBench env id and its task number."""

    dataset_name: str
    env_id: str
    task: int


_SINGLETASK = re.compile(r"^(?P<prefix>.+)-singletask(?:-task(?P<task>\d+))?-(?P<version>v\d+)$")


def parse_singletask_id(singletask_id: str) -> SingletaskId:
    """Split ``"<env>-<type>-singletask[-taskN]-v0"`` into dataset, env id and task.

    The naming is OGBench's: the dataset file drops ``singletask[-taskN]``, the env id
    drops the dataset type.

    Raises:
        ValueError: If the id is not a singletask id, the dataset is unknown, or the task
            number is outside 1-5.
    """
    match = _SINGLETASK.match(singletask_id)
    if match is None:
        examples = (
            "'cube-single-play-singletask-task2-v0', 'pointmaze-medium-navigate-singletask-v0'"
        )
        raise ValueError(
            f"{singletask_id!r} is not an OGBench singletask id "
            f"('<env>-<type>-singletask[-taskN]-v0', e.g. {examples})."
        )
    dataset_name = f"{match['prefix']}-{match['version']}"
    spec = get_dataset_spec(dataset_name)
    task = spec.default_task if match["task"] is None else int(match["task"])
    if not 1 <= task <= 5:
        raise ValueError(f"Unknown task {task} in {singletask_id!r}: OGBench tasks are 1-5.")
    env_id = spec.singletask_env_id(None if match["task"] is None else task)
    return SingletaskId(dataset_name, env_id, task)


def parse_env_id(env_id: str) -> tuple[str, DatasetSpec, int]:
    """Resolve a singletask env id, with or without the dataset type, to what runs it.

    Accepts OGBench env ids (``"cube-single-singletask-task2-v0"``) as well as the
    dataset-style ids used for training (``"cube-single-play-singletask-task2-v0"``).

    Returns:
        The OGBench env id, a spec of that env family (shapes, horizon) and the task.

    >>> env, spec, task = parse_env_id("puzzle-3x3-singletask-v0")
    >>> env, spec.horizon, task
    ('puzzle-3x3-singletask-v0', 500, 4)
    >>> parse_env_id("cube-single-play-singletask-task5-v0")[0]
    'cube-single-singletask-task5-v0'
    """
    match = _SINGLETASK.match(env_id)
    if match is not None:
        for spec in DATASETS.values():
            if spec.env_prefix == match["prefix"]:
                task = spec.default_task if match["task"] is None else int(match["task"])
                if not 1 <= task <= 5:
                    raise ValueError(f"Unknown task {task} in {env_id!r}: OGBench tasks are 1-5.")
                return env_id, spec, task
    parsed = parse_singletask_id(env_id)
    return parsed.env_id, get_dataset_spec(parsed.dataset_name), parsed.task
