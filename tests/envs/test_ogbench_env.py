"""The TorchRL env factory for OGBench singletask tasks."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import RandomPolicy, check_env_specs

from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env


def test_specs_dtypes_and_success_key():
    env = make_ogbench_env("cube-single-play-singletask-v0", seed=0)
    check_env_specs(env)
    td = env.rollout(5)
    assert td["observation"].dtype == torch.float32 and td["observation"].shape == (5, 28)
    assert td["next", "success"].shape == (5, 1) and td["next", "success"].dtype == torch.bool
    env.close()


def test_random_episode_is_truncated_at_ogbench_horizon():
    env = make_ogbench_env("cube-single-singletask-task3-v0", seed=0)
    assert env.max_episode_steps == 200
    td = env.rollout(250, RandomPolicy(env.action_spec), break_when_any_done=True)
    assert td.shape == (200,)
    assert td["next", "truncated"][-1].item() and not td["next", "terminated"][-1].item()
    env.close()


@pytest.mark.parametrize("parallel", [False, True])
def test_batched_envs(parallel):
    env = make_ogbench_env(
        "pointmaze-medium-navigate-singletask-v0", num_envs=2, parallel=parallel, seed=0
    )
    td = env.rollout(4)
    assert td.batch_size == (2, 4) and td["next", "success"].shape == (2, 4, 1)
    env.close()


def test_seeded_resets_are_reproducible():
    def first_obs(seed):
        env = make_ogbench_env("pointmaze-large-navigate-singletask-v0", seed=seed)
        obs = env.reset()["observation"]
        env.close()
        return obs

    torch.testing.assert_close(first_obs(3), first_obs(3))
    assert not torch.equal(first_obs(3), first_obs(4))


def test_success_timing_pre_ends_one_step_after_post():
    # 'post' flags success on the state reached by the action, 'pre' on the state it starts
    # from, so the same (seeded, deterministic) oracle episode lasts one step longer with 'pre'.
    lengths = {}
    for timing in ("pre", "post"):
        env = make_ogbench_env("cube-single-singletask-task1-v0", success_timing=timing)
        result = evaluate_policy(CubeOraclePolicy(env), env, num_episodes=1, seed=5)
        assert result.successes == [True]
        lengths[timing] = result.episode_lengths[0]
        env.close()
    assert lengths["pre"] == lengths["post"] + 1


@pytest.mark.parametrize(
    "env_id, match",
    [
        ("cube-single-singletask-task7-v0", "Unknown task 7"),
        ("humanoidmaze-giant-singletask-v0", "Unknown dataset"),
        ("cube-single-v0", "not an OGBench singletask id"),
    ],
)
def test_bad_env_ids(env_id, match):
    with pytest.raises(ValueError, match=match):
        make_ogbench_env(env_id)


def test_bad_success_timing():
    with pytest.raises(ValueError, match="success_timing"):
        make_ogbench_env("cube-single-singletask-v0", success_timing="later")
