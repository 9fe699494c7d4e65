"""Small builders shared by the core tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from sorl_torchrl import QEnsemble, ShortcutActor


def linear_actor(obs_dim: int, act_dim: int, seed: int = 0) -> ShortcutActor:
    """An actor whose velocity network is one Linear layer with fixed, seeded weights."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Linear(obs_dim + act_dim + 2, act_dim)
    with torch.no_grad():
        net.weight.copy_(torch.randn(net.weight.shape, generator=gen) * 0.3)
        net.bias.copy_(torch.randn(net.bias.shape, generator=gen) * 0.1)
    return ShortcutActor(obs_dim, act_dim, network=net)


def small_critic(obs_dim: int, act_dim: int, **kwargs) -> QEnsemble:
    return QEnsemble(obs_dim, act_dim, num_cells=(8, 8), **kwargs)


def make_batch(batch_size: int, obs_dim: int, act_dim: int, seed: int = 1) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(batch_size, 1, dtype=torch.bool)
    terminated[::3] = True
    return TensorDict(
        {
            "observation": torch.randn(batch_size, obs_dim, generator=gen),
            "action": torch.rand(batch_size, act_dim, generator=gen) * 2 - 1,
            "next": {
                "observation": torch.randn(batch_size, obs_dim, generator=gen),
                "reward": -torch.rand(batch_size, 1, generator=gen),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        batch_size=[batch_size],
    )
