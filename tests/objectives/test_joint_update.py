"""JointUpdateStep against the Adam formula and target rule computed by hand (NumPy, float64)."""

import copy

import baseline_reference as ref
import numpy as np
import pytest
import torch
from helpers import make_batch
from reference import to_np
from tensordict import TensorDict
from torch import nn
from torchrl.objectives.common import LossModule

from sorl_torchrl import QEnsemble
from sorl_torchrl._validation import SettingError
from sorl_torchrl.modules.actor import ShortcutModel
from sorl_torchrl.modules.networks import VelocityMLP
from sorl_torchrl.modules.one_step_policy import OneStepPolicy
from sorl_torchrl.objectives.fql import FQLLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep

OBS, ACT, B = 3, 2, 6


def _np(tensor):
    """A copy (``to_np`` of a float64 CPU tensor shares its memory)."""
    return to_np(tensor).copy()


# ------------------------------------------------------------------ a tiny delayed loss


class ToyLoss(LossModule):
    """Linear actor ``a = W_a x + b_a`` and critic ``q = W_c [x, a] + b_c``, both with targets.

    ``loss_qvalue = mean (q(x, sg a) - y)^2``; ``loss_actor = mean a^2 - mean q(x, a)``
    with the critic frozen, delayed (ReBRAC-style) by ``delay``.
    """

    DELAYED_TERMS = ("loss_actor",)
    actor_network: nn.Module
    qvalue_network: nn.Module
    actor_network_params: TensorDict
    qvalue_network_params: TensorDict
    target_actor_network_params: TensorDict
    target_qvalue_network_params: TensorDict

    def __init__(self, delay: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.delay = delay
        actor, critic = nn.Linear(2, 1).double(), nn.Linear(3, 1).double()
        self.convert_to_functional(actor, "actor_network", create_target_params=True)
        self.convert_to_functional(critic, "qvalue_network", create_target_params=True)

    def _terms(self, x, y):
        with self.actor_network_params.to_module(self.actor_network):
            a = self.actor_network(x)
        with self.qvalue_network_params.to_module(self.qvalue_network):
            q = self.qvalue_network(torch.cat([x, a.detach()], -1))
        with self.qvalue_network_params.detach().to_module(self.qvalue_network):
            q_pi = self.qvalue_network(torch.cat([x, a], -1))
        return {
            "loss_qvalue": (q - y).pow(2).mean(),
            "loss_actor": a.pow(2).mean() - q_pi.mean(),
            "q_mean": q.detach().mean(),
        }

    def forward(self, tensordict):
        return TensorDict(self._terms(tensordict["x"], tensordict["y"]))


class ToyTermsLoss(ToyLoss):
    """The same loss with the term protocol of the package's losses."""

    def read_batch(self, tensordict):
        return {"x": tensordict["x"], "y": tensordict["y"]}

    def draw_randomness(self, batch):
        return {}

    def compute_terms(self, batch, draws):
        return self._terms(**batch)


def _toy_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, generator=g, dtype=torch.float64)
    return TensorDict({"x": x, "y": torch.randn(B, 1, generator=g, dtype=torch.float64)}, [B])


def _toy_grads(p, x, y, full):
    """Hand gradients of the summed toy terms: ``(gW_a, gb_a, gW_c, gb_c)``."""
    wa, ba, wc, bc = p
    a = x @ wa.T + ba
    q = np.concatenate([x, a], -1) @ wc.T + bc
    dq = 2 * (q - y) / len(x)
    g_wc, g_bc = dq.T @ np.concatenate([x, a], -1), dq.sum(0)
    if not full:
        return [np.zeros_like(wa), np.zeros_like(ba), g_wc, g_bc]
    da = (2 * a - wc[0, 2]) / len(x)
    return [da.T @ x, da.sum(0), g_wc, g_bc]


def _toy_leaves(loss, target=False):
    prefix = "target_" if target else ""
    actor = getattr(loss, f"{prefix}actor_network_params")
    critic = getattr(loss, f"{prefix}qvalue_network_params")
    return [actor["weight"], actor["bias"], critic["weight"], critic["bias"]]


