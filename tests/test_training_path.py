"""The code that trains is the code the NumPy reference checks, on the default networks.

``test_loss.py`` checks each public term on a one-layer actor (no first-layer split); here
the default :class:`VelocityMLP` actor (observation part computed once, FM and SC stacked)
is checked against the NumPy MLP reference through the very bodies the update step runs,
and execution choices that must not change the numbers (a custom network, a forward hook,
``torch.compile``) are checked against the eager default.
"""

import numpy as np
import pytest
import reference
import torch
from helpers import make_batch
from reference import EnsembleCritic, MLPVelocity, to_np

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.modules.networks import make_velocity_mlp

OBS, ACT, CELLS = 4, 2, (16, 8)


def _perturb(params, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def _loss(network=None, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    actor = ShortcutActor(OBS, ACT, network=network, num_cells=CELLS).to(dtype)
    critic = QEnsemble(OBS, ACT, num_cells=CELLS).to(dtype)
    _perturb(list(actor.parameters()) + list(critic.parameters()), 0.1, seed=1)
    loss = ShortcutLoss(actor, critic, **kwargs)
    SORLUpdateStep(loss)  # attaches the target updater
    _perturb(loss.target_actor_network_params.values(True, True), 0.2, seed=2)
    _perturb(loss.target_qvalue_network_params.values(True, True), 0.2, seed=3)
    return loss


def _critic_ref(params):
    critic = QEnsemble(OBS, ACT, num_cells=CELLS).double()
    params.to_module(critic)
    return EnsembleCritic.from_module(critic)


def _randomness(loss, size=12, seed=4):
    torch.manual_seed(seed)
    batch = loss.read_batch(make_batch(size, OBS, ACT, seed=seed).double())
    return batch, loss.draw_critic_randomness(batch), loss.draw_actor_randomness(batch)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_actor_objective_of_the_default_actor_matches_numpy(seed):
    loss = _loss()
    batch, _, draws = _randomness(loss, seed=seed)
    fm, sc, q_loss, q, lam = loss._actor_objective(batch["observation"], batch["action"], **draws)

    online = MLPVelocity.from_params(loss.actor_network_params)
    target = MLPVelocity.from_params(loss.target_actor_network_params)
    s, a1 = to_np(batch["observation"]), to_np(batch["action"])
    fm_ref = reference.flow_matching(
        online, s, a1, to_np(draws["fm_noise"]), to_np(draws["fm_time"]), 3.0
    )
    sc_ref = reference.self_consistency(
        online,
        target,
        s,
        a1,
        to_np(draws["sc_noise"]),
        to_np(draws["sc_time"]),
        to_np(draws["step_codes"]),
    )
    q_ref, q_values = reference.q_loss(
        online,
        _critic_ref(loss.qvalue_network_params),
        s,
        to_np(draws["q_noise"]),
        draws["num_steps"],
    )
    np.testing.assert_allclose(fm.item(), fm_ref, rtol=1e-10)
    np.testing.assert_allclose(sc.item(), sc_ref, rtol=1e-10)
    np.testing.assert_allclose(q_loss.item(), q_ref, rtol=1e-10)
    np.testing.assert_allclose(to_np(q), q_values, rtol=1e-10)


@pytest.mark.parametrize("seed", [4, 5])
def test_critic_objective_of_the_default_actor_matches_numpy(seed):
    loss = _loss(q_agg="min")
    batch, draws, _ = _randomness(loss, seed=seed)
    value, _, target = loss._critic_objective(**batch, **draws)
    expected, y = reference.td_loss(
        MLPVelocity.from_params(loss.actor_network_params),
        _critic_ref(loss.qvalue_network_params),
        _critic_ref(loss.target_qvalue_network_params),
        *(to_np(batch[k]) for k in ("observation", "action", "next_observation", "reward")),
        to_np(batch["mask"]),
        to_np(draws["noise"]),
        draws["num_steps"],
        0.99,
        "min",
    )
    np.testing.assert_allclose(value.item(), expected, rtol=1e-10)
    np.testing.assert_allclose(to_np(target), y, rtol=1e-10)


def test_public_terms_equal_the_training_body():
    loss = _loss()
    batch, _, d = _randomness(loss)
    obs, act = batch["observation"], batch["action"]
    fm, sc, q_loss, _, _ = loss._actor_objective(obs, act, **d)
    torch.testing.assert_close(fm, loss.flow_matching_loss(obs, act, d["fm_noise"], d["fm_time"]))
    torch.testing.assert_close(
        sc, loss.self_consistency_loss(obs, act, d["sc_noise"], d["sc_time"], d["step_codes"])
    )
    torch.testing.assert_close(q_loss, loss.q_loss(obs, d["q_noise"], d["num_steps"])[0])


def _train(loss, steps=6, **update_kwargs):
    update = SORLUpdateStep(loss, lr=1e-3, **update_kwargs)
    torch.manual_seed(11)
    infos = [
        update(make_batch(16, OBS, ACT, seed=20 + i).to(loss.qvalue_network_params.dtype))
        for i in range(steps)
    ]
    return infos, [p.detach().clone() for p in loss.actor_network_params.values(True, True)]


def test_custom_network_trains_like_the_default_with_the_same_weights():
    """The first-layer split and the stacking save work without changing the numbers."""
    default = _loss()
    plain = make_velocity_mlp(OBS + ACT + 2, ACT, CELLS).double()
    plain.load_state_dict(default.actor_network.module.network.state_dict())
    custom = _loss(network=plain)
    custom.load_state_dict(default.state_dict())
    assert not custom.actor_network.module.splits_observation
    infos_a, actor_a = _train(default)
    infos_b, actor_b = _train(custom)
    for a, b in zip(infos_a, infos_b):
        torch.testing.assert_close(a["loss_actor"], b["loss_actor"], rtol=1e-10, atol=1e-12)
    for a, b in zip(actor_a, actor_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_forward_hook_changes_nothing():
    """Hooks used to switch training to another code path; now there is one."""
    plain_run = _train(_loss())
    hooked = _loss()
    calls = []
    for layer in hooked.actor_network.module.network[1:]:
        layer.register_forward_hook(lambda m, a, out: calls.append(1))
    hooked_run = _train(hooked)
    assert calls  # the hooks of the layers after the split run
    for a, b in zip(plain_run[1], hooked_run[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("shared", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_compiled_iteration_equals_eager(shared):
    # two step counts (k = 1, 2): two graphs per loss, each used several times
    eager_loss = _loss(dtype=torch.float32, max_bptt_steps=2)
    compiled_loss = _loss(dtype=torch.float32, max_bptt_steps=2)
    compiled_loss.load_state_dict(eager_loss.state_dict())
    eager_infos, eager_actor = _train(eager_loss, steps=8, shared_optimizer=shared)
    update = SORLUpdateStep(compiled_loss, lr=1e-3, shared_optimizer=shared, compile=True)
    torch.manual_seed(11)
    infos = [update(make_batch(16, OBS, ACT, seed=20 + i)) for i in range(8)]
    assert update.is_compiled and not update.compile_failures
    assert {int(i["actor_bptt_steps"]) for i in infos} | {
        int(i["critic_bptt_steps"]) for i in infos
    } == {1, 2}  # both graphs were built and used
    for a, b in zip(eager_infos, infos):
        for key in ("loss_actor", "loss_qvalue", "fm_loss", "q_mean"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    compiled_actor = [p.detach() for p in compiled_loss.actor_network_params.values(True, True)]
    for a, b in zip(eager_actor, compiled_actor):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_precompile_builds_every_graph_up_front_and_changes_no_number():
    """After ``precompile`` the loop compiles nothing, and trains exactly like eager."""
    from torch._dynamo.utils import counters

    eager_loss = _loss(dtype=torch.float32, max_bptt_steps=2)
    compiled_loss = _loss(dtype=torch.float32, max_bptt_steps=2)
    compiled_loss.load_state_dict(eager_loss.state_dict())
    eager_infos, eager_actor = _train(eager_loss, steps=8)
    update = SORLUpdateStep(compiled_loss, lr=1e-3, compile=True)
    torch.manual_seed(11)
    compiled = []
    seconds = update.precompile(make_batch(16, OBS, ACT, seed=99), progress=compiled.append)
    assert compiled == [1, 2] and seconds > 0
    assert all(p.grad is None for p in update.actor_params + update.critic_params)
    graphs = counters["stats"]["unique_graphs"]
    infos = [update(make_batch(16, OBS, ACT, seed=20 + i)) for i in range(8)]
    assert counters["stats"]["unique_graphs"] == graphs  # no compilation inside the loop
    assert update.is_compiled and not update.compile_failures
    for a, b in zip(eager_infos, infos):
        for key in ("loss_actor", "loss_qvalue", "fm_loss", "q_mean"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    compiled_actor = [p.detach() for p in compiled_loss.actor_network_params.values(True, True)]
    for a, b in zip(eager_actor, compiled_actor):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_precompile_of_an_eager_update_step_does_nothing():
    update = SORLUpdateStep(_loss(dtype=torch.float32))
    assert update.precompile(make_batch(16, OBS, ACT, seed=1)) == 0.0
