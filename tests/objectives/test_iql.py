"""IQLLoss, GaussianActor and StateValue against NumPy hand computations (float64)."""

import math

import iql_rebrac_reference as ref
import numpy as np
import pytest
import torch
from baseline_reference import critic_of
from reference import to_np
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from sorl_torchrl import QEnsemble
from sorl_torchrl._validation import SettingError, SettingsError
from sorl_torchrl.deploy.build_iql_rebrac import build_iql_modules
from sorl_torchrl.modules.baseline_actors import GaussianActor
from sorl_torchrl.modules.networks import TanhGELU
from sorl_torchrl.modules.value import StateValue
from sorl_torchrl.objectives.iql import IQLLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep

OBS, ACT, B = 3, 2, 7


def _nets(cells=(8, 8)):
    actor = GaussianActor(OBS, ACT, num_cells=cells).double()
    critic = QEnsemble(OBS, ACT, num_cells=cells, condition_on_steps=False).double()
    value = StateValue(OBS, num_cells=cells).double()
    return actor, critic, value


def _loss(**kwargs):
    actor, critic, value = _nets()
    with torch.no_grad():  # non-trivial LayerNorm affines and a mean head far from 0
        for module in (actor, critic, value):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    loss = IQLLoss(actor, critic, value, **kwargs)
    SoftUpdate(loss, tau=0.005)  # marks the targets as updated (it copies the online weights)
    with torch.no_grad():  # the target critic differs from the online one
        for t in loss.target_qvalue_network_params.values(True, True):
            t.add_(torch.randn_like(t) * 0.3)
    return loss


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, OBS, generator=g, dtype=torch.float64)
    a = torch.rand(B, ACT, generator=g, dtype=torch.float64) * 2 - 1
    s2 = torch.randn(B, OBS, generator=g, dtype=torch.float64)
    r = -torch.rand(B, 1, generator=g, dtype=torch.float64)
    m = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.float64).unsqueeze(-1)
    return s, a, s2, r, m


def _batch(s, a, s2, r, m):
    return TensorDict(
        {
            "observation": s,
            "action": a,
            "next": {"observation": s2, "reward": r, "terminated": m == 0},
        },
        batch_size=[s.shape[0]],
    )


def _np_nets(loss, target=False):
    critic_params = loss.target_qvalue_network_params if target else loss.qvalue_network_params
    return (
        ref.policy_mlp(loss.actor_network_params),
        critic_of(loss.qvalue_network, critic_params),
        critic_of(loss.value_network, loss.value_network_params),
    )


# ----------------------------------------------------------------------- networks
def test_networks_match_numpy_forward():
    loss = _loss()
    s = _inputs()[0]
    actor, critic, value = _np_nets(loss)
    np.testing.assert_allclose(to_np(loss.actor_network.module.mean(s)), actor(to_np(s)))
    np.testing.assert_allclose(
        to_np(loss.value_network.values(s)), ref.state_value(value, to_np(s)), rtol=1e-12
    )
    a = torch.rand(B, ACT, dtype=torch.float64)
    np.testing.assert_allclose(
        to_np(loss.qvalue_network.values(s, a)), critic(to_np(s), to_np(a), None), rtol=1e-12
    )