@pytest.mark.parametrize("loss_class", [ToyTermsLoss, ToyLoss])
def test_delayed_terms_zero_gradients_and_adam_momentum(loss_class):
    loss = loss_class(delay=2)
    update = JointUpdateStep(loss, lr=1e-2, tau=0.1)
    adam = ref.Adam(lr=1e-2)
    params = [_np(t) for t in _toy_leaves(loss)]
    targets = [p.copy() for p in params]
    for step in (1, 2, 3, 4, 5):
        batch = _toy_batch(step)
        full = step % 2 == 0
        info = update(batch)
        grads = _toy_grads(params, to_np(batch["x"]), to_np(batch["y"]), full)
        if full:  # from the pre-step weights
            targets = [0.9 * t + 0.1 * p for t, p in zip(targets, params)]
        previous, params = params, adam.step(params, grads)
        for got, want in zip(_toy_leaves(loss), params):
            np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-14)
        for got, want in zip(_toy_leaves(loss, target=True), targets):
            np.testing.assert_allclose(to_np(got), want, rtol=1e-10, atol=1e-14)
        actor_grad = loss.actor_network_params["weight"].grad
        assert actor_grad is not None  # a zero tensor on delayed steps, not None
        assert (actor_grad.abs().max() == 0) == (not full)
        assert info["full_update"].item() == float(full)
        expected_total = info["loss_qvalue"] + (info["loss_actor"] if full else 0)
        torch.testing.assert_close(info["total_loss"], expected_total)
        if step == 3:  # no gradient, yet the actor moved by its decayed momentum
            moved = params[0] - previous[0]
            assert np.abs(moved).min() > 1e-4
    assert update.state_dict()["step"] == 5


def test_delay_parity_survives_a_resume():
    loss = ToyTermsLoss(delay=2)
    update = JointUpdateStep(loss, lr=1e-2, tau=0.1)
    update(_toy_batch(1))
    state = copy.deepcopy((loss.state_dict(), update.state_dict()))
    resumed = ToyTermsLoss(delay=2, seed=1)
    resumed_update = JointUpdateStep(resumed, lr=1e-2, tau=0.1)
    resumed.load_state_dict(state[0])
    resumed_update.load_state_dict(state[1])
    a, b = update(_toy_batch(2)), resumed_update(_toy_batch(2))
    assert a["full_update"].item() == b["full_update"].item() == 1.0
    for x, y in zip(
        _toy_leaves(loss) + _toy_leaves(loss, True),
        _toy_leaves(resumed) + _toy_leaves(resumed, True),
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ------------------------------------------------------------------ FQL: one step by hand


def _fql(seed=0, **kwargs):
    torch.manual_seed(seed)
    policy = OneStepPolicy(OBS, ACT, num_cells=(8,)).double()
    flow = ShortcutModel(VelocityMLP(OBS, ACT, (8,)), OBS, ACT).double()
    critic = QEnsemble(OBS, ACT, num_cells=(8,), condition_on_steps=False).double()
    return FQLLoss(policy, flow, critic, **kwargs)


@pytest.mark.parametrize("target_from_pre_step", [True, False])
def test_fql_updates_match_a_hand_written_loop(target_from_pre_step):
    loss = _fql()
    update = JointUpdateStep(loss, tau=0.2, target_from_pre_step=target_from_pre_step)
    reference = copy.deepcopy(loss)  # evaluates the summed loss at the same weights
    params = list(reference.parameters())
    target_leaves = list(reference.target_qvalue_network_params.values(True, True))
    source_leaves = list(reference.qvalue_network_params.values(True, True))
    adam = ref.Adam(lr=3e-4)
    numpy_params = [_np(p) for p in params]
    for step in (1, 2):
        batch = make_batch(B, OBS, ACT, seed=step).double()
        torch.manual_seed(10 + step)
        info = update(batch.clone())
        torch.manual_seed(10 + step)
        inputs = reference.read_batch(batch)
        terms = reference.compute_terms(inputs, reference.draw_randomness(inputs))
        total = terms["loss_qvalue"] + terms["loss_bc_flow"] + terms["loss_actor"]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        grads = [np.zeros_like(p) if g is None else _np(g) for p, g in zip(numpy_params, grads)]
        old = {id(t): _np(s) for t, s in zip(target_leaves, source_leaves)}
        numpy_params = adam.step(numpy_params, grads)
        with torch.no_grad():
            for p, value in zip(params, numpy_params):
                p.copy_(torch.from_numpy(value))
            for t, s in zip(target_leaves, source_leaves):
                toward = old[id(t)] if target_from_pre_step else to_np(s)
                t.copy_(torch.from_numpy(0.8 * to_np(t) + 0.2 * toward))
        np.testing.assert_allclose(info["total_loss"].item(), total.item(), rtol=1e-12)
        norm = np.sqrt(sum((g**2).sum() for g in grads))
        np.testing.assert_allclose(info["grad_norm"].item(), norm, rtol=1e-10)
        for got, want in zip(loss.parameters(), reference.parameters()):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)
        got_targets = loss.target_qvalue_network_params.values(True, True)
        for got, want in zip(got_targets, target_leaves):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_adam_moves_every_parameter_and_the_targets_start_equal():
    loss = _fql()
    update = JointUpdateStep(loss)
    for online, target in zip(
        loss.qvalue_network_params.values(True, True),
        loss.target_qvalue_network_params.values(True, True),
    ):
        torch.testing.assert_close(online.detach(), target)
    before = [p.detach().clone() for p in loss.parameters()]
    update(make_batch(B, OBS, ACT).double())
    assert all(p.grad is not None for p in loss.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, loss.parameters()))


