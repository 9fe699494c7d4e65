"""Every fast execution mode gives the losses and parameters of the module (eager) path.

The module path (parameters swapped into the modules, one module call per network
evaluation) is the one checked against NumPy hand computations in ``test_loss.py``. A
forward hook on the actor's network forces it, since the pure-tensor fast path would skip
hooks. The fast path and the compiled loss bodies must reproduce it within float rounding,
from the same seeds.
"""

import copy

import pytest
import torch
from helpers import make_batch

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.modules.functional import (
    ensemble_forward,
    ensemble_layers,
    velocity_forward,
    velocity_layers,
    velocity_observation_part,
)
from sorl_torchrl.modules.networks import EnsembleMLP, make_velocity_mlp

OBS, ACT = 4, 2


def _force_module_path(loss):
    return loss.actor_network.module.network.register_forward_pre_hook(lambda m, a: None)


def _make_loss(dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    actor = ShortcutActor(OBS, ACT, num_cells=(16, 16)).to(dtype)
    critic = QEnsemble(OBS, ACT, num_cells=(16, 16)).to(dtype)
    with torch.no_grad():  # non-zero biases and LayerNorm affines
        for p in list(actor.parameters()) + list(critic.parameters()):
            p.add_(torch.randn_like(p) * 0.1)
    loss = ShortcutLoss(actor, critic, **kwargs)
    SORLUpdateStep(loss)  # attaches the target updater
    with torch.no_grad():
        for t in loss.target_actor_network_params.values(True, True):
            t.add_(torch.randn_like(t) * 0.1)
    return loss


def _leaves(params):
    return [p.detach().clone() for p in params.values(True, True)]


def test_velocity_forward_equals_module_on_concatenated_input():
    net = make_velocity_mlp(OBS + ACT + 2, ACT, (16, 16)).double()
    plan, params = velocity_layers(net, OBS), list(net.parameters())
    s, x = torch.randn(6, OBS, dtype=torch.float64), torch.randn(6, ACT, dtype=torch.float64)
    t = torch.rand(6, 1, dtype=torch.float64)
    d = torch.randint(4, (6, 1)).double()
    fast = velocity_forward(plan, params, velocity_observation_part(plan, params, s), x, t, d)
    torch.testing.assert_close(fast, net(torch.cat([s, x, t, d], -1)), rtol=1e-12, atol=1e-12)


def test_ensemble_forward_equals_module():
    mlp = EnsembleMLP(3, 7, 1, num_cells=(8, 8)).double()
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(5, 7, dtype=torch.float64)
    got = ensemble_forward(ensemble_layers(mlp), list(mlp.parameters()), x)
    torch.testing.assert_close(got, mlp(x), rtol=1e-12, atol=1e-12)


def test_non_default_networks_have_no_plan():
    relu = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert velocity_layers(relu, OBS) is None
    erf = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU(), torch.nn.Linear(4, 2))
    assert velocity_layers(erf, OBS) is None
    assert ensemble_layers(torch.nn.Linear(3, 3)) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(sc_target_network="online", next_action_grad=False),
        dict(q_agg="min", actor_q_agg=None, normalize_q_loss=False),
    ],
)
def test_fast_path_losses_and_gradients_equal_module_path(kwargs):
    fast = _make_loss(**kwargs)
    slow = copy.deepcopy(fast)
    handle = _force_module_path(slow)
    assert fast._fast() and not slow._fast()
    batch = make_batch(24, OBS, ACT).double()
    results = []
    for loss in (fast, slow):
        torch.manual_seed(3)
        loss_q, meta_q = loss.qvalue_loss(batch)
        loss_a, meta_a = loss.actor_loss(batch)
        params = list(loss.actor_network_params.values(True, True)) + list(
            loss.qvalue_network_params.values(True, True)
        )
        grads = torch.autograd.grad(loss_q + loss_a, params, allow_unused=True)
        results.append((loss_q, loss_a, meta_q, meta_a, grads))
    handle.remove()
    (fq, fa, fmq, fma, fg), (sq, sa, smq, sma, sg) = results
    torch.testing.assert_close(fq, sq, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fa, sa, rtol=1e-10, atol=1e-12)
    for key in ("fm_loss", "sc_loss", "q_loss", "lambda", "actor_bptt_steps"):
        torch.testing.assert_close(fma[key], sma[key], rtol=1e-10, atol=1e-12)
    for key in ("q_mean", "target_value", "td_error"):
        torch.testing.assert_close(fmq[key], smq[key], rtol=1e-10, atol=1e-12)
    for a, b in zip(fg, sg, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def _run_updates(loss, n, **update_kwargs):
    update = SORLUpdateStep(loss, lr=1e-3, **update_kwargs)
    infos = []
    for it in range(n):
        torch.manual_seed(100 + it)
        infos.append(update(make_batch(32, OBS, ACT, seed=it)))
    return infos


def _assert_same_run(loss_a, infos_a, loss_b, infos_b, rtol, atol):
    for ia, ib in zip(infos_a, infos_b, strict=True):
        for key in ("loss_qvalue", "loss_actor", "fm_loss", "sc_loss", "q_loss"):
            torch.testing.assert_close(ia[key], ib[key], rtol=rtol, atol=atol)
    for name in (
        "actor_network_params",
        "qvalue_network_params",
        "target_actor_network_params",
        "target_qvalue_network_params",
    ):
        for a, b in zip(
            _leaves(getattr(loss_a, name)), _leaves(getattr(loss_b, name)), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_fast_update_equals_module_path_update():
    fast = _make_loss(torch.float32, max_bptt_steps=4)
    slow = copy.deepcopy(fast)
    _force_module_path(slow)
    infos_fast = _run_updates(fast, 4)
    infos_slow = _run_updates(slow, 4)
    _assert_same_run(fast, infos_fast, slow, infos_slow, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "max-autotune-no-cudagraphs"])
def test_compiled_update_equals_eager_update(mode):
    """Compiled loss bodies (one graph per k, forward and backward) follow eager exactly."""
    eager = _make_loss(torch.float32, max_bptt_steps=2)
    compiled = copy.deepcopy(eager)
    infos_eager = _run_updates(eager, 4)
    torch._dynamo.reset()
    infos_compiled = _run_updates(compiled, 4, compile=mode)
    assert set(compiled._compiled_terms) == {"td", "actor"}, "compilation fell back to eager"
    _assert_same_run(eager, infos_eager, compiled, infos_compiled, rtol=1e-4, atol=1e-5)


def test_compile_falls_back_to_eager_for_custom_networks():
    actor = ShortcutActor(
        OBS,
        ACT,
        network=torch.nn.Sequential(torch.nn.Linear(OBS + ACT + 2, 8), torch.nn.ReLU()),
    )
    actor.module.network.append(torch.nn.Linear(8, ACT))
    loss = ShortcutLoss(actor, QEnsemble(OBS, ACT, num_cells=(8,)))
    with pytest.warns(UserWarning, match="not the default"):
        update = SORLUpdateStep(loss, compile=True)
    info = update(make_batch(8, OBS, ACT))
    assert torch.isfinite(info["loss_actor"])


def test_bfloat16_matmul_precision_stays_within_bfloat16_tolerance():
    """``torch.set_float32_matmul_precision("medium")`` (bf16 GEMMs where the CPU has them)
    changes the first update's losses by no more than bfloat16 rounding."""
    exact = _make_loss(torch.float32, max_bptt_steps=4)
    reduced = copy.deepcopy(exact)
    infos_exact = _run_updates(exact, 1)
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        infos_reduced = _run_updates(reduced, 1)
    finally:
        torch.set_float32_matmul_precision(previous)
    for key in ("loss_qvalue", "fm_loss", "sc_loss", "q_loss"):
        torch.testing.assert_close(
            infos_reduced[0][key], infos_exact[0][key], rtol=2e-2, atol=2e-3, msg=key
        )
