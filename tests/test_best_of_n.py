"""BestOfNSampler and select_best: best-of-N with a critic for any sampling policy."""

import copy

import pytest
import torch
from helpers import linear_actor, small_critic
from tensordict import TensorDict

from sorl_torchrl import BestOfNSampler, QEnsemble, ShortcutActor, VerifierSampler
from sorl_torchrl._validation import SettingError
from sorl_torchrl.modules import GaussianActor, OneStepPolicy, TanhActor, select_best
from sorl_torchrl.modules.best_of_n import best_of_n, plain_policy, sampling_policy

OBS, ACT = 3, 2


class KnownQ(QEnsemble):
    """Member 0: -|a - tanh(s[:2])|^2; member 1: member 0 minus 3 |a_0| (min and mean differ)."""

    def __init__(self):
        super().__init__(OBS, ACT, num_cells=(4,), condition_on_steps=False)

    def values(self, observation, action, inference_steps=None):
        goal = torch.tanh(observation[..., :ACT])
        q = -((action - goal) ** 2).sum(-1, keepdim=True)
        return torch.stack([q, q - 3 * action[..., :1].abs()])


def hand_scores(observation, candidates, how):
    """Each candidate of each row scored against its own row, by a Python loop."""
    rows = []
    for i in range(observation.shape[0]):
        goal = torch.tanh(observation[i, :ACT])
        row = []
        for a in candidates[i]:
            first = -((a - goal) ** 2).sum()
            second = first - 3 * a[0].abs()
            row.append(torch.minimum(first, second) if how == "min" else (first + second) / 2)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def policies():
    torch.manual_seed(3)
    return {
        "fql": OneStepPolicy(OBS, ACT, num_cells=(16,)),
        "iql": GaussianActor(OBS, ACT, num_cells=(16,), mean_head_scale=30.0),
        "rebrac": TanhActor(OBS, ACT, num_cells=(16,), mean_head_scale=30.0),
    }


def hand_candidates(name, actor, observation, noise):
    """The candidates each policy's own equations give (temperature 1 for IQL and ReBRAC)."""
    with torch.no_grad():
        if name == "fql":
            s = observation.unsqueeze(1).expand(-1, noise.shape[1], -1)
            return actor.module.network(torch.cat([s, noise], -1)).clamp(-1, 1)
        mean = actor.module.network(observation).unsqueeze(1)
        if name == "iql":
            return (mean + noise).clamp(-1, 1)
        return (torch.tanh(mean) + (0.2 * noise).clamp(-0.5, 0.5)).clamp(-1, 1)


@pytest.mark.parametrize("how", ["mean", "min"])
def test_select_best_keeps_the_argmax_of_each_rows_own_scores(how):
    observation = torch.randn(6, OBS) * 2
    candidates = torch.rand(6, 5, ACT) * 2 - 1
    action, scores = select_best(KnownQ(), observation, candidates, how)
    expected = hand_scores(observation, candidates, how)
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(action, candidates[torch.arange(6), expected.argmax(1)])


def test_min_and_mean_aggregation_pick_different_candidates():
    """Sanity check of the fixture: the two members disagree enough to change the pick."""
    observation = torch.zeros(1, OBS)
    candidates = torch.tensor([[[0.0, 0.8], [0.3, 0.0]]])  # Q = (-0.64, -0.64), (-0.09, -0.99)
    picks = [select_best(KnownQ(), observation, candidates, how)[0] for how in ("mean", "min")]
    assert not torch.equal(*picks)


@pytest.mark.parametrize("name", ["fql", "iql", "rebrac"])
@pytest.mark.parametrize("how", ["mean", "min"])
def test_sampler_picks_the_best_of_the_policys_own_candidates(name, how):
    actor = policies()[name]
    sampler = BestOfNSampler(actor, KnownQ(), 7, q_agg=how, return_candidates=True)
    observation, noise = torch.randn(5, OBS) * 2, torch.randn(5, 7, ACT)
    action, candidates, scores = sampler.select(observation, noise=noise)
    expected = hand_candidates(name, actor, observation, noise)
    torch.testing.assert_close(candidates, expected)
    best = hand_scores(observation, expected, how).argmax(1)
    torch.testing.assert_close(action, expected[torch.arange(5), best])
    spread = (candidates - candidates[:, :1]).abs().amax(dim=(1, 2))
    assert (spread > 0).all()  # distinct candidates in every row: the verifier has a choice


@pytest.mark.parametrize("name", ["fql", "iql", "rebrac"])
def test_one_candidate_is_the_policys_own_evaluation_action(name):
    actor = policies()[name]
    sampler, observation = BestOfNSampler(actor, KnownQ(), 1), torch.randn(4, OBS)
    torch.manual_seed(11)
    got = sampler(TensorDict(observation=observation, batch_size=[4]))
    torch.manual_seed(11)
    with torch.no_grad():
        expected = actor(TensorDict(observation=observation, batch_size=[4]))["action"]
    torch.testing.assert_close(got["action"], expected)
    if name != "fql":  # IQL and ReBRAC evaluate deterministically: the mean, tanh(mean)
        mean = actor.module.network(observation).detach()
        mode = mean.clamp(-1, 1) if name == "iql" else torch.tanh(mean)
        torch.testing.assert_close(got["action"], mode)


