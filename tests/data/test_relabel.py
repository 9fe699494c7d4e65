"""Singletask rewards checked by hand on constructed states."""

from __future__ import annotations

import numpy as np

from sorl_torchrl.data.relabel import TaskTargets, read_task_targets, singletask_rewards


def _cube_qpos(cube_xyz: list[list[float]]) -> np.ndarray:
    qpos = np.zeros((1, 14 + 7 * len(cube_xyz)), dtype=np.float32)
    for i, xyz in enumerate(cube_xyz):
        qpos[0, 14 + 7 * i : 14 + 7 * i + 3] = xyz
    return qpos


def test_cube_success_within_4cm_of_each_target():
    targets = TaskTargets(family="cube", cube_xyz=np.array([[0.4, 0.1, 0.02], [0.5, -0.1, 0.02]]))
    both = _cube_qpos([[0.4, 0.1 + 0.03, 0.02], [0.5, -0.1, 0.02]])
    one = _cube_qpos([[0.4, 0.1 + 0.05, 0.02], [0.5, -0.1, 0.02]])
    none = _cube_qpos([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rewards, success = singletask_rewards(targets, np.concatenate([both, one, none]))
    assert rewards.tolist() == [0.0, -1.0, -2.0]
    assert success.tolist() == [True, False, False]


def test_puzzle_reward_counts_matching_buttons():
    targets = TaskTargets(family="puzzle", button_states=np.array([1, 0, 1]))
    buttons = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 0]])
    rewards, success = singletask_rewards(targets, np.zeros((3, 17)), buttons)
    assert rewards.tolist() == [0.0, -1.0, -3.0]
    assert success.tolist() == [True, False, False]


def test_cube_single_task_targets_come_from_the_task_definition():
    # OGBench's cube-single task1 moves the cube to goal_xyzs of its task_infos[0].
    import gymnasium
    import ogbench  # noqa: F401

    targets = read_task_targets("cube-single-singletask-task1-v0")
    env = gymnasium.make("cube-single-singletask-task1-v0")
    np.testing.assert_allclose(targets.cube_xyz, env.unwrapped.task_infos[0]["goal_xyzs"])
    env.close()
