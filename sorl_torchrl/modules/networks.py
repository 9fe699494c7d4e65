"""Network building blocks: the velocity MLP and the batched critic ensemble MLP.

The numerics follow the released SORL code (flax): Glorot-uniform weights
(``variance_scaling(1, "fan_avg", "uniform")``), zero biases, tanh-approximated GELU and,
in the critic, ``Linear -> GELU -> LayerNorm(eps=1e-6)`` per hidden layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "DEFAULT_NUM_CELLS",
    "EnsembleLinear",
    "EnsembleMLP",
    "glorot_init_",
    "make_velocity_mlp",
]

#: Hidden sizes of the paper's actor and critic networks (4 x 512).
DEFAULT_NUM_CELLS: tuple[int, ...] = (512, 512, 512, 512)


def glorot_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every ``nn.Linear`` in ``module`` (in place).

    Examples:
        >>> net = glorot_init_(nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)))
        >>> float(net[0].bias.detach().abs().sum())
        0.0
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    return module


def make_velocity_mlp(
    in_features: int,
    out_features: int,
    num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
    activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """The SORL actor's MLP: ``Linear -> GELU`` per hidden layer, then a linear output.

    Args:
        in_features: input size (``observation_dim + action_dim + 2`` for the velocity field).
        out_features: output size (the action dimension).
        num_cells: hidden layer sizes; the paper uses four layers of 512.
        activation: activation class; default tanh-approximated GELU (flax's default).

    Returns:
        A Glorot-initialised ``nn.Sequential``.

    Examples:
        >>> mlp = make_velocity_mlp(10, 2, num_cells=(32, 32))
        >>> mlp(torch.zeros(5, 10)).shape
        torch.Size([5, 2])
    """
    layers: list[nn.Module] = []
    width = in_features
    for cells in num_cells:
        layers.append(nn.Linear(width, cells))
        layers.append(activation() if activation is not None else nn.GELU(approximate="tanh"))
        width = cells
    layers.append(nn.Linear(width, out_features))
    return glorot_init_(nn.Sequential(*layers))


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers applied in one batched matrix product.

    Weights are stored stacked, ``weight: [E, in, out]`` and ``bias: [E, 1, out]``, and each
    member is initialised on its own (Glorot-uniform on its ``[in, out]`` slice, zero bias).

    Args:
        num_members: ensemble size ``E``.
        in_features: input size.
        out_features: output size.

    Examples:
        >>> layer = EnsembleLinear(3, 4, 2)
        >>> layer(torch.randn(3, 10, 4)).shape
        torch.Size([3, 10, 2])
    """

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Independent Glorot-uniform init per member, zero biases."""
        bound = math.sqrt(6.0 / (self.in_features + self.out_features))
        with torch.no_grad():
            for member in range(self.num_members):
                self.weight[member].uniform_(-bound, bound)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply member ``e`` to ``x[e]``: ``[E, N, in] -> [E, N, out]``."""
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in={self.in_features}, out={self.out_features}"


class _EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine (scale, shift) per member."""

    def __init__(self, num_members: int, features: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_members, 1, features))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps)
        return torch.addcmul(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """``E`` independent MLPs evaluated together with batched GEMMs.

    Each member is ``[Linear -> GELU -> LayerNorm] x len(num_cells) -> Linear`` (the SORL
    critic's order; torchrl's ``MLP`` would put the norm before the activation).

    Args:
        num_members: ensemble size ``E``.
        in_features: input size.
        out_features: output size per member.
        num_cells: hidden layer sizes.
        layer_norm: add a LayerNorm after every hidden activation.
        layer_norm_eps: LayerNorm epsilon (flax default ``1e-6``).

    Examples:
        >>> mlp = EnsembleMLP(2, 6, 1, num_cells=(16, 16))
        >>> mlp(torch.randn(7, 6)).shape  # a shared input is broadcast to every member
        torch.Size([2, 7, 1])
    """

    def __init__(
        self,
        num_members: int,
        in_features: int,
        out_features: int,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        layer_norm: bool = True,
        layer_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_members = num_members
        self.in_features = in_features
        layers: list[nn.Module] = []
        width = in_features
        for cells in num_cells:
            layers.append(EnsembleLinear(num_members, width, cells))
            layers.append(nn.GELU(approximate="tanh"))
            if layer_norm:
                layers.append(_EnsembleLayerNorm(num_members, cells, layer_norm_eps))
            width = cells
        layers.append(EnsembleLinear(num_members, width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in]`` (shared by all members) or ``[E, N, in]`` -> ``[E, N, out]``."""
        if x.ndim == 2:
            x = x.expand(self.num_members, *x.shape)
        return self.layers(x)
