"""Print each loss term next to its NumPy hand computation (the values the tests compare).

python tests/loss_table.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))

import reference  # noqa: E402
from test_loss import _critic_ref, _inputs, _loss, _online_velocity, _target_velocity  # noqa: E402


def rows() -> list[tuple[str, float, float]]:
    torch.manual_seed(0)  # as the tests' autouse fixture
    loss = _loss()
    f, f_tgt = _online_velocity(loss), _target_velocity(loss)
    critic = _critic_ref(loss, loss.qvalue_network_params)
    target_critic = _critic_ref(loss, loss.target_qvalue_network_params)
    obs, a1, a0 = _inputs()
    s, x1, x0 = map(reference.to_np, (obs, a1, a0))
    out = []
    t = torch.tensor([0, 1, 3, 5, 7, 2], dtype=torch.float64).unsqueeze(-1) / 8
    got = loss.flow_matching_loss(obs, a1, a0, t).item()
    out.append(("FM (code 3)", got, reference.flow_matching(f, s, x1, x0, t.numpy(), 3.0)))
    d = torch.tensor([2, 2, 1, 1, 0, 0], dtype=torch.float64).unsqueeze(-1)
    t = torch.tensor([0.25, 0.75, 0.0, 0.5, 0.0, 0.0], dtype=torch.float64).unsqueeze(-1)
    got = loss.self_consistency_loss(obs, a1, a0, t, d).item()
    hand = reference.self_consistency(f, f_tgt, s, x1, x0, t.numpy(), d.numpy())
    out.append(("SC (target actor, code d+1, half steps)", got, hand))
    for k in (1, 2, 4, 8):
        got = loss.q_loss(obs, a0, k)[0].item()
        out.append((f"Q loss (normalised), k={k}", got, reference.q_loss(f, critic, s, x0, k)[0]))
    g = torch.Generator().manual_seed(5)
    next_obs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    reward = -torch.rand(6, 1, generator=g, dtype=torch.float64)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64).unsqueeze(-1)
    s2, r, m = map(reference.to_np, (next_obs, reward, mask))
    for agg in ("mean", "min"):
        loss.q_agg = agg
        got = loss.td_loss(obs, a1, next_obs, reward, mask, a0, 4)[0].item()
        hand, _ = reference.td_loss(
            f, critic, target_critic, s, x1, s2, r, m, x0, 4, loss.discount, agg
        )
        out.append((f"TD loss, q_agg={agg}, k=4", got, hand))
    return out


if __name__ == "__main__":
    print("| term | ShortcutLoss | hand computation (NumPy) | abs. difference |")
    print("|---|---|---|---|")
    for name, got, hand in rows():
        print(f"| {name} | {got:.12f} | {hand:.12f} | {abs(got - hand):.1e} |")
