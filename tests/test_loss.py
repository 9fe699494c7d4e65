"""ShortcutLoss against hand computations (NumPy, float64) with fixed weights and noise."""

import copy
import math

import numpy as np
import pytest
import reference
import torch
from helpers import linear_actor, make_batch, small_critic
from reference import EnsembleCritic, LinearVelocity, to_np
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from sorl_torchrl import ShortcutLoss

OBS, ACT = 3, 2


def _loss(**kwargs):
    actor = linear_actor(OBS, ACT).double()
    critic = small_critic(OBS, ACT).double()
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    loss = ShortcutLoss(actor, critic, **kwargs)
    SoftUpdate(loss, tau=0.005)
    # make every target network differ from its online network
    with torch.no_grad():
        for t in loss.target_actor_network_params.values(True, True):
            t.add_(torch.randn_like(t) * 0.2)
        for t in loss.target_qvalue_network_params.values(True, True):
            t.add_(torch.randn_like(t) * 0.2)
    return loss


def _online_velocity(loss):
    return LinearVelocity(
        *[loss.actor_network_params.get(("module", "network", n)) for n in ("weight", "bias")]
    )


def _target_velocity(loss):
    return LinearVelocity(
        *[
            loss.target_actor_network_params.get(("module", "network", n))
            for n in ("weight", "bias")
        ]
    )


def _critic_ref(loss, params):
    critic = copy.deepcopy(loss.qvalue_network)
    params.to_module(critic)
    return EnsembleCritic.from_module(critic)


def _inputs(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, OBS, generator=g, dtype=torch.float64)
    act = torch.rand(batch, ACT, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(batch, ACT, generator=g, dtype=torch.float64)
    return obs, act, noise


def test_flow_matching_loss_matches_hand_computation():
    loss = _loss()
    obs, a1, a0 = _inputs()
    t = torch.tensor([0, 1, 3, 5, 7, 2], dtype=torch.float64).unsqueeze(-1) / 8
    got = loss.flow_matching_loss(obs, a1, a0, t)

    s, x1, x0, tt = map(to_np, (obs, a1, a0, t))
    # code log2(M_disc) = 3
    expected = reference.flow_matching(_online_velocity(loss), s, x1, x0, tt, 3.0)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)


def test_self_consistency_loss_matches_hand_computation():
    loss = _loss()
    obs, a1, a0 = _inputs()
    d = torch.tensor([2, 2, 1, 1, 0, 0], dtype=torch.float64).unsqueeze(-1)
    t = torch.tensor([0.25, 0.75, 0.0, 0.5, 0.0, 0.0], dtype=torch.float64).unsqueeze(-1)
    got = loss.self_consistency_loss(obs, a1, a0, t, d)

    s, x1, x0, tt, dd = map(to_np, (obs, a1, a0, t, d))
    # target network at code d + 1, two half steps h / 2
    f_on, f_tgt = _online_velocity(loss), _target_velocity(loss)
    expected = reference.self_consistency(f_on, f_tgt, s, x1, x0, tt, dd)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-12)

    # the paper's reading: target from the online network
    loss.sc_target_network = "online"
    expected_online = reference.self_consistency(f_on, f_on, s, x1, x0, tt, dd)
    got_online = loss.self_consistency_loss(obs, a1, a0, t, d)
    np.testing.assert_allclose(got_online.item(), expected_online, rtol=1e-12)
    assert not np.isclose(expected, expected_online)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_q_loss_matches_hand_computation(k, normalize):
    loss = _loss(normalize_q_loss=normalize)
    obs, _, a0 = _inputs()
    got, q, lam = loss.q_loss(obs, a0, k)

    critic = _critic_ref(loss, loss.qvalue_network_params)  # critic input is k
    # quirk (e): always the mean over members
    expected, q_ref = reference.q_loss(
        _online_velocity(loss), critic, to_np(obs), to_np(a0), k, "mean", normalize
    )
    if normalize:
        assert -1.0 <= got.item() <= 1.0
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    np.testing.assert_allclose(to_np(q), q_ref, rtol=1e-10)


def test_q_loss_aggregation_switch():
    loss = _loss(q_agg="min", actor_q_agg=None, normalize_q_loss=False)
    obs, _, a0 = _inputs()
    got, _, _ = loss.q_loss(obs, a0, 2)
    critic = _critic_ref(loss, loss.qvalue_network_params)
    expected, _ = reference.q_loss(
        _online_velocity(loss), critic, to_np(obs), to_np(a0), 2, "min", normalize=False
    )
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)


