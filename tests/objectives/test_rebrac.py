"""ReBRACLoss and TanhActor against NumPy hand computations (float64)."""

import copy
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
from sorl_torchrl._validation import SettingError
from sorl_torchrl.deploy.build_iql_rebrac import build_rebrac_modules
from sorl_torchrl.modules.baseline_actors import TanhActor
from sorl_torchrl.objectives.joint_update import JointUpdateStep
from sorl_torchrl.objectives.rebrac import ReBRACLoss

OBS, ACT, B = 3, 2, 7


def _nets(cells=(8, 8)):
    actor = TanhActor(OBS, ACT, num_cells=cells).double()
    critic = QEnsemble(OBS, ACT, num_cells=cells, condition_on_steps=False).double()
    return actor, critic


def _loss(**kwargs):
    actor, critic = _nets()
    with torch.no_grad():  # non-trivial LayerNorm affines and a mean head far from 0
        for module in (actor, critic):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    loss = ReBRACLoss(actor, critic, **kwargs)
    SoftUpdate(loss, tau=0.005)  # marks the targets as updated (it copies the online weights)
    with torch.no_grad():  # the targets differ from the online networks
        for params in (loss.target_actor_network_params, loss.target_qvalue_network_params):
            for t in params.values(True, True):
                t.add_(torch.randn_like(t) * 0.3)
    return loss


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, OBS, generator=g, dtype=torch.float64)
    a = torch.rand(B, ACT, generator=g, dtype=torch.float64) * 2 - 1
    s2 = torch.randn(B, OBS, generator=g, dtype=torch.float64)
    r = -torch.rand(B, 1, generator=g, dtype=torch.float64)
    m = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.float64).unsqueeze(-1)
    a2 = torch.rand(B, ACT, generator=g, dtype=torch.float64) * 2 - 1
    eps = 2.0 * torch.randn(B, ACT, generator=g, dtype=torch.float64)  # some clipped at 0.5
    return s, a, s2, r, m, a2, eps


def _batch(s, a, s2, r, m, a2):
    return TensorDict(
        {
            "observation": s,
            "action": a,
            "next": {"observation": s2, "reward": r, "terminated": m == 0, "action": a2},
        },
        batch_size=[s.shape[0]],
    )


# ----------------------------------------------------------------------- the actor
def test_actor_matches_numpy_and_samples_as_released():
    loss = _loss()
    s = _inputs()[0]
    mu = ref.policy_mlp(loss.actor_network_params)
    np.testing.assert_allclose(to_np(loss.actor_network.mode(s)), np.tanh(mu(to_np(s))))
    actor = TanhActor(OBS, ACT, num_cells=(8,), noise_scale=0.3, noise_clip=0.4)
    x = torch.randn(5, OBS)
    mode = actor.mode(x)
    assert torch.equal(actor.sample(x), mode)  # evaluation: tanh(mu(s))
    noise = 2 * torch.randn(5, 4, ACT)
    got = actor.sample(x.unsqueeze(1), noise, temperature=0.5)
    expected = (mode.unsqueeze(1) + (0.15 * noise).clamp(-0.4, 0.4)).clamp(-1, 1)
    torch.testing.assert_close(got, expected)
    same = actor.sample(x.unsqueeze(1), noise, temperature=0.0)
    assert torch.equal(same, mode.unsqueeze(1).expand_as(same))  # all N candidates equal
    head = actor.module.network[-1]
    assert head.weight.abs().max() <= 0.1 * math.sqrt(6 / (8 + ACT))


# ----------------------------------------------------------------------- the terms
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_td_loss_matches_hand_computation(reduction):
    loss = _loss(discount=0.9, alpha_critic=0.3, qvalue_member_reduction=reduction)
    s, a, s2, r, m, a2, eps = _inputs()
    got, detail = loss.td_loss(s, a, s2, r, m, a2, eps)
    target_actor = ref.policy_mlp(loss.target_actor_network_params)
    critic = critic_of(loss.qvalue_network, loss.qvalue_network_params)
    target_critic = critic_of(loss.qvalue_network, loss.target_qvalue_network_params)
    expected, y = ref.rebrac_critic_loss(
        target_actor,
        critic,
        target_critic,
        *map(to_np, (s, a, s2, r, m, a2, eps)),
        discount=0.9,
        alpha_critic=0.3,
        reduction=reduction,
    )
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
    np.testing.assert_allclose(to_np(detail["target"]), y, rtol=1e-12)
    assert (to_np(eps).__abs__() * 0.2 > 0.5).any()  # the noise clip is exercised


