"""Behaviour on the toy bimodal bandit: BC keeps both modes, the Q loss picks the rewarded one."""

import pytest
import torch

from sorl_torchrl.smoke import train_toy
from sorl_torchrl.toy import mode_fractions

UPDATES = 1500
CELLS = (64, 64, 64)


@pytest.fixture(scope="module")
def bc_actor():
    actor, _, _ = train_toy(0.0, UPDATES, num_cells=CELLS, lr=3e-3, seed=0, progress=False)
    return actor


@pytest.fixture(scope="module")
def sorl_actor():
    actor, _, _ = train_toy(30.0, UPDATES, num_cells=CELLS, lr=3e-3, seed=0, progress=False)
    return actor


def _samples(actor, k, n=4000):
    torch.manual_seed(123)
    with torch.no_grad():
        return actor.sample(torch.zeros(n, 1), k)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_flow_matching_and_self_consistency_reproduce_both_modes(bc_actor, k):
    plus, minus = mode_fractions(_samples(bc_actor, k))
    assert 0.3 <= plus <= 0.7 and 0.3 <= minus <= 0.7, (plus, minus)
    assert plus + minus >= 0.8, f"only {plus + minus:.2f} of {k}-step samples land on a mode"


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_q_loss_moves_the_policy_to_the_rewarded_mode(bc_actor, sorl_actor, k):
    closer_to_plus = (_samples(sorl_actor, k).sum(-1) > 0).float().mean().item()
    bc_closer_to_plus = (_samples(bc_actor, k).sum(-1) > 0).float().mean().item()
    assert 0.35 <= bc_closer_to_plus <= 0.65
    assert closer_to_plus >= 0.75, closer_to_plus
    assert closer_to_plus >= bc_closer_to_plus + 0.2