def test_candidate_temperature_scales_the_noise():
    actor = policies()["iql"]
    observation, noise = torch.randn(2, OBS), torch.randn(2, 3, ACT)
    sampler = BestOfNSampler(actor, KnownQ(), 3, candidate_temperature=0.5, return_candidates=True)
    _, candidates, _ = sampler.select(observation, noise=noise)
    mean = actor.module.network(observation).detach().unsqueeze(1)
    torch.testing.assert_close(candidates, (mean + 0.5 * noise).clamp(-1, 1))


def test_more_candidates_never_lower_the_best_score():
    sampler = BestOfNSampler(policies()["fql"], KnownQ(), q_agg="min")
    observation, noise = torch.randn(16, OBS), torch.randn(16, 8, ACT)
    best = []
    for n in (1, 4, 8):
        action, _, _ = sampler.select(observation, num_candidates=n, noise=noise[:, :n])
        best.append(KnownQ().values(observation, action).amin(0))
    assert (best[1] >= best[0]).all() and (best[2] >= best[1]).all()


@pytest.mark.parametrize("name", ["fql", "iql", "rebrac"])
def test_a_step_count_other_than_one_is_refused_clearly(name):
    actor = policies()[name]
    sampler = BestOfNSampler(actor, KnownQ(), 2)
    message = rf"inference_steps must be 1 \({type(actor).__name__} computes an action in one"
    with pytest.raises(SettingError, match=message):
        sampler.inference_steps = 2
    with pytest.raises(SettingError, match=message):
        sampler.select(torch.randn(2, OBS), inference_steps=4)
    with pytest.raises(SettingError, match=message):
        best_of_n(actor, KnownQ(), 4, 8)
    with pytest.raises(SettingError, match=message):
        plain_policy(actor, 2)
    sampler.inference_steps = 1  # the one value allowed
    assert sampler.inference_steps == 1


def test_bad_arguments_and_inputs():
    with pytest.raises(TypeError, match="use VerifierSampler"):
        BestOfNSampler(linear_actor(OBS, ACT), small_critic(OBS, ACT))
    with pytest.raises(TypeError, match="Linear lacks observation_dim, action_dim, sample"):
        BestOfNSampler(torch.nn.Linear(OBS, ACT), small_critic(OBS, ACT))
    with pytest.raises(ValueError, match="disagree"):
        BestOfNSampler(policies()["fql"], small_critic(OBS + 1, ACT))
    with pytest.raises(SettingError, match="num_candidates must be an integer >= 1"):
        BestOfNSampler(policies()["fql"], KnownQ(), 0)
    sampler = BestOfNSampler(policies()["iql"], KnownQ(), 2)
    with pytest.raises(KeyError, match="BestOfNSampler needs the key 'observation'"):
        sampler(TensorDict(obs=torch.randn(2, OBS), batch_size=[2]))
    with pytest.raises(ValueError, match="noise must have shape"):
        sampler.select(torch.randn(2, OBS), noise=torch.randn(2, 3, ACT))


def test_sampling_policy_picks_the_sampler_or_the_policy_alone():
    shortcut, critic = linear_actor(OBS, ACT), small_critic(OBS, ACT)
    verifier = sampling_policy(shortcut, critic, 4, 8, q_agg="min")
    assert isinstance(verifier, VerifierSampler)
    assert (verifier.inference_steps, verifier.num_candidates, verifier.q_agg) == (4, 8, "min")
    one_step = sampling_policy(policies()["fql"], KnownQ(), 1, 8)
    assert isinstance(one_step, BestOfNSampler) and one_step.num_candidates == 8
    alone = sampling_policy(shortcut, None, 2)
    assert isinstance(alone, ShortcutActor) and alone.inference_steps == 2
    assert alone.module.network is shortcut.module.network
    assert sampling_policy(policies()["iql"], None) is not None
    with pytest.raises(SettingError, match="no critic to verify candidates with"):
        sampling_policy(shortcut, None, 2, 4)


def test_copies_and_batch_shapes():
    sampler = BestOfNSampler(policies()["rebrac"], KnownQ(), 4)
    twin = copy.deepcopy(sampler)
    observation, noise = torch.randn(3, 2, OBS), torch.randn(3, 2, 4, ACT)
    action, candidates, scores = twin.select(observation, noise=noise)
    assert action.shape == (3, 2, ACT) and scores.shape == (3, 2, 4)
    torch.testing.assert_close(action, sampler.select(observation, noise=noise)[0])


def test_compiled_select_matches_eager():
    actor = policies()["iql"]
    observation, noise = torch.randn(3, OBS), torch.randn(3, 5, ACT)
    eager = BestOfNSampler(actor, KnownQ(), 5).select(observation, noise=noise)
    compiled = BestOfNSampler(actor, KnownQ(), 5, compile=True)
    for _ in range(2):
        got = compiled.select(observation, noise=noise)
        assert compiled.is_compiled, "compilation fell back to eager"
        torch.testing.assert_close(got[0], eager[0], rtol=1e-5, atol=1e-6)
