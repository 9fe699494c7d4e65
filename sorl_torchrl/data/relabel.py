"""Singletask rewards for OGBench datasets, computed from the stored MuJoCo state.

OGBench's singletask datasets carry no rewards on disk: they are computed at load time
from the *current* state's ``qpos`` (and ``button_states``) against the task's targets.
A transition's success is the success of its state ``s``; its reward is
``#satisfied - #subgoals`` (manipulation) or ``success - 1`` (mazes), and its mask
``1 - success``. The targets come from the singletask env after a reset.

Examples:
    >>> import numpy as np
    >>> targets = TaskTargets(family="pointmaze", goal_xy=np.array([1.0, 2.0]), goal_tol=1.0)
    >>> qpos = np.array([[1.0, 2.5], [5.0, 5.0]], dtype=np.float32)
    >>> rewards, successes = singletask_rewards(targets, qpos)
    >>> rewards.tolist(), successes.tolist()
    ([0.0, -1.0], [True, False])
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["TaskTargets", "read_task_targets", "singletask_rewards"]

_QPOS_OBJECTS = 14  # first object coordinate in manipspace qpos (after the arm and gripper)
_QPOS_PER_CUBE = 7  # xyz + quaternion
_SUBGOAL_TOL = 0.04


@dataclasses.dataclass
class TaskTargets:
    """The targets of one singletask task.

    Attributes:
        family: ``"cube"``, ``"scene"``, ``"puzzle"`` or ``"pointmaze"``.
        cube_xyz: Target position of every cube, ``[num_cubes, 3]`` (cube, scene).
        button_states: Target button states (scene, puzzle).
        drawer_pos: Target drawer slide position (scene).
        window_pos: Target window slide position (scene).
        goal_xy: Goal position (mazes).
        goal_tol: Success radius around the goal (mazes).
    """

    family: str
    cube_xyz: np.ndarray | None = None
    button_states: np.ndarray | None = None
    drawer_pos: float | None = None
    window_pos: float | None = None
    goal_xy: np.ndarray | None = None
    goal_tol: float | None = None


def read_task_targets(env_id: str) -> TaskTargets:
    """Read the targets of an OGBench singletask env (makes the env and resets it once).

    Args:
        env_id: OGBench singletask env id, e.g. ``"cube-single-singletask-task2-v0"``.
    """
    import gymnasium
    import ogbench  # noqa: F401  (registers the envs)

    env = gymnasium.make(env_id)
    try:
        env.reset(seed=0)
        unwrapped = env.unwrapped
        if "maze" in env_id:
            return TaskTargets(
                family="pointmaze",
                goal_xy=np.asarray(unwrapped.cur_goal_xy, dtype=np.float64).copy(),
                goal_tol=float(unwrapped._goal_tol),
            )
        if env_id.startswith("puzzle"):
            return TaskTargets(
                family="puzzle", button_states=unwrapped._target_button_states.copy()
            )
        cube_xyz = unwrapped._data.mocap_pos[unwrapped._cube_target_mocap_ids].copy()
        if env_id.startswith("cube"):
            return TaskTargets(family="cube", cube_xyz=cube_xyz)
        return TaskTargets(
            family="scene",
            cube_xyz=cube_xyz,
            button_states=unwrapped._target_button_states.copy(),
            drawer_pos=float(unwrapped._target_drawer_pos),
            window_pos=float(unwrapped._target_window_pos),
        )
    finally:
        env.close()


def singletask_rewards(
    targets: TaskTargets, qpos: np.ndarray, button_states: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and successes of every row, from that row's own state.

    Args:
        targets: The task's targets.
        qpos: ``[rows, nq]`` MuJoCo positions of the rows.
        button_states: ``[rows, num_buttons]`` button states (scene, puzzle).

    Returns:
        ``(rewards float32 [rows], successes bool [rows])``.
    """
    if targets.family == "pointmaze":
        distance = np.linalg.norm(qpos[:, :2] - targets.goal_xy, axis=-1)
        success = distance <= targets.goal_tol
        return (success.astype(np.float32) - 1.0), success
    subgoals = []
    if targets.cube_xyz is not None:
        for i, target in enumerate(targets.cube_xyz):
            start = _QPOS_OBJECTS + i * _QPOS_PER_CUBE
            subgoals.append(
                np.linalg.norm(qpos[:, start : start + 3] - target, axis=-1) <= _SUBGOAL_TOL
            )
    if targets.button_states is not None:
        if button_states is None:
            raise ValueError(f"{targets.family} rewards need the 'button_states' key.")
        subgoals.extend((button_states == targets.button_states).T)
    if targets.family == "scene":
        num_cubes = len(targets.cube_xyz)
        drawer = _QPOS_OBJECTS + num_cubes * _QPOS_PER_CUBE + len(targets.button_states)
        subgoals.append(np.abs(qpos[:, drawer] - targets.drawer_pos) <= _SUBGOAL_TOL)
        subgoals.append(np.abs(qpos[:, drawer + 1] - targets.window_pos) <= _SUBGOAL_TOL)
    satisfied = np.stack(subgoals, axis=-1)
    rewards = (satisfied.sum(-1) - satisfied.shape[-1]).astype(np.float32)
    return rewards, satisfied.all(-1)
