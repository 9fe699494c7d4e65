"""Seeded evaluation: a scripted expert solves cube-single, random actions do not."""

from __future__ import annotations

from torchrl.envs.utils import RandomPolicy

from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env

ENV_ID = "cube-single-play-singletask-v0"


def test_oracle_reaches_high_success_rate():
    env = make_ogbench_env(ENV_ID)
    result = evaluate_policy(CubeOraclePolicy(env), env, num_episodes=4, seed=0)
    env.close()
    assert result.success_rate >= 0.75
    # A successful episode ends early; its return is minus the steps before success.
    for success, length, ret in zip(
        result.successes, result.episode_lengths, result.episode_returns
    ):
        if success:
            assert length < 200 and ret == -(length - 1)
    assert result.env_steps == sum(result.episode_lengths)


def test_random_actions_do_not_succeed():
    env = make_ogbench_env(ENV_ID, num_envs=2)
    result = evaluate_policy(RandomPolicy(env.action_spec), env, num_episodes=3, seed=0)
    env.close()
    assert result.success_rate == 0.0
    assert result.episode_lengths == [200, 200, 200]
    assert result.mean_return == -200.0
    assert result.env_steps == 2 * 2 * 200  # two rounds of two envs
    assert result.seconds_per_env_step > 0


def test_same_seed_same_episodes():
    env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", num_envs=2)
    policy = RandomPolicy(env.action_spec)
    runs = [
        evaluate_policy(policy, env, num_episodes=2, seed=7, max_episode_steps=30) for _ in range(2)
    ]
    env.close()
    assert runs[0].episode_returns == runs[1].episode_returns


def test_env_id_string_builds_its_own_env():
    result = evaluate_policy(
        lambda td: td.set("action", td["observation"][..., :2].clamp(-1, 1) * 0),
        "pointmaze-medium-navigate-singletask-v0",
        num_episodes=1,
        max_episode_steps=10,
    )
    assert result.episode_lengths == [10] and result.success_rate == 0.0
