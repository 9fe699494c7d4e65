"""VerifierSampler: best-of-N per observation, correctly paired for any batch size."""

import pytest
import torch
from helpers import linear_actor, small_critic
from tensordict import TensorDict

from sorl_torchrl import QEnsemble, ShortcutActor, VerifierSampler

OBS, ACT = 3, 2


class KnownQ(QEnsemble):
    """Q(s, a) = -|a - goal(s)|^2 with goal(s) = tanh(s[:2]), identical in both members."""

    def __init__(self):
        super().__init__(OBS, ACT, num_cells=(4,), condition_on_steps=False)

    def values(self, observation, action, inference_steps=None):
        goal = torch.tanh(observation[..., :ACT])
        q = -((action - goal) ** 2).sum(-1, keepdim=True)
        return torch.stack([q, q])


@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("n", [2, 7])
def test_returns_argmax_candidate_for_every_row(batch, n):
    policy = VerifierSampler(
        linear_actor(OBS, ACT),
        KnownQ(),
        num_candidates=n,
        inference_steps=2,
        return_candidates=True,
    )
    obs = torch.randn(batch, OBS) * 2
    out = policy(TensorDict(observation=obs, batch_size=[batch]))
    cands = out["candidate_actions"]
    # brute force: score each candidate of each row against its own observation
    for row in range(batch):
        goal = torch.tanh(obs[row, :ACT])
        scores = -((cands[row] - goal) ** 2).sum(-1)
        torch.testing.assert_close(out["candidate_scores"][row], scores)
        torch.testing.assert_close(out["action"][row], cands[row, scores.argmax()])


def test_released_code_pairing_would_fail_this_check():
    """Sanity check of the test itself: the released code's pairing picks other actions."""
    batch, n = 6, 5
    obs = torch.randn(batch, OBS) * 2
    cands = torch.rand(n, batch, ACT) * 2 - 1  # released layout: [N, B, act]
    flat_obs = obs.repeat_interleave(n, 0)  # obs-major repeat
    flat_act = cands.reshape(-1, ACT)  # candidate-major flatten
    q = KnownQ().values(flat_obs, flat_act).mean(0).reshape(n, batch).T
    wrong = cands[q.argmax(1), torch.arange(batch)]
    goal = torch.tanh(obs[:, :ACT])
    right_scores = -((cands - goal) ** 2).sum(-1)  # [N, B], correctly paired
    right = cands[right_scores.argmax(0), torch.arange(batch)]
    assert not torch.allclose(wrong, right)


def test_single_candidate_equals_plain_sampling():
    actor = linear_actor(OBS, ACT)
    policy = VerifierSampler(actor, small_critic(OBS, ACT), num_candidates=1, inference_steps=4)
    obs = torch.randn(9, OBS)
    torch.manual_seed(11)
    got = policy(TensorDict(observation=obs, batch_size=[9]))["action"]
    torch.manual_seed(11)
    with torch.no_grad():
        expected = actor.sample(obs, 4)
    torch.testing.assert_close(got, expected)


def test_more_candidates_never_lower_the_best_score():
    policy = VerifierSampler(linear_actor(OBS, ACT), KnownQ(), inference_steps=1)
    obs = torch.randn(32, OBS)
    noise = torch.randn(32, 16, ACT)
    q = KnownQ()
    best = []
    for n in (1, 4, 16):
        action, _, _ = policy.select(obs, num_candidates=n, noise=noise[:, :n])
        best.append(q.values(obs, action).mean(0))
    assert (best[1] >= best[0]).all() and (best[2] >= best[1]).all()


def test_critic_scores_with_step_count():
    seen = []

    class RecordingQ(QEnsemble):
        def values(self, observation, action, inference_steps=None):
            seen.append(inference_steps)
            return super().values(observation, action, inference_steps)

    actor, critic = linear_actor(OBS, ACT), RecordingQ(OBS, ACT, num_cells=(8, 8))
    VerifierSampler(actor, critic, num_candidates=3, inference_steps=8).select(torch.randn(2, OBS))
    assert seen == [8.0]


