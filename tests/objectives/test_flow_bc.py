"""FlowBCLoss against NumPy hand computations (float64), with and without a critic."""

import math

import baseline_reference as ref
import numpy as np
import pytest
import reference
import torch
from helpers import make_batch
from reference import MLPVelocity, to_np
from tensordict import TensorDict

from sorl_torchrl import QEnsemble, ShortcutActor
from sorl_torchrl._validation import SettingError, SettingsError
from sorl_torchrl.objectives.flow_bc import FlowBCLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep
from sorl_torchrl.toy import bimodal_bandit_batch, mode_fractions

OBS, ACT, B = 3, 2, 6


def _loss(critic=True, **kwargs):
    torch.manual_seed(0)
    actor = ShortcutActor(OBS, ACT, num_cells=(8, 8)).double()
    qvalue = QEnsemble(OBS, ACT, num_cells=(8, 8)).double() if critic else None
    loss = FlowBCLoss(actor, qvalue, **kwargs)
    JointUpdateStep(loss)  # attaches the target updates
    with torch.no_grad():  # every target differs from its online network
        for name in ("target_actor_network_params", "target_qvalue_network_params"):
            if critic or "actor" in name:
                for t in getattr(loss, name).values(True, True):
                    t.add_(torch.randn_like(t) * 0.2)
    return loss


