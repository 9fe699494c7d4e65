"""The TorchRL env factory for OGBench singletask tasks."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import RandomPolicy, check_env_specs

from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env
from sorl_torchrl.envs.ogbench import resolve_env_id


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
    "env_id, ogbench_id, horizon, obs_dim, act_dim",
    [
        ("antmaze-large-navigate-singletask-v0", "antmaze-large-singletask-v0", 1000, 29, 8),
        (
            "humanoidmaze-giant-singletask-task2-v0",
            "humanoidmaze-giant-singletask-task2-v0",
            4000,
            69,
            21,
        ),
        ("antsoccer-arena-navigate-singletask-v0", "antsoccer-arena-singletask-v0", 1000, 42, 8),
    ],
)
def test_expert_data_envs(env_id, ogbench_id, horizon, obs_dim, act_dim):
    # Envs of the load-only (expert-data) datasets step like the others and report success.
    assert resolve_env_id(env_id)[:2] == (ogbench_id, horizon)
    env = make_ogbench_env(env_id, seed=0)
    assert env.max_episode_steps == horizon
    td = env.rollout(3, RandomPolicy(env.action_spec))
    assert td["observation"].shape == (3, obs_dim) and td["action"].shape == (3, act_dim)
    assert td["next", "success"].dtype == torch.bool and not td["next", "success"].any()
    env.close()


def test_evaluate_antmaze_singletask():
    env = make_ogbench_env("antmaze-medium-navigate-singletask-task2-v0")
    result = evaluate_policy(
        RandomPolicy(env.action_spec), env, num_episodes=1, max_episode_steps=10, seed=0
    )
    assert result.episode_lengths == [10] and result.successes == [False]
    assert result.mean_return == -10.0
    env.close()


@pytest.mark.parametrize(
    "env_id, match",
    [
        ("cube-single-singletask-task7-v0", "Unknown task 7"),
        ("humanoidmaze-huge-singletask-v0", "Unknown dataset"),
        ("cube-single-v0", "not an OGBench singletask id"),
    ],
)
def test_bad_env_ids(env_id, match):
    with pytest.raises(ValueError, match=match):
        make_ogbench_env(env_id)


def test_bad_success_timing():
    with pytest.raises(ValueError, match="success_timing"):
        make_ogbench_env("cube-single-singletask-v0", success_timing="later")


def test_success_timing_defaults_to_post_and_is_carried_by_the_env():
    env = make_ogbench_env("cube-single-singletask-task1-v0")
    assert env.success_timing == "post"
    assert env._env.unwrapped._success_timing == "post"  # what OGBench itself uses
    env.close()
    batched = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", num_envs=2)
    assert batched.success_timing == "post"
    pre = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", success_timing="pre")
    assert pre.success_timing == "pre" and pre._env.unwrapped._success_timing == "pre"
    pre.close()


def test_envs_in_one_process_draw_their_own_start_noise():
    # OGBench's maze start noise comes from numpy's global RNG: two envs of one process,
    # seeded one after the other, must each start as a lone env with its seed does.
    def lone_start(seed):
        env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0")
        env.reset(seed=seed)
        obs = env.reset()["observation"]
        env.close()
        return obs

    a = make_ogbench_env("pointmaze-medium-navigate-singletask-v0")
    b = make_ogbench_env("pointmaze-medium-navigate-singletask-v0")
    a.reset(seed=1)
    b.reset(seed=2)
    torch.testing.assert_close(a.reset()["observation"], lone_start(1), rtol=0, atol=0)
    torch.testing.assert_close(b.reset()["observation"], lone_start(2), rtol=0, atol=0)
    assert not torch.equal(lone_start(1), lone_start(2))
