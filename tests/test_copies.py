"""Copies and pickles of compiled objects compute with their own state, not the original's.

Each object is compiled and called once before it is copied, so the original's compiled
functions exist when the copy is made.
"""

import copy
import pickle

import pytest
import torch
from helpers import make_batch

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep, VerifierSampler

OBS, ACT = 3, 2


def _duplicate(obj, how):
    return copy.deepcopy(obj) if how == "deepcopy" else pickle.loads(pickle.dumps(obj))


def _critic_targets(update, batch):
    """The TD targets of the update step's compiled critic loss on ``batch``."""
    inputs = update.loss.read_batch(batch)
    draws = update.loss.draw_critic_randomness(inputs)
    _, _, target = update.loss._critic_objective(**inputs, **draws)  # eager, for reference
    _, meta = update._run("_critic_forward", *inputs.values(), draws["noise"], draws["num_steps"])
    return target.detach(), meta["target_value"]


@pytest.fixture(scope="module")
def compiled_update():
    torch.manual_seed(0)
    actor, critic = ShortcutActor(OBS, ACT, num_cells=(8,)), QEnsemble(OBS, ACT, num_cells=(8,))
    # one step count, so one graph per loss: the test is about ownership, not about k
    loss = ShortcutLoss(actor, critic, max_bptt_steps=1, discount=0.9)
    update = SORLUpdateStep(loss, lr=1e-2, compile=True)
    update(make_batch(8, OBS, ACT))
    assert update.is_compiled
    return update


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_update_step_uses_its_own_loss_settings(compiled_update, how):
    twin = _duplicate(compiled_update, how)
    twin.loss.discount = 0.0
    batch = make_batch(8, OBS, ACT, seed=5)
    batch["next", "reward"].zero_()
    targets, mean_target = _critic_targets(twin, batch)
    assert torch.equal(targets, torch.zeros_like(targets))  # r + 0 * ... = 0
    assert mean_target.item() == 0.0
    assert twin.is_compiled
    _, original_mean = _critic_targets(compiled_update, batch)
    assert original_mean.item() != 0.0  # the original keeps discount 0.9


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_update_step_trains_its_own_weights(compiled_update, how):
    twin = _duplicate(compiled_update, how)
    before = [p.detach().clone() for p in compiled_update.actor_params]
    twin_before = [p.detach().clone() for p in twin.actor_params]
    twin(make_batch(8, OBS, ACT, seed=6))
    for p, q in zip(compiled_update.actor_params, before):
        assert torch.equal(p, q)  # the original is untouched
    assert any(not torch.equal(p, q) for p, q in zip(twin.actor_params, twin_before))
    # the pre-step snapshot reads the twin's own weights (views rebuilt after a pickle)
    twin._snapshot()
    for snap, p in zip(twin._pre_actor_list, twin.actor_params):
        assert torch.equal(snap, p.detach())
    assert twin.optimizers["shared"].param_groups[0]["params"][0] is twin.actor_params[0]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_compiled_verifier_scores_with_its_own_critic(how):
    torch.manual_seed(1)
    actor, critic = ShortcutActor(OBS, ACT, num_cells=(8,)), QEnsemble(OBS, ACT, num_cells=(8,))
    policy = VerifierSampler(actor, critic, num_candidates=4, compile=True)
    obs, noise = torch.randn(5, OBS), torch.randn(5, 4, ACT)
    _, _, scores = policy.select(obs, noise=noise)
    twin = _duplicate(policy, how)
    with torch.no_grad():
        for p in twin.critic.parameters():
            p.mul_(-1.0)
    _, _, twin_scores = twin.select(obs, noise=noise)
    eager = VerifierSampler(twin.actor, twin.critic, num_candidates=4)
    torch.testing.assert_close(twin_scores, eager.select(obs, noise=noise)[2])
    assert not torch.allclose(twin_scores, scores)
    assert twin.is_compiled