def _velocity(params):
    return MLPVelocity.from_params(params)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, OBS, generator=g, dtype=torch.float64)
    act = torch.rand(B, ACT, generator=g, dtype=torch.float64) * 2 - 1
    return obs, act, torch.randn(B, ACT, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ terms vs NumPy


def test_flow_matching_and_self_consistency_match_hand_computation():
    loss = _loss(critic=False)
    obs, a1, a0 = _inputs()
    t = torch.tensor([0, 1, 3, 5, 7, 2], dtype=torch.float64).unsqueeze(-1) / 8
    d = torch.tensor([2, 2, 1, 1, 0, 0], dtype=torch.float64).unsqueeze(-1)
    t_sc = torch.tensor([0.25, 0.75, 0.0, 0.5, 0.0, 0.0], dtype=torch.float64).unsqueeze(-1)
    s, x1, x0 = map(to_np, (obs, a1, a0))
    online = _velocity(loss.actor_network_params)
    target = _velocity(loss.target_actor_network_params)
    fm = loss.flow_matching_loss(obs, a1, a0, t)
    np.testing.assert_allclose(
        fm.item(), reference.flow_matching(online, s, x1, x0, to_np(t), 3.0), rtol=1e-10
    )
    sc = loss.self_consistency_loss(obs, a1, a0, t_sc, d)
    expected = reference.self_consistency(online, target, s, x1, x0, to_np(t_sc), to_np(d))
    np.testing.assert_allclose(sc.item(), expected, rtol=1e-10)


@pytest.mark.parametrize("critic", [False, True])
def test_compute_terms_match_hand_computation(critic):
    loss = _loss(critic=critic, fm_coef=3.0, alpha=5.0, discount=0.9, q_agg="min")
    batch = loss.read_batch(make_batch(B, OBS, ACT).double())
    torch.manual_seed(4)
    draws = loss.draw_randomness(batch)
    out = loss.compute_terms(batch, draws)
    online = _velocity(loss.actor_network_params)
    target = _velocity(loss.target_actor_network_params)
    s, a = to_np(batch["observation"]), to_np(batch["action"])
    fm = reference.flow_matching(
        online, s, a, to_np(draws["fm_noise"]), to_np(draws["fm_time"]), 3.0
    )
    sc = reference.self_consistency(
        online,
        target,
        s,
        a,
        to_np(draws["sc_noise"]),
        to_np(draws["sc_time"]),
        to_np(draws["step_codes"]),
    )
    np.testing.assert_allclose(out["loss_actor"].item(), 3.0 * fm + 5.0 * sc, rtol=1e-10)
    np.testing.assert_allclose(out["fm_loss"].item(), fm, rtol=1e-10)
    assert ("loss_qvalue" in out) == critic and ("td_error" in out) == critic
    if critic:
        k = draws["critic_num_steps"]
        assert k in (1, 2, 4, 8)
        expected, _ = reference.td_loss(
            online,
            ref.critic_of(loss.qvalue_network, loss.qvalue_network_params),
            ref.critic_of(loss.qvalue_network, loss.target_qvalue_network_params),
            s,
            a,
            to_np(batch["next_observation"]),
            to_np(batch["reward"]),
            to_np(batch["mask"]),
            to_np(draws["critic_noise"]),
            k,
            0.9,
            "min",
        )
        np.testing.assert_allclose(out["loss_qvalue"].item(), expected, rtol=1e-10)


@pytest.mark.parametrize("next_action_grad", [False, True])
def test_gradients_reach_only_their_network(next_action_grad):
    loss = _loss(next_action_grad=next_action_grad)
    batch = loss.read_batch(make_batch(B, OBS, ACT).double())
    out = loss.compute_terms(batch, loss.draw_randomness(batch))
    actor = list(loss.actor_network_params.values(True, True))
    critic = list(loss.qvalue_network_params.values(True, True))

    def reaches(value, leaves):
        grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        return any(g is not None and g.abs().sum() > 0 for g in grads)

    assert reaches(out["loss_actor"], actor) and not reaches(out["loss_actor"], critic)
    assert reaches(out["loss_qvalue"], critic)
    assert reaches(out["loss_qvalue"], actor) == next_action_grad  # quirk (a) as a switch


# ------------------------------------------------------------------ no critic, no cost


def test_without_a_critic_nothing_of_a_critic_exists():
    loss = _loss(critic=False)
    assert not loss.has_critic and loss.qvalue_network is None
    assert not any("qvalue" in key for key in loss.state_dict())
    assert loss.in_keys == ["observation", "action"]
    assert set(loss.out_keys) == {"loss_actor", "fm_loss", "sc_loss"}
    # observations and actions are all it reads: no reward, no next step
    batch = TensorDict(
        {
            "observation": torch.randn(B, OBS, dtype=torch.float64),
            "action": torch.rand(B, ACT, dtype=torch.float64),
        },
        batch_size=[B],
    )
    before = batch.clone()
    out = loss(batch)
    assert set(out.keys()) == {"loss_actor", "fm_loss", "sc_loss"}
    assert set(batch.keys(True, True)) == set(before.keys(True, True))  # no priority either
    assert set(loss.draw_randomness(loss.read_batch(batch))) == {
        "fm_noise",
        "fm_time",
        "sc_noise",
        "sc_time",
        "step_codes",
    }


def test_with_a_critic_only_the_priority_is_written():
    loss = _loss()
    batch = make_batch(B, OBS, ACT).double()
    before = batch.clone()
    out = loss(batch)
    assert set(out.keys()) == set(loss.out_keys)
    assert set(batch.keys(True, True)) - set(before.keys(True, True)) == {"td_error"}
    for key in before.keys(True, True):
        assert torch.equal(batch[key], before[key])


def test_missing_keys_name_set_keys():
    loss = _loss(critic=False)
    batch = TensorDict({"obs": torch.randn(B, OBS), "action": torch.rand(B, ACT)}, batch_size=[B])
    with pytest.raises(KeyError, match="set_keys"):
        loss(batch)
    loss.set_keys(observation="obs")
    assert math.isfinite(loss(batch)["loss_actor"].item())
    assert loss.in_keys == ["obs", "action"]


def test_state_dict_round_trip():
    loss = _loss()
    torch.manual_seed(1)
    other = FlowBCLoss(
        ShortcutActor(OBS, ACT, num_cells=(8, 8)).double(),
        QEnsemble(OBS, ACT, num_cells=(8, 8)).double(),
    )
    JointUpdateStep(other)
    other.load_state_dict(loss.state_dict())
    batch = make_batch(B, OBS, ACT).double()
    torch.manual_seed(2)
    a = loss(batch.clone())
    torch.manual_seed(2)
    b = other(batch.clone())
    for key in loss.out_keys:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_bad_settings_are_listed():
    actor = ShortcutActor(OBS, ACT, num_cells=(4,))
    with pytest.raises(SettingsError) as info:
        FlowBCLoss(actor, alpha=-1.0, discretization_steps=6)
    assert "alpha" in str(info.value) and "discretization_steps" in str(info.value)
    with pytest.raises(SettingError, match="max_bptt_steps"):
        FlowBCLoss(actor, discretization_steps=4, max_bptt_steps=8)
    with pytest.raises(ValueError, match="disagree"):
        FlowBCLoss(actor, QEnsemble(OBS + 1, ACT, num_cells=(4,)))
    with pytest.raises(TypeError, match="ShortcutActor"):
        FlowBCLoss(actor.module)


# ------------------------------------------------------------------ a short training run


def test_short_training_run_learns_the_behaviour():
    torch.manual_seed(0)
    actor = ShortcutActor(1, 2, num_cells=(32, 32))
    critic = QEnsemble(1, 2, num_cells=(32, 32))
    loss = FlowBCLoss(actor, critic, validate_inputs=False)
    update = JointUpdateStep(loss, lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(200):
        info = update(bimodal_bandit_batch(64, generator=gen))
        history.append([info[k].item() for k in ("fm_loss", "loss_qvalue")])
    history = np.array(history)
    first, last = history[:20].mean(0), history[-20:].mean(0)
    assert np.isfinite(history).all()
    assert last[0] < 0.75 * first[0]  # seeds 0-3: 0.53-0.59
    assert last[1] < 0.2 * first[1]  # the critic fits r (every transition terminates)
    with torch.no_grad():
        actions = actor.sample(torch.zeros(512, 1), inference_steps=8)
    plus, minus = mode_fractions(actions)
    # both modes cloned, none dropped (seeds 0-3: 0.16-0.40 each; untrained: 0.01-0.05)
    assert plus > 0.08 and minus > 0.08


@pytest.mark.parametrize("num_critics", [0, 2])
def test_builder_makes_the_critic_only_when_asked(num_critics):
    from sorl_torchrl.deploy.build_baselines import build_flow_bc_modules, build_joint_update

    network = {
        "actor_cells": [8],
        "critic_cells": [8],
        "num_critics": num_critics,
        "critic_layer_norm": True,
        "condition_on_steps": True,
        "step_feature": "steps",
    }
    config = {
        "sizes": {"observation_dim": OBS, "action_dim": ACT},
        "network": network,
        "loss": {"discretization_steps": 4, "max_bptt_steps": 2},
    }
    actor, critic, loss = build_flow_bc_modules(config)
    assert (critic is None) == (num_critics == 0) and loss.has_critic == (num_critics > 0)
    assert actor.trained_steps == 4
    info = build_joint_update(loss, config)(make_batch(B, OBS, ACT))
    assert ("loss_qvalue" in info.keys()) == (num_critics > 0)