def test_initialisation_follows_the_spec():
    torch.manual_seed(1)
    actor, critic, value = _nets(cells=(256, 256))
    layers = actor.module.network
    hidden, head = layers[2], layers[-1]  # Linear -> GELU -> Linear -> GELU -> head
    assert isinstance(layers[1], TanhGELU) and not any(
        isinstance(m, torch.nn.LayerNorm) for m in layers
    )
    glorot = math.sqrt(6 / (256 + 256))
    assert glorot * 0.98 < hidden.weight.abs().max() <= glorot
    head_bound = 0.1 * math.sqrt(6 / (256 + ACT))  # variance_scaling(0.01): 0.1 x Glorot
    assert head_bound * 0.9 < head.weight.abs().max() <= head_bound
    assert all(not layer.bias.detach().any() for layer in (layers[0], hidden, head))
    # the critic and V: Linear -> tanh-GELU -> LayerNorm(eps 1e-6, affine 1 / 0) per layer
    for net, members in ((critic.network, 2), (value.network, 1)):
        kinds = [type(m).__name__ for m in net.layers]
        assert kinds[:3] == ["EnsembleLinear", "TanhGELU", "_EnsembleLayerNorm"]
        assert net.layers[2].eps == 1e-6 and net.num_members == members
        assert bool((net.layers[2].weight == 1).all()) and bool((net.layers[2].bias == 0).all())
    w = critic.network.layers[3].weight
    assert not torch.equal(w[0], w[1])  # members initialised independently


def test_log_prob_is_the_unit_gaussian():
    loss = _loss()
    s, a = _inputs()[:2]
    got = loss.actor_network.log_prob(s, a)
    mean = ref.policy_mlp(loss.actor_network_params)(to_np(s))
    np.testing.assert_allclose(to_np(got), ref.gaussian_log_prob(mean, to_np(a)), rtol=1e-12)


def test_sampling_temperature_and_candidates():
    actor = GaussianActor(OBS, ACT, num_cells=(8,))
    s = torch.randn(4, OBS)
    mean = actor.module.mean(s)
    assert torch.equal(actor.sample(s), mean.clamp(-1, 1))  # evaluation: clip(mu(s))
    noise = torch.randn(4, 6, ACT)
    same = actor.sample(s.unsqueeze(1), noise, temperature=0.0)
    assert same.shape == (4, 6, ACT) and torch.equal(same, same[:, :1].expand_as(same))
    spread = actor.sample(s.unsqueeze(1), noise, temperature=0.5)
    torch.testing.assert_close(spread, (mean.unsqueeze(1) + 0.5 * noise).clamp(-1, 1))
    td = actor(TensorDict(observation=s, batch_size=[4]), temperature=1.0)
    assert td["action"].shape == (4, ACT) and not torch.equal(td["action"], mean.clamp(-1, 1))
    with pytest.raises(SettingError, match="temperature"):
        actor.sample(s, temperature=-1.0)


# ----------------------------------------------------------------------- the terms
def test_expectile_value_loss_matches_hand_computation():
    loss = _loss(expectile=0.7)
    s, a = _inputs()[:2]
    got, _ = loss.expectile_value_loss(s, a)
    _, target_critic, value = _np_nets(loss, target=True)
    expected = ref.iql_value_loss(target_critic, value, to_np(s), to_np(a), 0.7)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_td_loss_matches_hand_computation(reduction):
    loss = _loss(discount=0.9, qvalue_member_reduction=reduction)
    s, a, s2, r, m = _inputs()
    got, _, y = loss.td_loss(s, a, s2, r, m)
    _, critic, value = _np_nets(loss)
    expected, y_ref = ref.iql_critic_loss(
        critic, value, *map(to_np, (s, a, s2, r, m)), 0.9, reduction
    )
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(to_np(y), y_ref, rtol=1e-12)


@pytest.mark.parametrize("critic", ["online", "target"])
def test_awr_loss_matches_hand_computation(critic):
    loss = _loss(alpha=30.0, advantage_critic=critic)
    s, a = _inputs()[:2]
    with torch.no_grad():  # centre the advantages on 0, so that some weights are clipped
        advantage = loss.awr_loss(s, a)[1]["advantage"]
        loss.value_network_params.get(("network", "layers", "6", "bias")).add_(advantage.median())
    got, detail = loss.awr_loss(s, a)
    actor, q_net, value = _np_nets(loss, target=critic == "target")
    expected, weight = ref.iql_awr_loss(actor, q_net, value, to_np(s), to_np(a), 30.0)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(to_np(detail["weight"]), weight, rtol=1e-12)
    assert (weight == 100.0).any() and (weight < 100.0).any()  # the clip is exercised


