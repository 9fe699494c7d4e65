"""SORLUpdateStep: order of steps and the optimisation quirks (b), (c), (d)."""

import copy

import pytest
import torch
from helpers import linear_actor, make_batch, small_critic

from sorl_torchrl import ShortcutLoss, SORLUpdateStep

OBS, ACT = 3, 2


def _setup(**update_kwargs):
    torch.manual_seed(0)
    loss = ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS, ACT))
    return loss, SORLUpdateStep(loss, **update_kwargs)


def _vals(params):
    return [p.detach().clone() for p in params.values(True, True)]


def _assert_lists_close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("pre_step", [True, False])
def test_target_update_source_quirk_d(pre_step):
    loss, update = _setup(tau=0.1, targets_track_pre_step_weights=pre_step)
    online_actor0 = _vals(loss.actor_network_params)
    online_critic0 = _vals(loss.qvalue_network_params)
    with torch.no_grad():  # targets away from online so the average is visible
        for t in loss.target_actor_network_params.values(True, True):
            t.mul_(0.5)
        for t in loss.target_qvalue_network_params.values(True, True):
            t.mul_(0.5)
    target_actor0 = _vals(loss.target_actor_network_params)
    target_critic0 = _vals(loss.target_qvalue_network_params)
    update(make_batch(16, OBS, ACT))
    source_actor = online_actor0 if pre_step else _vals(loss.actor_network_params)
    source_critic = online_critic0 if pre_step else _vals(loss.qvalue_network_params)
    _assert_lists_close(
        _vals(loss.target_actor_network_params),
        [0.9 * t + 0.1 * s for t, s in zip(target_actor0, source_actor)],
    )
    _assert_lists_close(
        _vals(loss.target_qvalue_network_params),
        [0.9 * t + 0.1 * s for t, s in zip(target_critic0, source_critic)],
    )


def test_shared_adam_steps_every_parameter_twice_quirk_b():
    loss, update = _setup()
    update(make_batch(16, OBS, ACT))
    update(make_batch(16, OBS, ACT, seed=2))
    (opt,) = update.optimizers.values()
    steps = {float(state["step"]) for state in opt.state.values()}
    assert steps == {4.0}
    assert len(opt.state) == len(update.actor_params) + len(update.critic_params)


def _reference_iteration(loss, batch, lr, tau, clip, shared, pre_critic_for_actor, opt=None):
    """One SORL iteration written out step by step (slow reference)."""
    actor = list(loss.actor_network_params.values(True, True))
    critic = list(loss.qvalue_network_params.values(True, True))
    pre_actor = [p.detach().clone() for p in actor]
    pre_critic_td = loss.qvalue_network_params.data.clone()
    pre_critic = list(pre_critic_td.values(True, True))
    # critic step
    loss_q, _ = loss.qvalue_loss(batch)
    for p in actor + critic:
        p.grad = torch.zeros_like(p)
    loss_q.backward()
    params = actor + critic if shared else critic
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt["shared" if shared else "critic"].step()
    with torch.no_grad():
        for t, s in zip(loss.target_qvalue_network_params.values(True, True), pre_critic):
            t.copy_((1 - tau) * t + tau * s)
    # actor step, scored by the pre-step critic
    loss_a, _ = loss.actor_loss(
        batch, qvalue_params=pre_critic_td if pre_critic_for_actor else None
    )
    for p in actor + critic:
        p.grad = torch.zeros_like(p)
    loss_a.backward()
    params = actor + critic if shared else actor
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt["shared" if shared else "actor"].step()
    with torch.no_grad():
        for t, s in zip(loss.target_actor_network_params.values(True, True), pre_actor):
            t.copy_((1 - tau) * t + tau * s)


