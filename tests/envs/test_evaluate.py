"""Seeded evaluation: a scripted expert solves cube-single, random actions do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrl.envs.utils import RandomPolicy

from sorl_torchrl._validation import SettingError
from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env

ENV_ID = "cube-single-play-singletask-v0"
THREADS = torch.get_num_threads()


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


# ------------------------------------------------------------------- seeds and num_envs

MAZE = "pointmaze-medium-navigate-singletask-task1-v0"  # start (0, 0), goal (20, 20)


def _greedy(goal):
    """Deterministic: full speed towards the goal (pointmaze observations are x, y)."""
    return lambda td: td.set("action", ((goal - td["observation"]) * 2).clamp(-1, 1))


def _maze_goal():
    env = make_ogbench_env(MAZE)
    env.reset(seed=0)
    goal = torch.tensor(env._env.unwrapped.cur_goal_xy, dtype=torch.float32)
    env.close()
    return goal


def _by_hand(policy, seed, num_episodes, horizon):
    """Episode i on a fresh env: set_seed(seed + i), reset, then step until done.

    Returns each episode's length and success.
    """
    lengths, successes = [], []
    for i in range(num_episodes):
        env = make_ogbench_env(MAZE)
        env.set_seed(seed + i)
        td, length, success = env.reset(), 0, False
        while length < horizon and not success:
            td = env.step(policy(td))["next"]
            length += 1
            success = bool(td["success"].item())
            if td["done"].item():
                break
        lengths.append(length)
        successes.append(success)
        env.close()
    return lengths, successes


def test_episode_i_gets_seed_plus_i_whatever_num_envs():
    # The greedy policy reaches the goal in 121-128 steps depending on the start noise (drawn
    # from numpy's global RNG at reset), so a 123-step cap gives mixed successes.
    policy, seed, episodes, horizon = _greedy(_maze_goal()), 11, 6, 123
    lengths, successes = _by_hand(policy, seed, episodes, horizon)
    assert len(set(lengths)) > 1 and len(set(successes)) == 2  # a test that can fail
    results = {
        (num_envs, parallel): evaluate_policy(
            policy,
            MAZE,
            num_envs=num_envs,
            parallel=parallel,
            num_episodes=episodes,
            seed=seed,
            max_episode_steps=horizon,
        )
        for num_envs, parallel in [(1, False), (4, False), (2, True)]
    }
    for result in results.values():
        assert result.episode_lengths == lengths
        assert result.successes == successes


def test_evaluation_leaves_numpy_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    evaluate_policy(_greedy(_maze_goal()), MAZE, num_episodes=2, num_envs=2, max_episode_steps=5)
    assert (np.random.get_state()[1] == before).all()


def test_evaluation_leaves_torchs_random_stream_alone():
    # a policy that draws noise from torch's RNG; the caller's next draw is what it was
    env = make_ogbench_env(ENV_ID)
    noisy = RandomPolicy(env.action_spec)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    evaluate_policy(noisy, env, num_episodes=1, seed=5, max_episode_steps=3)
    assert torch.equal(torch.rand(3), expected)


def test_episodes_seeds_seed_each_reset_and_refuse_batched_envs():
    from torchrl.envs import TransformedEnv

    from sorl_torchrl.envs import EpisodeSeeds

    def starts(first_episode, resets):
        env = TransformedEnv(make_ogbench_env(ENV_ID), EpisodeSeeds(11, first_episode))
        return [env.reset()["observation"] for _ in range(resets)]

    run = starts(0, 3)
    # episode i starts where env.set_seed(11 + i); env.reset() starts, as evaluations do
    for i, start in enumerate(run):
        plain = make_ogbench_env(ENV_ID)
        plain.set_seed(11 + i)
        assert torch.equal(plain.reset()["observation"], start)
    assert torch.equal(starts(2, 1)[0], run[2])  # a restored count continues there
    batched = TransformedEnv(make_ogbench_env(ENV_ID, num_envs=2), EpisodeSeeds(0))
    with pytest.raises(RuntimeError, match="one env"):
        batched.reset()


def test_a_factory_is_built_with_num_envs_closed_after_and_threads_restored():
    built = []

    def factory(num_envs):
        built.append(make_ogbench_env(MAZE, num_envs=num_envs, parallel=True))
        return built[-1]

    torch.set_num_threads(1)  # a ParallelEnv would leave 1 + its workers (capped by the cores)
    try:
        result = evaluate_policy(
            _greedy(_maze_goal()), factory, num_envs=2, num_episodes=3, max_episode_steps=4
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(THREADS)
    assert len(built) == 1 and built[0].batch_size == (2,) and built[0].is_closed
    assert result.episode_lengths == [4, 4, 4]
    assert result.env_steps == 2 * 2 * 4  # two rounds of two envs


def test_a_given_env_is_left_open():
    env = make_ogbench_env(MAZE, num_envs=2)
    evaluate_policy(_greedy(_maze_goal()), env, num_episodes=2, max_episode_steps=3)
    assert not env.is_closed
    env.close()


def test_bad_num_envs_and_factories_are_named():
    env = make_ogbench_env(MAZE)
    policy = _greedy(_maze_goal())
    with pytest.raises(ValueError, match=r"num_envs=3, but the env given has batch size \(\)"):
        evaluate_policy(policy, env, num_envs=3, max_episode_steps=2)
    env.close()
    with pytest.raises(SettingError, match="num_envs must be None or an integer >= 1 .*got 0"):
        evaluate_policy(policy, MAZE, num_envs=0, max_episode_steps=2)
    with pytest.raises(ValueError, match="must honour its num_envs argument"):
        evaluate_policy(policy, lambda num_envs: make_ogbench_env(MAZE), num_envs=2)
    with pytest.raises(SettingError, match="num_episodes must be an integer >= 1, got 0"):
        evaluate_policy(policy, MAZE, num_episodes=0)
    with pytest.raises(TypeError, match="env must be a TorchRL env or a factory"):
        evaluate_policy(policy, 3)