def test_q_loss_backpropagates_through_every_euler_step_and_not_into_critic():
    loss = _loss()
    network = loss.actor_network.module.network
    inputs = []

    def keep_input(module, args):
        args[0].retain_grad()
        inputs.append(args[0])

    handle = network.register_forward_pre_hook(keep_input)
    obs, _, a0 = _inputs()
    a0.requires_grad_(True)  # a gradient at the noise must cross all 8 steps
    q_loss, _, _ = loss.q_loss(obs, a0, 8)
    handle.remove()
    q_loss.backward()
    assert len(inputs) == 8
    assert a0.grad.abs().sum() > 0
    for step, z in enumerate(inputs):
        x_grad = z.grad[:, OBS : OBS + ACT]
        assert x_grad.abs().sum() > 0, f"no gradient reaches Euler step {step}"
    assert all(p.grad is None for p in loss.qvalue_network_params.values(True, True))
    assert loss.actor_network_params.get(("module", "network", "weight")).grad.abs().sum() > 0


@pytest.mark.parametrize("q_agg", ["mean", "min"])
@pytest.mark.parametrize("k", [1, 4])
def test_td_loss_matches_hand_computation(q_agg, k):
    loss = _loss(q_agg=q_agg, discount=0.9)
    obs, act, noise = _inputs()
    g = torch.Generator().manual_seed(5)
    next_obs = torch.randn(6, OBS, generator=g, dtype=torch.float64)
    reward = -torch.rand(6, 1, generator=g, dtype=torch.float64)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64).unsqueeze(-1)
    got, q, y = loss.td_loss(obs, act, next_obs, reward, mask, noise, k)

    s, a, s2, r, m = map(to_np, (obs, act, next_obs, reward, mask))
    # next action from the online actor, bootstrap from the target critic, same k for Q(s, a, k)
    expected, y_ref = reference.td_loss(
        _online_velocity(loss),
        _critic_ref(loss, loss.qvalue_network_params),
        _critic_ref(loss, loss.target_qvalue_network_params),
        s,
        a,
        s2,
        r,
        m,
        to_np(noise),
        k,
        0.9,
        q_agg,
    )
    np.testing.assert_allclose(to_np(y), y_ref, rtol=1e-10)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    # masked rows bootstrap nothing
    np.testing.assert_allclose(to_np(y)[m[:, 0] == 0], r[m[:, 0] == 0])


@pytest.mark.parametrize("next_action_grad", [True, False])
def test_td_loss_gradient_into_actor_is_quirk_a(next_action_grad):
    loss = _loss(next_action_grad=next_action_grad)
    obs, act, noise = _inputs()
    td, _, _ = loss.td_loss(
        obs, act, obs.flip(0), -torch.ones(6, 1).double(), torch.ones(6, 1).double(), noise, 2
    )
    td.backward()
    actor_grad = loss.actor_network_params.get(("module", "network", "weight")).grad
    if next_action_grad:
        assert actor_grad is not None and actor_grad.abs().sum() > 0
    else:
        assert actor_grad is None
    assert all(p.grad is not None for p in loss.qvalue_network_params.values(True, True))


def test_self_consistency_codes_and_time_grids():
    loss = _loss()
    codes = loss.self_consistency_step_codes(256).flatten()
    assert codes[:85].eq(2).all() and codes[85:170].eq(1).all() and codes[170:].eq(0).all()
    assert codes.numel() == 256

    # Record the (t, d) columns fed to the velocity network during a full actor_loss call.
    network = loss.actor_network.module.network
    seen = []
    handle = network.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    torch.manual_seed(0)
    batch = make_batch(256, OBS, ACT).double()
    loss.actor_loss(batch)
    handle.remove()
    # the SC target's two half steps, then FM and SC predictions stacked in one forward
    sc_target1, sc_target2, stacked = seen[:3]
    fm_in, sc_pred = stacked[:256], stacked[256:]
    t_fm, d_fm = fm_in[:, -2], fm_in[:, -1]
    assert d_fm.eq(3).all()  # FM uses code log2(M_disc)
    assert torch.equal(torch.unique(t_fm * 8), torch.arange(8, dtype=t_fm.dtype))
    d_sc, t_sc = sc_pred[:, -1], sc_pred[:, -2]
    assert torch.equal(d_sc, codes.double())
    assert torch.equal(sc_target1[:, -1], d_sc + 1)  # target at code d + 1 ...
    assert torch.allclose(sc_target2[:, -2], t_sc + 2.0 ** -(d_sc + 1))  # ... and half step
    for d in (0, 1, 2):
        t = t_sc[d_sc == d]
        grid = t * 2**d
        assert torch.equal(grid, grid.round()) and (t < 1).all()
        assert len(torch.unique(t)) == 2**d  # every grid point drawn with 85 rows
    num_q_steps = len(seen) - 3
    assert num_q_steps in (1, 2, 4, 8)