def test_building_the_step_keeps_restored_targets():
    loss = _fql()
    JointUpdateStep(loss)
    with torch.no_grad():
        for t in loss.target_qvalue_network_params.values(True, True):
            t.add_(1.0)
    state = loss.state_dict()
    fresh = _fql(seed=3)
    fresh.load_state_dict(state)
    JointUpdateStep(fresh)  # torchrl's SoftUpdate alone would copy the online weights
    for key, value in state.items():
        torch.testing.assert_close(fresh.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_resume_is_exact():
    def run(update, steps):
        for step in steps:
            torch.manual_seed(step)
            update(make_batch(B, OBS, ACT, seed=step).double())

    straight = JointUpdateStep(_fql())
    run(straight, [1, 2, 3])
    first = JointUpdateStep(_fql())
    run(first, [1, 2])
    saved = copy.deepcopy({"loss": first.loss.state_dict(), "update": first.state_dict()})
    resumed = JointUpdateStep(_fql(seed=5))
    resumed.loss.load_state_dict(saved["loss"])
    resumed.load_state_dict(saved["update"])
    assert resumed.state_dict()["step"] == 2
    run(resumed, [3])
    for a, b in zip(straight.loss.state_dict().values(), resumed.loss.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_deep_copy_trains_its_own_weights():
    update = JointUpdateStep(_fql())
    twin = copy.deepcopy(update)
    before = [p.detach().clone() for p in update.loss.parameters()]
    twin(make_batch(B, OBS, ACT).double())
    assert all(torch.equal(b, p) for b, p in zip(before, update.loss.parameters()))
    assert not all(torch.equal(b, p) for b, p in zip(before, twin.loss.parameters()))


def test_priority_and_diagnostics_are_detached():
    update = JointUpdateStep(_fql())
    batch = make_batch(B, OBS, ACT).double()
    info = update(batch)
    assert batch["td_error"].shape == (B,)
    assert not any(value.requires_grad for value in info.values())
    assert {"total_loss", "grad_norm", "full_update", "q_mean"} <= set(info.keys())


def test_bad_settings_raise():
    with pytest.raises(SettingError, match="tau"):
        JointUpdateStep(_fql(), tau=1.5)
    with pytest.raises(SettingError, match="lr"):
        JointUpdateStep(_fql(), lr=0)
    with pytest.raises(ValueError, match="compile"):
        JointUpdateStep(ToyLoss(), compile=True)
    with pytest.raises(SettingError, match="delay"):
        JointUpdateStep(ToyLoss(delay=0))
    with pytest.raises(ValueError, match="entries"):
        JointUpdateStep(_fql()).load_state_dict({"shared": {}})

    class BadDelayed(ToyTermsLoss):
        DELAYED_TERMS = ("actor",)

    with pytest.raises(ValueError, match="DELAYED_TERMS"):
        JointUpdateStep(BadDelayed())


@pytest.mark.slow
def test_compiled_update_matches_eager():
    eager, compiled = JointUpdateStep(_fql()), JointUpdateStep(_fql(), compile=True)
    for step in (1, 2):
        batch = make_batch(B, OBS, ACT, seed=step).double()
        torch.manual_seed(step)
        a = eager(batch.clone())
        torch.manual_seed(step)
        b = compiled(batch.clone())
        torch.testing.assert_close(a["total_loss"], b["total_loss"], rtol=1e-9, atol=1e-12)
    assert compiled.is_compiled
    for x, y in zip(eager.loss.parameters(), compiled.loss.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-8, atol=1e-10)