def test_policy_loss_matches_hand_computation():
    loss = _loss(alpha_actor=0.7)
    s, a = _inputs()[:2]
    got, detail = loss.policy_loss(s, a)
    actor = ref.policy_mlp(loss.actor_network_params)
    critic = critic_of(loss.qvalue_network, loss.qvalue_network_params)
    expected = ref.rebrac_actor_loss(actor, critic, to_np(s), to_np(a), 0.7)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


def test_bc_action_reduction_mean_divides_by_action_dim():
    s, a = _inputs()[:2]
    total = _loss(alpha_actor=0.0)
    summed = total.policy_loss(s, a)[1]["bc_distance"]
    averaged = ReBRACLoss(
        total.actor_network, total.qvalue_network, bc_action_reduction="mean"
    ).policy_loss(s, a)[1]["bc_distance"]
    torch.testing.assert_close(averaged, summed / ACT)


def _reached(loss, term):
    for p in loss.parameters():
        p.grad = None
    inputs = _inputs()
    loss(_batch(*inputs[:6]))[term].backward()
    groups = {"actor": loss.actor_network_params, "critic": loss.qvalue_network_params}
    for params in (loss.target_actor_network_params, loss.target_qvalue_network_params):
        assert all(t.grad is None for t in params.values(True, True))
    return {
        name
        for name, params in groups.items()
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values(True, True))
    }


def test_gradients_reach_only_their_network():
    loss = _loss(alpha_actor=0.1, alpha_critic=0.1)
    assert _reached(loss, "loss_qvalue") == {"critic"}
    assert _reached(loss, "loss_actor") == {"actor"}


def test_draw_randomness_is_the_target_noise():
    loss = _loss()
    batch = loss.read_batch(_batch(*_inputs()[:6]))
    torch.manual_seed(5)
    draws = loss.draw_randomness(batch)
    torch.manual_seed(5)
    assert torch.equal(draws["target_noise"], torch.randn(B, ACT, dtype=torch.float64))
    torch.manual_seed(5)
    out = loss(_batch(*_inputs()[:6]))
    got, _ = loss.td_loss(**batch, **draws)
    torch.testing.assert_close(out["loss_qvalue"], got)


# ----------------------------------------------------------------------- delays, contract
def test_delayed_actor_with_the_joint_update_step():
    loss = ReBRACLoss(*_nets(), actor_freq=2)
    assert ReBRACLoss.DELAYED_TERMS == ("loss_actor",) and loss.delay == 2
    update = JointUpdateStep(loss, lr=1e-2, tau=0.5)
    targets = (loss.target_actor_network_params, loss.target_qvalue_network_params)
    before = [t.clone() for t in targets]
    first = update(_batch(*_inputs()[:6]))  # step 1: critic only, no target moves
    assert float(first["full_update"]) == 0.0
    assert all((t == b).all() for t, b in zip(targets, before))
    online = [loss.actor_network_params.clone(), loss.qvalue_network_params.clone()]
    second = update(_batch(*_inputs(1)[:6]))  # step 2: both terms, targets from pre-step
    assert float(second["full_update"]) == 1.0
    for target, old, pre in zip(targets, before, online):
        torch.testing.assert_close(target.data, old.lerp(pre.data, 0.5))


def test_forward_keys_and_input_untouched():
    loss = _loss()
    batch = _batch(*_inputs()[:6])
    before = batch.clone()
    out = loss(batch)
    assert {"loss_qvalue", "loss_actor", "q_mean", "critic_bc_distance", "lambda"} <= set(
        out.keys()
    )
    assert all(not out[k].requires_grad for k in out.keys() if not k.startswith("loss_"))
    assert set(batch.keys(True, True)) == set(before.keys(True, True))
    assert (batch == before).all()
    assert ("next", "action") in loss.in_keys


