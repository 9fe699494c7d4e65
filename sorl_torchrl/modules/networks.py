"""Network building blocks: the velocity MLP and the batched critic ensemble MLP.

The numerics follow the released SORL code (flax): Glorot-uniform weights
(``variance_scaling(1, "fan_avg", "uniform")``), zero biases, tanh-approximated GELU and,
in the critic, ``Linear -> GELU -> LayerNorm(eps=1e-6)`` per hidden layer.

Each network owns its math: :class:`VelocityMLP` splits its first layer so the observation's
share is computed once per observation (:meth:`VelocityMLP.observation_part`) and reused by
every velocity evaluation on it (:meth:`VelocityMLP.velocity`); :class:`EnsembleMLP` runs
all critic members with batched matrix products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from sorl_torchrl._validation import FLAG, Each, Number, Settings

__all__ = [
    "DEFAULT_NUM_CELLS",
    "LAYER_SIZES",
    "SIZE",
    "EnsembleLinear",
    "EnsembleMLP",
    "TanhGELU",
    "VelocityMLP",
    "feature_column",
    "gelu_tanh",
    "glorot_init_",
    "make_velocity_mlp",
]

#: Hidden sizes of the paper's actor and critic networks (4 x 512).
DEFAULT_NUM_CELLS: tuple[int, ...] = (512, 512, 512, 512)

#: Check of a size (features, members): an integer >= 1.
SIZE = Number("[1, inf)", integer=True)
#: Check of hidden layer sizes (``num_cells``): a list of sizes; empty is one linear layer.
LAYER_SIZES = Each(SIZE, nonempty=False)
_MLP_SETTINGS = Settings(
    "MLP", {"in_features": SIZE, "out_features": SIZE, "num_cells": LAYER_SIZES}
)
_VELOCITY_SETTINGS = Settings("VelocityMLP", {"observation_dim": SIZE, "action_dim": SIZE})
_ENSEMBLE_SETTINGS = Settings(
    "EnsembleMLP",
    {
        "num_members": SIZE,
        "in_features": SIZE,
        "out_features": SIZE,
        "num_cells": LAYER_SIZES,
        "layer_norm": FLAG,
        "layer_norm_eps": Number("(0, inf)"),
    },
)

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class _GeluTanhFunction(torch.autograd.Function):
    """tanh-approximated GELU from in-place elementwise steps (see :func:`gelu_tanh`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        # t = tanh(C (x + A x^3)); y = x (1 + t) / 2
        t = (x * x).mul_(_GELU_A * _GELU_C).add_(_GELU_C).mul_(x).tanh_()
        ctx.save_for_backward(x, t)
        return (t + 1.0).mul_(x).mul_(0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, t = ctx.saved_tensors
        # dy/dx = (1 + t) / 2 + x (1 - t^2) C (1 + 3 A x^2) / 2
        p = (x * x).mul_(1.5 * _GELU_A * _GELU_C).add_(0.5 * _GELU_C).mul_(x)
        return (t * t).neg_().add_(1.0).mul_(p).add_(t, alpha=0.5).add_(0.5).mul_(grad)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh-approximated GELU written for speed, equal to PyTorch's up to float rounding.

    That is ``F.gelu(x, approximate="tanh")``.
    Eagerly it is composed from ``tanh`` and in-place arithmetic, with a hand-written
    backward that reuses the saved ``tanh``. Under ``torch.compile`` it is written as
    ``x * sigmoid(2 z)`` with ``z = C (x + A x^3)`` (the same function, since
    ``(1 + tanh z) / 2 = sigmoid(2 z)``), which inductor fuses with its derivative into one
    loop on a vectorised ``exp``; its vectorised ``tanh`` is slower on CPUs.

    Examples:
        >>> x = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
        >>> torch.allclose(gelu_tanh(x), F.gelu(x, approximate="tanh"))
        True
        >>> torch.autograd.gradcheck(gelu_tanh, (x,))
        True
        >>> compiled = torch.compile(gelu_tanh, fullgraph=True)
        >>> torch.allclose(compiled(x), F.gelu(x, approximate="tanh"))
        True
    """
    if torch.compiler.is_compiling():
        return x * torch.sigmoid((2.0 * _GELU_C) * (x + _GELU_A * x * x * x))
    return _GeluTanhFunction.apply(x)


class TanhGELU(nn.Module):
    """The tanh-approximated GELU (flax's default ``nn.gelu``) as a module.

    Computes :func:`gelu_tanh`; equal to ``nn.GELU(approximate="tanh")`` up to float
    rounding, and, like it, holds no parameters.

    Examples:
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(TanhGELU()(x), nn.GELU(approximate="tanh")(x), atol=1e-6)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`gelu_tanh` of ``x``."""
        return gelu_tanh(x)


def feature_column(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a ``[*B, 1]`` column matching ``like`` (``[*B, F]``) in dtype and device.

    A Python number becomes a filled tensor on the device (no host-to-device copy, so no
    synchronisation on a GPU); a tensor is broadcast.

    Examples:
        >>> feature_column(0.5, torch.zeros(3, 2)).flatten().tolist()
        [0.5, 0.5, 0.5]
    """
    batch = like.shape[:-1]
    if isinstance(value, torch.Tensor):
        return value.to(like.dtype).expand(*batch, 1)
    return like.new_full((*batch, 1), float(value))


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


def _mlp_layers(
    in_features: int,
    out_features: int,
    num_cells: Sequence[int],
    activation: type[nn.Module] | None,
) -> list[nn.Module]:
    sizes = _MLP_SETTINGS.check(
        {"in_features": in_features, "out_features": out_features, "num_cells": num_cells}
    )
    layers: list[nn.Module] = []
    width = sizes["in_features"]
    for cells in sizes["num_cells"]:
        layers.append(nn.Linear(width, cells))
        layers.append(activation() if activation is not None else TanhGELU())
        width = cells
    layers.append(nn.Linear(width, sizes["out_features"]))
    return layers


def make_velocity_mlp(
    in_features: int,
    out_features: int,
    num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
    activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """A plain MLP on the concatenated input: ``Linear -> GELU`` per hidden layer, then ``Linear``.

    This is the generic network: the actor feeds it ``concat(s, x_t, t, d)`` on every call.
    :class:`VelocityMLP` is the same MLP with the observation's share of its first layer
    computed once per observation (the actor's default).

    Args:
        in_features: input size (``observation_dim + action_dim + 2`` for the velocity field).
        out_features: output size (the action dimension).
        num_cells: hidden layer sizes; the paper uses four layers of 512.
        activation: activation class; default :class:`TanhGELU` (flax's default GELU).

    Returns:
        A Glorot-initialised ``nn.Sequential``.

    Examples:
        >>> mlp = make_velocity_mlp(10, 2, num_cells=(32, 32))
        >>> mlp(torch.zeros(5, 10)).shape
        torch.Size([5, 2])
    """
    return glorot_init_(
        nn.Sequential(*_mlp_layers(in_features, out_features, num_cells, activation))
    )


class VelocityMLP(nn.Sequential):
    """The SORL velocity network ``f(s, x, t, d)``: an MLP on ``concat(s, x, t, d)``.

    ``Linear -> GELU`` per hidden layer, then a linear output (paper: 4 x 512, tanh-GELU,
    Glorot-uniform init). Its first layer splits as ``W [s, x, t, d] + b = (W_s s + b) +
    W_r [x, t, d]``: :meth:`observation_part` computes ``W_s s + b`` once per observation
    and :meth:`velocity` adds the rest, so ``k`` Euler steps (and every loss term on the
    same observations and weights) pay for the observation once. Called as a module it
    takes the concatenated input, like any MLP. Its ``state_dict`` is that of the plain
    ``nn.Sequential`` of :func:`make_velocity_mlp` with the same sizes. The two methods
    call the layers after the first one as modules (their hooks run) but not the network
    itself or its first layer, whose weight they slice.

    Args:
        observation_dim: size of ``s``.
        action_dim: size of ``x`` and of the output.
        num_cells: hidden layer sizes.
        activation: activation class; default :class:`TanhGELU`.

    Examples:
        >>> net = VelocityMLP(3, 2, num_cells=(16,))
        >>> s, x = torch.randn(4, 3), torch.randn(4, 2)
        >>> t, d = torch.full((4, 1), 0.5), torch.full((4, 1), 2.0)
        >>> split = net.velocity(net.observation_part(s), x, 0.5, 2.0)
        >>> torch.allclose(split, net(torch.cat([s, x, t, d], -1)), atol=1e-6)
        True
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        activation: type[nn.Module] | None = None,
    ) -> None:
        sizes = _VELOCITY_SETTINGS.check(
            {"observation_dim": observation_dim, "action_dim": action_dim}
        )
        in_features = sizes["observation_dim"] + sizes["action_dim"] + 2
        super().__init__(*_mlp_layers(in_features, sizes["action_dim"], num_cells, activation))
        glorot_init_(self)
        self.observation_dim = sizes["observation_dim"]

    def __getitem__(self, index: int | slice) -> nn.Module:
        """A layer, or a slice of layers as a plain ``nn.Sequential``."""
        if isinstance(index, slice):
            return nn.Sequential(*list(self)[index])
        return super().__getitem__(index)

    def observation_part(self, observation: torch.Tensor) -> torch.Tensor:
        """``W_s s + b`` of the first layer, ``[*B, obs] -> [*B, hidden]``."""
        first = self[0]
        return F.linear(observation, first.weight[:, : self.observation_dim], first.bias)

    def velocity(
        self,
        observation_part: torch.Tensor,
        x: torch.Tensor,
        time: torch.Tensor | float,
        step_code: torch.Tensor | float,
    ) -> torch.Tensor:
        """``f(s, x, t, d)`` from :meth:`observation_part` of ``s``.

        Args:
            observation_part: ``[*Bs, hidden]``, broadcastable to ``x``'s batch shape.
            x: ``[*B, action_dim]``.
            time: ``t``, a float or a tensor broadcastable to ``[*B, 1]``.
            step_code: ``d``, a float or a tensor broadcastable to ``[*B, 1]``.

        Returns:
            ``[*B, action_dim]``.
        """
        layers = iter(self)
        first = next(layers)
        rest = torch.cat([x, feature_column(time, x), feature_column(step_code, x)], dim=-1)
        h = observation_part + F.linear(rest, first.weight[:, self.observation_dim :])
        for layer in layers:
            h = layer(h)
        return h


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
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
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
        settings = _ENSEMBLE_SETTINGS.check(
            {
                "num_members": num_members,
                "in_features": in_features,
                "out_features": out_features,
                "num_cells": num_cells,
                "layer_norm": layer_norm,
                "layer_norm_eps": layer_norm_eps,
            }
        )
        num_members, width = settings["num_members"], settings["in_features"]
        self.num_members = num_members
        self.in_features = width
        layers: list[nn.Module] = []
        for cells in settings["num_cells"]:
            layers.append(EnsembleLinear(num_members, width, cells))
            layers.append(TanhGELU())
            if settings["layer_norm"]:
                layers.append(_EnsembleLayerNorm(num_members, cells, settings["layer_norm_eps"]))
            width = cells
        layers.append(EnsembleLinear(num_members, width, settings["out_features"]))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in]`` (shared by all members) or ``[E, N, in]`` -> ``[E, N, out]``."""
        if x.ndim == 2:
            x = x.expand(self.num_members, *x.shape)
        return self.layers(x)