def test_awr_critic_choice_matters():
    online = _loss(alpha=3.0)
    s, a = _inputs()[:2]
    target = IQLLoss(
        online.actor_network,
        online.qvalue_network,
        online.value_network,
        alpha=3.0,
        advantage_critic="target",
    )
    SoftUpdate(target, tau=0.005)
    target.load_state_dict(online.state_dict())
    assert not torch.isclose(online.awr_loss(s, a)[0], target.awr_loss(s, a)[0])


def test_ddpgbc_loss_matches_hand_computation():
    loss = _loss(actor_loss_type="ddpgbc", alpha=2.5)
    s, a = _inputs()[:2]
    got, _ = loss.ddpgbc_loss(s, a)
    actor, critic, _ = _np_nets(loss)
    expected = ref.iql_ddpgbc_loss(actor, critic, to_np(s), to_np(a), 2.5)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    assert "q_policy" in loss(_batch(*_inputs())).keys()


def _grads(loss, term):
    for p in loss.parameters():
        p.grad = None
    loss(_batch(*_inputs()))[term].backward()
    groups = {
        "actor": loss.actor_network_params,
        "critic": loss.qvalue_network_params,
        "value": loss.value_network_params,
    }
    reached = {
        name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values(True, True))
        for name, params in groups.items()
    }
    target = loss.target_qvalue_network_params.values(True, True)
    assert all(t.grad is None for t in target)
    return {name for name, hit in reached.items() if hit}


@pytest.mark.parametrize("actor_loss_type", ["awr", "ddpgbc"])
def test_gradients_reach_only_their_network(actor_loss_type):
    loss = _loss(actor_loss_type=actor_loss_type)
    assert _grads(loss, "loss_value") == {"value"}
    assert _grads(loss, "loss_qvalue") == {"critic"}
    assert _grads(loss, "loss_actor") == {"actor"}


# ----------------------------------------------------------------------- TorchRL contract
def test_forward_keys_and_input_untouched():
    loss = _loss()
    batch = _batch(*_inputs())
    before = batch.clone()
    out = loss(batch)
    assert {"loss_value", "loss_qvalue", "loss_actor", "v_mean", "advantage_mean"} <= set(
        out.keys()
    )
    assert all(not out[k].requires_grad for k in out.keys() if not k.startswith("loss_"))
    assert set(batch.keys(True, True)) == set(before.keys(True, True))
    assert (batch == before).all()
    assert loss.draw_randomness({}) == {}
    assert ("next", "terminated") in loss.in_keys


def test_set_keys_renames_inputs():
    loss = _loss()
    s, a, s2, r, m = _inputs()
    renamed = TensorDict(
        {"obs": s, "act": a, "next": {"obs": s2, "rew": r, "term": m == 0}}, batch_size=[B]
    )
    expected = loss(_batch(s, a, s2, r, m))
    loss.set_keys(observation="obs", action="act", reward="rew", terminated="term")
    assert ("next", "rew") in loss.in_keys
    got = loss(renamed)
    for key in ("loss_value", "loss_qvalue", "loss_actor"):
        torch.testing.assert_close(got[key], expected[key])


def test_state_dict_round_trip_with_targets():
    loss = _loss()
    state = loss.state_dict()
    assert any(key.startswith("target_qvalue_network_params") for key in state)
    torch.manual_seed(123)
    twin = IQLLoss(*_nets())
    SoftUpdate(twin, tau=0.005)
    twin.load_state_dict(state)
    batch = _batch(*_inputs())
    for key in ("loss_value", "loss_qvalue", "loss_actor"):
        torch.testing.assert_close(twin(batch)[key], loss(batch)[key])


def test_missing_keys_name_the_loss():
    batch = _batch(*_inputs())
    del batch["next", "reward"]
    with pytest.raises(KeyError, match="IQLLoss is missing the keys"):
        _loss()(batch)