def test_rollout_in_a_torchrl_env():
    from torchrl.envs import GymEnv

    env = GymEnv("Pendulum-v1")
    env.set_seed(0)
    obs_dim = env.observation_spec["observation"].shape[-1]
    act_dim = env.action_spec.shape[-1]
    actor = ShortcutActor(obs_dim, act_dim, num_cells=(16,))
    policy = VerifierSampler(
        actor, QEnsemble(obs_dim, act_dim, num_cells=(16,)), num_candidates=4, inference_steps=2
    )
    rollout = env.rollout(5, policy=policy)
    assert rollout["action"].shape == (5, act_dim)
    assert rollout["action"].abs().max() <= 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_candidates=0), "num_candidates"),
        (dict(inference_steps=3), "power of two"),
        (dict(q_agg="max"), "q_agg"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VerifierSampler(linear_actor(OBS, ACT), small_critic(OBS, ACT), **kwargs)


def test_bad_inputs():
    policy = VerifierSampler(linear_actor(OBS, ACT), small_critic(OBS, ACT), num_candidates=2)
    with pytest.raises(KeyError, match="observation"):
        policy(TensorDict(obs=torch.randn(2, OBS), batch_size=[2]))
    with pytest.raises(ValueError, match="non-finite"):
        policy(TensorDict(observation=torch.full((2, OBS), float("nan")), batch_size=[2]))
    with pytest.raises(ValueError, match=r"observation must have shape"):
        policy.select(torch.randn(2, OBS + 1))
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.select(torch.randn(2, OBS), noise=torch.randn(2, 3, ACT))
    with pytest.raises(ValueError, match="disagree"):
        VerifierSampler(linear_actor(OBS, ACT), small_critic(OBS + 1, ACT))


def _best_of_n_reference(actor, critic, obs, noise, k):
    """Row by row, candidate by candidate: Euler steps through the plain networks, then the
    mean of the members' Q on ``[s, a, k]``; the argmax candidate."""
    net = actor.module.network
    actions, scores = [], []
    for row in range(obs.shape[0]):
        s = obs[row : row + 1]
        row_scores, row_cands = [], []
        for c in range(noise.shape[1]):
            x = noise[row, c : c + 1]
            for i in range(k):
                t, d = torch.full((1, 1), i / k), torch.full((1, 1), float(k.bit_length() - 1))
                x = x + net(torch.cat([s, x, t, d], -1)) / k
            x = x.clamp(-1, 1)
            q = critic.network(torch.cat([s, x, torch.full((1, 1), float(k))], -1))
            row_scores.append(q.mean(0).squeeze())
            row_cands.append(x.squeeze(0))
        row_scores = torch.stack(row_scores)
        actions.append(row_cands[int(row_scores.argmax())])
        scores.append(row_scores)
    return torch.stack(actions), torch.stack(scores)


def test_compiled_select_matches_a_row_by_row_reference():
    torch.manual_seed(0)
    actor = ShortcutActor(OBS, ACT, num_cells=(16, 16))
    critic = QEnsemble(OBS, ACT, num_cells=(16, 16))
    policy = VerifierSampler(actor, critic, num_candidates=5, inference_steps=4, compile=True)
    obs, noise = torch.randn(3, OBS), torch.randn(3, 5, ACT)
    with torch.no_grad():
        expected_action, expected_scores = _best_of_n_reference(actor, critic, obs, noise, 4)
    for _ in range(2):  # the first call compiles, the second runs the cached graph
        action, _, scores = policy.select(obs, noise=noise)
        assert policy.is_compiled, "compilation fell back to eager"
        torch.testing.assert_close(scores, expected_scores, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(action, expected_action, rtol=1e-4, atol=1e-5)
    # the noise is drawn outside the graph: same seed, same actions as eagerly
    eager = VerifierSampler(actor, critic, num_candidates=5, inference_steps=4)
    torch.manual_seed(3)
    got = policy(TensorDict(observation=obs, batch_size=[3]))["action"]
    torch.manual_seed(3)
    torch.testing.assert_close(got, eager(TensorDict(observation=obs, batch_size=[3]))["action"])


def test_compiled_select_survives_copies_and_falls_back_to_eager():
    import copy

    policy = VerifierSampler(
        linear_actor(OBS, ACT), small_critic(OBS, ACT), num_candidates=3, compile=True
    )
    twin = copy.deepcopy(policy)
    assert twin.is_compiled and twin.compile_mode == "default"
    obs, noise = torch.randn(4, OBS), torch.randn(4, 3, ACT)
    eager = VerifierSampler(policy.actor, policy.critic, num_candidates=3)
    expected = eager.select(obs, noise=noise)

    def broken(*args):
        raise RuntimeError("backend exploded")

    policy._select._compiled = broken
    with pytest.warns(UserWarning, match="backend exploded.*eagerly"):
        got = policy.select(obs, noise=noise)
    assert not policy.is_compiled
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_unknown_compile_mode_raises():
    with pytest.raises(ValueError, match="torch.compile mode .*default.*got 'fastest'"):
        VerifierSampler(linear_actor(OBS, ACT), small_critic(OBS, ACT), compile="fastest")