def test_next_action_key_missing_or_renamed():
    loss = _loss()
    s, a, s2, r, m, a2, _ = _inputs()
    batch = _batch(s, a, s2, r, m, a2)
    del batch["next", "action"]
    with pytest.raises(KeyError, match=r"next action.*min\(i \+ 1, N - 1\)"):
        loss(batch)
    batch["next_act"] = a2
    loss.set_keys(next_action="next_act")
    assert "next_act" in loss.in_keys
    torch.manual_seed(0)
    got = loss(batch)["loss_qvalue"]
    torch.manual_seed(0)
    loss.set_keys(next_action=None)  # back to the default key
    torch.testing.assert_close(got, loss(_batch(s, a, s2, r, m, a2))["loss_qvalue"])


def test_state_dict_round_trip_with_both_targets():
    loss = _loss()
    state = loss.state_dict()
    assert any(k.startswith("target_actor_network_params") for k in state)
    twin = ReBRACLoss(*_nets())
    SoftUpdate(twin, tau=0.005)
    twin.load_state_dict(state)
    batch = _batch(*_inputs()[:6])
    for key in ("loss_qvalue", "loss_actor"):
        torch.manual_seed(0)
        expected = loss(batch)[key]
        torch.manual_seed(0)
        torch.testing.assert_close(twin(batch)[key], expected)


def test_bad_settings_and_networks_raise():
    actor, critic = _nets()
    with pytest.raises(SettingError, match="actor_freq"):
        ReBRACLoss(actor, critic, actor_freq=0)
    with pytest.raises(TypeError, match="TanhActor"):
        ReBRACLoss(critic, critic)
    with pytest.raises(ValueError, match="condition_on_steps=False"):
        ReBRACLoss(actor, QEnsemble(OBS, ACT, num_cells=(8,)))


def test_builder_uses_the_config():
    config = {
        "sizes": {"observation_dim": OBS, "action_dim": ACT},
        "network": {"actor_cells": [16], "critic_cells": [8], "actor_noise": 0.1},
        "loss": {"alpha_actor": 0.01, "alpha_critic": 0.02, "actor_freq": 3},
    }
    actor, critic, loss = build_rebrac_modules(config)
    assert (loss.alpha_actor, loss.alpha_critic, loss.delay) == (0.01, 0.02, 3)
    assert actor.module.noise_scale == 0.1 and critic.num_members == 2
    with pytest.raises(ValueError, match="actor_nois"):
        build_rebrac_modules({**config, "network": {"actor_nois": 0.1}})


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
        return float(-(actor.mode(torch.randn(1024, OBS)) - A_STAR).pow(2).sum(-1).mean())


def test_200_updates_move_the_policy_to_the_best_action():
    torch.manual_seed(0)
    actor = TanhActor(OBS, ACT, num_cells=(32, 32))
    critic = QEnsemble(OBS, ACT, num_cells=(32, 32), condition_on_steps=False)
    loss = ReBRACLoss(actor, critic, alpha_actor=0.01, alpha_critic=0.01)
    twin = copy.deepcopy(loss)
    start = _policy_reward(actor)
    rng = torch.get_rng_state()  # the target noise draws, replayed for the twin below
    update = JointUpdateStep(loss, lr=3e-3)
    outs = [update(batch) for batch in _bandit_batches(200)]
    first, last = float(outs[0]["loss_qvalue"]), float(outs[-1]["loss_qvalue"])
    assert start < -0.45 and _policy_reward(actor) > -0.4  # the tanh mean starts at ~0
    assert last < 0.2 * first
    # the hand-written loop of the released iteration takes the same steps
    SoftUpdate(twin, tau=0.005)
    torch.set_rng_state(rng)
    ref.plain_training_loop(twin, _bandit_batches(200), lr=3e-3)
    torch.testing.assert_close(
        twin.actor_network_params.data, loss.actor_network_params.data, rtol=1e-3, atol=1e-4
    )
