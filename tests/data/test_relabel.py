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


def test_antsoccer_success_is_the_ball_within_half_a_unit_of_the_goal():
    targets = read_task_targets("antsoccer-arena-singletask-v0")  # default task 4
    assert targets.xy_qpos_index == 15 and targets.goal_tol == 0.5
    qpos = np.zeros((3, 22), dtype=np.float32)
    qpos[0, 15:17] = targets.goal_xy + [0.49, 0.0]  # ball in, ant far away
    qpos[1, :2] = targets.goal_xy  # ant on the goal, ball 0.51 away
    qpos[1, 15:17] = targets.goal_xy + [0.0, 0.51]
    qpos[2, 15:17] = targets.goal_xy + [0.3, 0.3]
    rewards, success = singletask_rewards(targets, qpos)
    assert success.tolist() == [True, False, True]
    assert rewards.tolist() == [0.0, -1.0, 0.0]


def test_humanoidmaze_success_is_the_agent_within_half_a_unit():
    targets = read_task_targets("humanoidmaze-medium-singletask-task2-v0")
    assert targets.xy_qpos_index == 0 and targets.goal_tol == 0.5
    qpos = np.zeros((2, 28), dtype=np.float32)
    qpos[0, :2] = targets.goal_xy + [0.0, 0.49]
    qpos[1, :2] = targets.goal_xy + [0.0, 0.51]
    assert singletask_rewards(targets, qpos)[1].tolist() == [True, False]