def test_bad_settings_and_networks_raise():
    actor, critic, value = _nets()
    with pytest.raises(SettingsError, match="expectile.*\n.*actor_loss_type"):
        IQLLoss(actor, critic, value, expectile=1.5, actor_loss_type="bc")
    with pytest.raises(ValueError, match="condition_on_steps=False"):
        IQLLoss(actor, QEnsemble(OBS, ACT, num_cells=(8,)), value)
    with pytest.raises(TypeError, match="StateValue"):
        IQLLoss(actor, critic, critic)
    with pytest.raises(ValueError, match="disagree"):
        IQLLoss(actor, QEnsemble(OBS + 1, ACT, condition_on_steps=False), value)


def test_builder_uses_the_config():
    config = {
        "sizes": {"observation_dim": OBS, "action_dim": ACT},
        "network": {"actor_cells": [16], "critic_cells": [8, 8], "num_critics": 3},
        "loss": {"expectile": 0.7, "alpha": 3.0, "discount": 0.995},
    }
    actor, critic, loss = build_iql_modules(config, device="cpu")
    assert (loss.expectile, loss.alpha, loss.discount) == (0.7, 3.0, 0.995)
    assert critic.num_members == 3 and loss.value_network.network.layers[0].weight.shape[-1] == 8
    with pytest.raises(ValueError, match="condition_on_steps"):
        build_iql_modules({**config, "network": {"condition_on_steps": True}})


# ----------------------------------------------------------------------- training
A_STAR = torch.tensor([0.5, -0.5])


def _bandit_batches(steps, size=64, seed=0):
    """A one-step task: r = -|a - a*|^2, dataset actions uniform (BC's mean is 0)."""
    g = torch.Generator().manual_seed(seed)
    data_s = torch.randn(512, OBS, generator=g)
    data_a = torch.rand(512, ACT, generator=g) * 2 - 1
    data_r = -(data_a - A_STAR).pow(2).sum(-1, keepdim=True)
    for _ in range(steps):
        idx = torch.randint(512, (size,), generator=g)
        yield TensorDict(
            {
                "observation": data_s[idx],
                "action": data_a[idx],
                "next": {
                    "observation": torch.randn(size, OBS, generator=g),
                    "reward": data_r[idx],
                    "terminated": torch.ones(size, 1, dtype=torch.bool),
                    "action": torch.rand(size, ACT, generator=g) * 2 - 1,
                },
            },
            batch_size=[size],
        )


def _policy_reward(actor):
    """The policy's mean reward (the dataset's is -1.17; the uniform data's mean action, -0.5)."""
    with torch.no_grad():
        return float(-(actor.sample(torch.randn(1024, OBS)) - A_STAR).pow(2).sum(-1).mean())


@pytest.mark.parametrize("runner", ["plain loop", "JointUpdateStep"])
def test_200_updates_move_the_policy_to_the_best_action(runner):
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, num_cells=(32, 32))
    critic = QEnsemble(OBS, ACT, num_cells=(32, 32), condition_on_steps=False)
    loss = IQLLoss(actor, critic, StateValue(OBS, num_cells=(32, 32)), alpha=10.0)
    start = _policy_reward(actor)
    batches = _bandit_batches(200)
    if runner == "plain loop":
        SoftUpdate(loss, tau=0.005)
        history = ref.plain_training_loop(loss, batches, lr=3e-3)
        first, last = history[0]["loss_qvalue"], history[-1]["loss_qvalue"]
    else:
        update = JointUpdateStep(loss, lr=3e-3)
        outs = [update(batch) for batch in batches]
        first, last = float(outs[0]["loss_qvalue"]), float(outs[-1]["loss_qvalue"])
    # behaviour cloning would stay near the dataset's mean action 0 (reward -0.5)
    assert start < -0.45 and _policy_reward(actor) > -0.2
    assert last < 0.2 * first
