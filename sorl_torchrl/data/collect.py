"""Collect single episodes with OGBench's scripted oracles, seeded per episode.

This is a seeded re-implementation of OGBench's ``data_gen_scripts/generate_manipspace.py``
and ``generate_locomaze.py`` (navigate, point agent). The oracles themselves are the ones
shipped in the ``ogbench`` package. Every random draw of an episode derives from
``(seed, episode_index)``, so an episode is the same whichever process collects it:

* our own draws (noise, random actions, p_stack, maze cells) use a ``numpy.random.Generator``;
* the env's ``np_random`` and action space are seeded through ``reset(seed=...)``;
* the oracles and the maze start noise draw from numpy's legacy global RNG, which is
  re-seeded at the start of every episode (collection runs in its own process or loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sorl_torchrl.data.specs import DatasetSpec

__all__ = ["EpisodeCollector", "episode_seeds"]

Episode = dict[str, np.ndarray]

# Health check of OGBench's scene generator: the cube must stay visible (not too far right,
# and not too far left unless it is in the drawer).
_SCENE_MAX_RETRIES = 100


def episode_seeds(
    seed: int, episode_index: int, attempt: int = 0
) -> tuple[int, int, np.random.Generator]:
    """Derive the env seed, the legacy-global-RNG seed and a Generator for one episode.

    Args:
        seed: Dataset seed.
        episode_index: Index of the episode in the dataset (train first, then validation).
        attempt: Retry number (scene episodes that fail OGBench's health check are re-collected).

    Returns:
        ``(env_seed, legacy_seed, generator)``.

    >>> a = episode_seeds(0, 3)
    >>> b = episode_seeds(0, 3)
    >>> a[:2] == b[:2], a[2].random() == b[2].random()
    (True, True)
    >>> episode_seeds(0, 3)[:2] != episode_seeds(0, 4)[:2]
    True
    """
    sequence = np.random.SeedSequence([seed, episode_index, attempt])
    env_seed, legacy_seed = (int(x) for x in sequence.generate_state(2))
    return env_seed, legacy_seed, np.random.default_rng(sequence.spawn(1)[0])


class EpisodeCollector:
    """Holds one collection env (and its oracles) and collects seeded episodes.

    Args:
        spec: The dataset to collect.
        episode_length: Rows per episode (default: the official length).

    Examples:
        >>> from sorl_torchrl.data.specs import get_dataset_spec
        >>> collector = EpisodeCollector(get_dataset_spec("pointmaze-medium-navigate-v0"), 20)
        >>> episode = collector.collect(seed=0, episode_index=0)
        >>> episode["observations"].shape, episode["terminals"].sum()
        ((20, 2), np.int64(1))
    """

    def __init__(self, spec: DatasetSpec, episode_length: int | None = None) -> None:
        import gymnasium
        import ogbench  # noqa: F401  (registers the envs)

        self.spec = spec
        self.episode_length = episode_length or spec.episode_length
        kwargs: dict[str, Any] = dict(
            terminate_at_goal=False, max_episode_steps=self.episode_length
        )
        if spec.family != "pointmaze":
            kwargs["mode"] = "data_collection"
        self.env = gymnasium.make(spec.env_name, **kwargs)
        self._collect: Callable[[int, int], Episode]
        if spec.family == "pointmaze":
            self._init_maze_cells()
            self._collect = self._collect_navigate
        else:
            self.agents = self._make_manipulation_oracles()
            self._collect = self._collect_manipulation

    def collect(self, seed: int, episode_index: int) -> Episode:
        """Collect episode ``episode_index`` of the dataset made with ``seed``."""
        return self._collect(seed, episode_index)

    def close(self) -> None:
        """Close the collection env."""
        self.env.close()

    # -- manipulation (cube, scene, puzzle) -------------------------------------------------

    def _make_manipulation_oracles(self) -> dict[str, Any]:
        from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
        from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
        from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        spec, env = self.spec, self.env
        if spec.oracle == "markov":
            markov = dict(env=env, min_norm=spec.min_norm)
            if spec.family == "cube":
                return {"cube": CubeMarkovOracle(**markov)}
            if spec.family == "scene":
                return {
                    "cube": CubeMarkovOracle(max_step=100, **markov),
                    "button": ButtonMarkovOracle(**markov),
                    "drawer": DrawerMarkovOracle(**markov),
                    "window": WindowMarkovOracle(**markov),
                }
            return {"button": ButtonMarkovOracle(gripper_always_closed=True, **markov)}
        plan = dict(env=env, noise=spec.noise, noise_smoothing=spec.noise_smoothing)
        if spec.family == "cube":
            return {"cube": CubePlanOracle(**plan)}
        if spec.family == "scene":
            return {
                "cube": CubePlanOracle(**plan),
                "button": ButtonPlanOracle(**plan),
                "drawer": DrawerPlanOracle(**plan),
                "window": WindowPlanOracle(**plan),
            }
        return {"button": ButtonPlanOracle(gripper_always_closed=True, **plan)}

    def _collect_manipulation(self, seed: int, episode_index: int) -> Episode:
        for attempt in range(_SCENE_MAX_RETRIES):
            episode = self._manipulation_attempt(seed, episode_index, attempt)
            if self.spec.family != "scene" or _scene_is_healthy(episode["qpos"]):
                return episode
        raise RuntimeError(
            f"Episode {episode_index} failed the scene health check {_SCENE_MAX_RETRIES} times."
        )

    def _manipulation_attempt(self, seed: int, episode_index: int, attempt: int) -> Episode:
        spec, env = self.spec, self.env
        env_seed, legacy_seed, rng = episode_seeds(seed, episode_index, attempt)
        np.random.seed(legacy_seed)  # the oracles draw from the legacy global RNG
        env.action_space.seed(env_seed)
        ob, info = env.reset(seed=env_seed)
        p_stack = rng.uniform(*spec.p_stack_range)
        xi = rng.uniform(0.0, spec.noise) if spec.oracle == "markov" else 0.0
        noise_scale = np.array([xi, xi, xi, 3 * xi, 10 * xi])
        agent = self.agents[info["privileged/target_task"]]
        agent.reset(ob, info)
        rows = _Rows(with_buttons=spec.button_dim is not None)
        done = False
        while not done:
            if rng.random() < spec.p_random_action:
                action = rng.uniform(-1.0, 1.0, size=spec.action_dim)
            else:
                action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                if spec.oracle == "markov":
                    action = action + rng.normal(0.0, noise_scale)
            action = np.clip(action, -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if agent.done:
                agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                agent = self.agents[agent_info["privileged/target_task"]]
                agent.reset(agent_ob, agent_info)
            rows.append(ob, action, done, info)
            ob = next_ob
        return rows.to_arrays()

    # -- pointmaze navigate -----------------------------------------------------------------

    def _init_maze_cells(self) -> None:
        maze_map = self.env.unwrapped.maze_map
        self.all_cells: list[tuple[int, int]] = []
        self.vertex_cells: list[tuple[int, int]] = []
        for i in range(maze_map.shape[0]):
            for j in range(maze_map.shape[1]):
                if maze_map[i, j] != 0:
                    continue
                self.all_cells.append((i, j))
                vertical_hallway = (
                    maze_map[i - 1, j] == 0
                    and maze_map[i + 1, j] == 0
                    and maze_map[i, j - 1] == 1
                    and maze_map[i, j + 1] == 1
                )
                horizontal_hallway = (
                    maze_map[i, j - 1] == 0
                    and maze_map[i, j + 1] == 0
                    and maze_map[i - 1, j] == 1
                    and maze_map[i + 1, j] == 1
                )
                if not (vertical_hallway or horizontal_hallway):
                    self.vertex_cells.append((i, j))

    def _collect_navigate(self, seed: int, episode_index: int) -> Episode:
        env, unwrapped = self.env, self.env.unwrapped
        env_seed, legacy_seed, rng = episode_seeds(seed, episode_index)
        np.random.seed(legacy_seed)  # the maze draws its start noise from the global RNG
        env.action_space.seed(env_seed)
        init_ij = self.all_cells[rng.integers(len(self.all_cells))]
        goal_ij = self.vertex_cells[rng.integers(len(self.vertex_cells))]
        options = dict(task_info=dict(init_ij=init_ij, goal_ij=goal_ij))
        ob, _ = env.reset(seed=env_seed, options=options)
        rows = _Rows(with_buttons=False)
        done = False
        while not done:
            xy = unwrapped.get_xy()
            subgoal_xy, _ = unwrapped.get_oracle_subgoal(xy, unwrapped.cur_goal_xy)
            direction = subgoal_xy - xy
            direction = direction / (np.linalg.norm(direction) + 1e-6)
            action = np.clip(direction + rng.normal(0.0, self.spec.noise, size=2), -1.0, 1.0)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            if info["success"]:
                unwrapped.set_goal(self.vertex_cells[rng.integers(len(self.vertex_cells))])
            rows.append(ob, action, done, info)
            ob = next_ob
        return rows.to_arrays()


class _Rows:
    """Accumulates the per-step rows of one episode in OGBench's on-disk layout."""

    def __init__(self, with_buttons: bool) -> None:
        self.with_buttons = with_buttons
        self.columns: dict[str, list[Any]] = {
            k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")
        }
        if with_buttons:
            self.columns["button_states"] = []

    def append(self, ob: np.ndarray, action: np.ndarray, done: bool, info: dict) -> None:
        self.columns["observations"].append(ob)
        self.columns["actions"].append(action)
        self.columns["terminals"].append(done)
        self.columns["qpos"].append(info["prev_qpos"])
        self.columns["qvel"].append(info["prev_qvel"])
        if self.with_buttons:
            self.columns["button_states"].append(info["prev_button_states"])

    def to_arrays(self) -> Episode:
        dtypes = {"terminals": bool, "button_states": np.int64}
        return {k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in self.columns.items()}


def _scene_is_healthy(qpos: np.ndarray) -> bool:
    block_xyz = qpos[:, 14:17]
    too_far_right = (block_xyz[:, 1] >= 0.29).any()
    outside_drawer = (block_xyz[:, 2] < 0.06) | (block_xyz[:, 2] > 0.08)
    too_far_left = ((block_xyz[:, 1] <= -0.3) & outside_drawer).any()
    return not (too_far_right or too_far_left)
