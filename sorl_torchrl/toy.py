"""A toy offline problem for smoke runs, tests and tutorials: a bimodal one-step bandit.

The dataset's actions come from two modes, ``+center`` and ``-center`` (Gaussian, equal
weights); the reward is 1 for actions of the ``+`` mode and 0 for the ``-`` mode, and every
transition terminates, so the true ``Q(s, a)`` is the reward. Behaviour cloning must reproduce
both modes; an offline RL policy should move to the ``+`` mode.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

__all__ = ["bimodal_bandit_batch", "mode_fractions"]


def bimodal_bandit_batch(
    batch_size: int,
    action_dim: int = 2,
    observation_dim: int = 1,
    center: float = 0.6,
    std: float = 0.05,
    generator: torch.Generator | None = None,
) -> TensorDict:
    """Draw a TED batch of the bimodal bandit.

    Args:
        batch_size: number of transitions.
        action_dim: action size; the modes are ``+-center * ones(action_dim)``.
        observation_dim: observation size (observations are all zeros).
        center: distance of each mode from the origin along every axis.
        std: standard deviation of each mode.
        generator: optional RNG.

    Returns:
        A TensorDict with ``observation``, ``action``, ``("next", "observation")``,
        ``("next", "reward")`` (1 for the ``+`` mode), ``("next", "terminated")`` and
        ``("next", "done")`` (all true).

    Examples:
        >>> batch = bimodal_bandit_batch(4, generator=torch.Generator().manual_seed(0))
        >>> batch["action"].shape, batch["next", "reward"].shape
        (torch.Size([4, 2]), torch.Size([4, 1]))
    """
    sign = torch.randint(2, (batch_size, 1), generator=generator).float() * 2 - 1
    noise = torch.randn(batch_size, action_dim, generator=generator)
    action = (sign * center + std * noise).clamp(-1 + 1e-5, 1 - 1e-5)
    ones = torch.ones(batch_size, 1, dtype=torch.bool)
    zeros = torch.zeros(batch_size, observation_dim)
    return TensorDict(
        {
            "observation": zeros,
            "action": action,
            "next": {
                "observation": zeros.clone(),
                "reward": (sign > 0).float(),
                "terminated": ones,
                "done": ones.clone(),
            },
        },
        batch_size=[batch_size],
    )


def mode_fractions(
    actions: torch.Tensor, center: float = 0.6, radius: float = 0.25
) -> tuple[float, float]:
    """Fractions of ``actions`` within ``radius`` of the ``+`` and of the ``-`` mode.

    Examples:
        >>> mode_fractions(torch.tensor([[0.6, 0.6], [-0.6, -0.6], [0.0, 0.0]]))
        (0.333..., 0.333...)
    """
    plus = (actions - center).norm(dim=-1) < radius
    minus = (actions + center).norm(dim=-1) < radius
    return plus.float().mean().item(), minus.float().mean().item()
