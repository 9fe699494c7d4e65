"""Checks and official-format files shared by the data tests (imported, never a conftest)."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import ogbench  # noqa: F401  (registers the OGBench envs)

from sorl_torchrl.data.specs import DatasetSpec

#: The replay buffer clips dataset actions to this bound, as OGBench's agents do.
CLIP = 1.0 - 1e-5


def assert_ted_matches_ogbench(td, ref: dict) -> None:
    """A TED batch of a whole split equals OGBench's own loader output ``ref`` field by field."""
    np.testing.assert_array_equal(td["observation"].numpy(), ref["observations"])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), ref["next_observations"])
    np.testing.assert_array_equal(td["action"].numpy(), np.clip(ref["actions"], -CLIP, CLIP))
    np.testing.assert_array_equal(td["next", "reward"].squeeze(-1).numpy(), ref["rewards"])
    np.testing.assert_array_equal(td["next", "terminated"].squeeze(-1).numpy(), 1.0 - ref["masks"])
    np.testing.assert_array_equal(td["next", "done"].squeeze(-1).numpy(), ref["terminals"])


def _rollout(env: gymnasium.Env, spec: DatasetSpec, index: int, length: int) -> dict:
    """One episode of random actions, recorded as OGBench's collection script does.

    Odd episodes start on the default task's goal (agent, or ball for antsoccer), so the
    relabelled data holds successes as well as failures.
    """
    np.random.seed(index)  # maze start noise
    env.action_space.seed(index)
    ob, _ = env.reset(seed=index, options=dict(task_id=spec.default_task))
    unwrapped = env.unwrapped
    if index % 2 == 1:
        goal = np.asarray(unwrapped.ij_to_xy(unwrapped.cur_task_info["goal_ij"]))  # noise-free
        if spec.family == "antsoccer":
            unwrapped.set_agent_ball_xy(goal + 1.0, goal)
        else:
            unwrapped.set_xy(goal)
        ob = unwrapped.get_ob()
    rows: dict[str, list] = {
        k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")
    }
    for _ in range(length):
        action = env.action_space.sample()
        next_ob, _, terminated, truncated, info = env.step(action)
        rows["observations"].append(ob)
        rows["actions"].append(action)
        rows["terminals"].append(terminated or truncated)
        rows["qpos"].append(info["prev_qpos"])
        rows["qvel"].append(info["prev_qvel"])
        ob = next_ob
    return rows


def write_official_format(spec: DatasetSpec, root: Path, episodes: int, length: int) -> None:
    """Write ``<name>.npz`` (``episodes``) and ``<name>-val.npz`` (one episode) to ``root``."""
    env = gymnasium.make(spec.env_name, terminate_at_goal=False, max_episode_steps=length)
    for path, indices in [
        (root / f"{spec.name}.npz", range(episodes)),
        (root / f"{spec.name}-val.npz", range(episodes, episodes + 1)),
    ]:
        columns: dict[str, list] = {}
        for index in indices:
            for key, values in _rollout(env, spec, index, length).items():
                columns.setdefault(key, []).extend(values)
        np.savez_compressed(
            path,
            observations=np.asarray(columns["observations"], dtype=np.float32),
            actions=np.asarray(columns["actions"], dtype=np.float32),
            terminals=np.asarray(columns["terminals"], dtype=bool),
            qpos=np.asarray(columns["qpos"], dtype=np.float32),
            qvel=np.asarray(columns["qvel"], dtype=np.float32),
        )
    env.close()