@pytest.mark.parametrize("pre_critic_for_actor", [True, False])
def test_iteration_matches_step_by_step_reference(pre_critic_for_actor):
    loss, update = _setup(actor_uses_pre_step_critic=pre_critic_for_actor, lr=1e-3)
    ref_loss = copy.deepcopy(loss)
    params = list(ref_loss.actor_network_params.values(True, True)) + list(
        ref_loss.qvalue_network_params.values(True, True)
    )
    ref_opt = {"shared": torch.optim.Adam(params, lr=1e-3)}
    for it in range(3):
        batch = make_batch(16, OBS, ACT, seed=it)
        torch.manual_seed(100 + it)
        update(batch)
        torch.manual_seed(100 + it)
        _reference_iteration(ref_loss, batch, 1e-3, 0.005, 1.0, True, pre_critic_for_actor, ref_opt)
    for name in (
        "actor_network_params",
        "qvalue_network_params",
        "target_actor_network_params",
        "target_qvalue_network_params",
    ):
        _assert_lists_close(_vals(getattr(loss, name)), _vals(getattr(ref_loss, name)))


def test_pre_step_critic_matters():
    """With quirk (c) on and off, the same seeds give different actors after one iteration."""
    results = []
    for flag in (True, False):
        loss, update = _setup(actor_uses_pre_step_critic=flag, lr=1e-2)
        torch.manual_seed(7)
        update(make_batch(16, OBS, ACT))
        results.append(_vals(loss.actor_network_params))
    assert any(not torch.allclose(a, b) for a, b in zip(*results))


def test_separate_optimizers_leave_critic_alone_during_actor_step():
    loss, update = _setup(shared_optimizer=False, lr=1e-2)
    seen = {}
    original = loss._actor_objective

    def spy(*args, **kwargs):
        seen["critic_before_actor_step"] = _vals(loss.qvalue_network_params)
        return original(*args, **kwargs)

    loss._actor_objective = spy
    update(make_batch(16, OBS, ACT))
    _assert_lists_close(seen["critic_before_actor_step"], _vals(loss.qvalue_network_params))
    assert set(update.optimizers) == {"actor", "critic"}


def test_shared_optimizer_moves_critic_during_actor_step():
    loss, update = _setup(lr=1e-2)
    update(make_batch(16, OBS, ACT))  # builds Adam momentum for the critic
    seen = {}
    original = loss._actor_objective

    def spy(*args, **kwargs):
        seen["critic"] = _vals(loss.qvalue_network_params)
        return original(*args, **kwargs)

    loss._actor_objective = spy
    update(make_batch(16, OBS, ACT, seed=3))
    moved = [
        not torch.equal(a, b) for a, b in zip(seen["critic"], _vals(loss.qvalue_network_params))
    ]
    assert all(moved)


def test_gradient_clipping_bounds_the_step():
    loss, update = _setup(
        grad_clip_norm=1e-3, optimizer_factory=lambda p: torch.optim.SGD(p, lr=1.0)
    )
    before = _vals(loss.qvalue_network_params) + _vals(loss.actor_network_params)
    batch = make_batch(16, OBS, ACT)
    batch["next", "reward"] = batch["next", "reward"] * 1000
    update(batch)
    after = _vals(loss.qvalue_network_params) + _vals(loss.actor_network_params)
    total = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before)))
    assert total <= 2e-3 + 1e-6  # two SGD steps of at most grad_clip_norm each


def test_optimizer_state_round_trip():
    loss, update = _setup()
    update(make_batch(16, OBS, ACT))
    state = update.state_dict()
    loss2, update2 = _setup()
    update2.load_state_dict(state)
    assert (
        update2.optimizers["shared"].state_dict()["state"].keys() == state["shared"]["state"].keys()
    )
    _, separate = _setup(shared_optimizer=False)
    with pytest.raises(ValueError, match="shared_optimizer"):
        separate.load_state_dict(state)


def test_bad_tau_raises():
    loss = ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS, ACT))
    with pytest.raises(ValueError, match="tau"):
        SORLUpdateStep(loss, tau=0.0)
