"""A scripted expert for cube singletask envs, as a TorchRL policy.

:class:`CubeOraclePolicy` drives OGBench's closed-loop ``CubeMarkovOracle`` (the oracle of
the ``noisy`` datasets, without noise) from the env's privileged state: it picks the first
cube that is not at its target and moves it there. It is a reference point for evaluation
(a policy that should solve cube-single) and a check that the env wiring is right.

It reads the state of the wrapped MuJoCo env, so it works with a single, unbatched env
from :func:`~sorl_torchrl.envs.make_ogbench_env`.

Examples:
    >>> from sorl_torchrl.envs import evaluate_policy, make_ogbench_env
    >>> env = make_ogbench_env("cube-single-singletask-task1-v0")
    >>> result = evaluate_policy(CubeOraclePolicy(env), env, num_episodes=1, seed=0)
    >>> result.success_rate
    1.0
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase, GymWrapper

__all__ = ["CubeOraclePolicy"]


class CubeOraclePolicy(TensorDictModuleBase):
    """Scripted cube expert (OGBench's ``CubeMarkovOracle``) as a TorchRL policy.

    Args:
        env: An unbatched cube singletask env from ``make_ogbench_env``.
        min_norm: Minimum action norm of the oracle (OGBench's data collection uses 0.4).
        seed: Seed of the oracle's own draws (its final resting pose).
    """

    in_keys = ["observation"]
    out_keys = ["action"]

    def __init__(self, env: EnvBase, min_norm: float = 0.4, seed: int = 0) -> None:
        super().__init__()
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

        if not isinstance(env, GymWrapper):
            raise TypeError(
                "CubeOraclePolicy needs an unbatched env from make_ogbench_env(num_envs=1), "
                f"got {type(env).__name__}."
            )
        self._gym_env = env._env
        unwrapped = self._gym_env.unwrapped
        if not hasattr(unwrapped, "_cube_target_mocap_ids") or hasattr(unwrapped, "_num_buttons"):
            raise ValueError("CubeOraclePolicy only drives cube-* envs.")
        self._oracle = CubeMarkovOracle(env=self._gym_env, min_norm=min_norm)
        rng = np.random.default_rng(seed)
        self._oracle._done, self._oracle._step = False, 0
        self._oracle._final_pos = rng.uniform(*unwrapped._arm_sampling_bounds)
        self._oracle._final_yaw = rng.uniform(-np.pi, np.pi)

    def _privileged_info(self) -> dict:
        from ogbench.manipspace import lie

        unwrapped = self._gym_env.unwrapped
        info = unwrapped.compute_ob_info()
        targets = unwrapped._data.mocap_pos[unwrapped._cube_target_mocap_ids]
        quats = unwrapped._data.mocap_quat[unwrapped._cube_target_mocap_ids]
        cubes = [info[f"privileged/block_{i}_pos"] for i in range(len(targets))]
        unsolved = [i for i in range(len(targets)) if np.linalg.norm(cubes[i] - targets[i]) > 0.02]
        block = unsolved[0] if unsolved else 0
        info["privileged/target_block"] = block
        info["privileged/target_block_pos"] = targets[block].copy()
        info["privileged/target_block_yaw"] = np.array(
            [lie.SO3(wxyz=quats[block]).compute_yaw_radians()]
        )
        return info

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the oracle's action for the env's current state."""
        action = np.clip(self._oracle.select_action(None, self._privileged_info()), -1.0, 1.0)
        tensordict.set("action", torch.as_tensor(action, dtype=torch.float32))
        return tensordict