def test_num_steps_draw_is_uniform_over_powers_of_two():
    loss = _loss(max_bptt_steps=8)
    draws = [loss.draw_num_steps() for _ in range(4000)]
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [1, 2, 4, 8]
    assert (np.abs(counts / 4000 - 0.25) < 0.03).all()


def test_actor_loss_combines_terms_with_coefficients():
    loss = _loss(fm_coef=10.0, alpha=10.0, q_loss_coef=7.0)
    batch = make_batch(32, OBS, ACT).double()
    torch.manual_seed(3)
    total, meta = loss.actor_loss(batch)
    expected = 10 * meta["fm_loss"] + 10 * meta["sc_loss"] + 7 * meta["q_loss"]
    torch.testing.assert_close(total.detach(), expected)


def test_forward_outputs_and_priority():
    loss = _loss()
    batch = make_batch(16, OBS, ACT).double()
    out = loss(batch)
    for key in [
        "loss_actor",
        "loss_qvalue",
        "fm_loss",
        "sc_loss",
        "q_mean",
        "q_min",
        "q_max",
        "td_error_mean",
        "lambda",
    ]:
        assert key in out.keys()
    assert out["loss_actor"].requires_grad and out["loss_qvalue"].requires_grad
    assert not out["fm_loss"].requires_grad
    assert batch["td_error"].shape == (16,)
    assert math.isfinite(out["loss_actor"].item())


def test_soft_update_moves_targets_toward_online():
    actor, critic = linear_actor(OBS, ACT), small_critic(OBS, ACT)
    loss = ShortcutLoss(actor, critic)
    updater = SoftUpdate(loss, tau=0.25)
    online = loss.actor_network_params.get(("module", "network", "weight"))
    target = loss.target_actor_network_params.get(("module", "network", "weight"))
    with torch.no_grad():
        target.zero_()
    before = target.clone()
    updater.step()
    torch.testing.assert_close(target, 0.75 * before + 0.25 * online.detach())


def test_set_keys_renames_inputs():
    loss = _loss()
    batch = make_batch(8, OBS, ACT).double()
    renamed = TensorDict(
        {
            "obs": batch["observation"],
            "act": batch["action"],
            "next": {
                "obs": batch["next", "observation"],
                "r": batch["next", "reward"],
                "term": batch["next", "terminated"],
            },
        },
        batch_size=[8],
    )
    loss.set_keys(observation="obs", action="act", reward="r", terminated="term")
    out = loss(renamed)
    assert math.isfinite(out["loss_qvalue"].item())
    assert ("next", "r") in loss.in_keys


def test_missing_keys_raise_clear_error():
    loss = _loss()
    batch = make_batch(8, OBS, ACT).double()
    del batch["next", "reward"]
    with pytest.raises(KeyError, match="missing the keys") as info:
        loss(batch)
    message = info.value.args[0]
    assert "('next', 'reward')" in message and "set_keys" in message


def test_wrong_shapes_raise():
    loss = _loss()
    batch = make_batch(8, OBS, ACT).double()
    batch["observation"] = torch.randn(8, OBS + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"observation must have shape \[..., 3\]"):
        loss(batch)
    batch = make_batch(8, OBS, ACT).double()
    batch["next", "reward"] = torch.randn(8, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="reward"):
        loss(batch)


@pytest.mark.parametrize(
    "key", ["observation", "action", ("next", "reward"), ("next", "observation")]
)
def test_non_finite_batch_raises(key):
    loss = _loss()
    batch = make_batch(8, OBS, ACT).double()
    value = batch[key].clone()
    value[3, 0] = float("nan") if key != "action" else float("inf")
    batch[key] = value
    with pytest.raises(ValueError, match="non-finite"):
        loss(batch)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(discretization_steps=6),
        dict(max_bptt_steps=3),
        dict(q_agg="max"),
        dict(actor_q_agg="median"),
        dict(sc_target_network="ema"),
        dict(discretization_steps=1),
    ],
)
def test_bad_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS, ACT), **kwargs)


def test_mismatched_networks_raise():
    with pytest.raises(ValueError, match="disagree"):
        ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS + 1, ACT))
