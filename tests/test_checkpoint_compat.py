"""Checkpoints written before the one-implementation core still load and resume exactly.

``fixtures/old_checkpoint.pt`` was written by the code of commit 701d18a (see
``fixtures/make_old_checkpoint.py``): the state after 3 updates, then the losses and the
weights that code reached after 4 more. Today's code must load it strictly and reach the
same numbers; and a run interrupted and resumed today must match an uninterrupted one bit
for bit.
"""

from pathlib import Path

import torch
from helpers import make_batch

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import get_rng_state, load_checkpoint, set_rng_state

FIXTURE = Path(__file__).parent / "fixtures" / "old_checkpoint.pt"
OBS, ACT, CELLS, BATCH = 4, 2, (8, 8), 12


def _build():
    torch.manual_seed(123)  # any init: the checkpoint overwrites it
    loss = ShortcutLoss(
        ShortcutActor(OBS, ACT, num_cells=CELLS),
        QEnsemble(OBS, ACT, num_cells=CELLS),
        q_loss_coef=10.0,
    )
    return loss, SORLUpdateStep(loss, lr=1e-3)


def _restore(state):
    loss, update = _build()
    loss.load_state_dict(state["loss"])  # strict: every key of the old layout is known
    update.load_state_dict(state["optimizers"])
    set_rng_state(state["rng"])
    return loss, update


def test_old_checkpoint_loads_and_continues_to_the_old_numbers():
    state = load_checkpoint(FIXTURE)
    loss, update = _restore(state)
    assert set(loss.state_dict()) == set(state["loss"])
    expected = state["expected"]
    for i, (actor_loss, qvalue_loss) in enumerate(
        zip(expected["losses"]["loss_actor"], expected["losses"]["loss_qvalue"])
    ):
        info = update(make_batch(BATCH, OBS, ACT, seed=state["step"] + i))
        torch.testing.assert_close(info["loss_actor"].item(), actor_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(info["loss_qvalue"].item(), qvalue_loss, rtol=1e-5, atol=1e-6)
    for key, value in expected["loss_state"].items():
        torch.testing.assert_close(loss.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(tmp_path):
    loss, update = _build()
    for step in range(6):
        update(make_batch(BATCH, OBS, ACT, seed=step))
    straight = {k: v.clone() for k, v in loss.state_dict().items()}

    loss, update = _build()
    for step in range(3):
        update(make_batch(BATCH, OBS, ACT, seed=step))
    path = tmp_path / "checkpoint.pt"
    torch.save(
        {"loss": loss.state_dict(), "optimizers": update.state_dict(), "rng": get_rng_state()},
        path,
    )
    torch.manual_seed(999)  # the resumed process starts from another RNG state
    resumed_loss, resumed_update = _restore(torch.load(path, weights_only=False))
    for step in range(3, 6):
        resumed_update(make_batch(BATCH, OBS, ACT, seed=step))
    for key, value in resumed_loss.state_dict().items():
        assert torch.equal(value, straight[key]), key
