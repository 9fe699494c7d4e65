"""Pure-tensor forwards of the default SORL networks: the fast path of the losses.

The modules in :mod:`sorl_torchrl.modules.networks` are the source of truth; the
functions here compute the same numbers from a flat list of parameter tensors (the
leaves of a parameter ``TensorDict`` in module order) without swapping parameters into a
module, which keeps a training step free of per-call Python overhead and makes it one
clean graph for ``torch.compile``.

Two algebraic rearrangements save work without changing the function:

- The velocity MLP's first layer splits as ``W [s, x, t, d] = W_s s + W_r [x, t, d]``.
  The observation part ``W_s s + b`` (:func:`velocity_observation_part`) is computed once
  and reused by every Euler step and by every call that shares the observation and the
  weights (FM, SC and Q-loss sampling of one batch).
- Rows of different calls that share weights can be stacked into one GEMM chain.

Only networks built the default way qualify (:func:`velocity_layers`,
:func:`ensemble_layers` return ``None`` otherwise, and callers fall back to the module).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sorl_torchrl.modules.networks import EnsembleLinear, EnsembleMLP, _EnsembleLayerNorm

__all__ = [
    "EnsemblePlan",
    "VelocityPlan",
    "ensemble_forward",
    "ensemble_layers",
    "feature_column",
    "gelu_tanh",
    "has_hooks",
    "velocity_forward",
    "velocity_layers",
    "velocity_observation_part",
]


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class _GeluTanh(torch.autograd.Function):
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
    """``F.gelu(x, approximate="tanh")``, written for speed; same values up to float rounding.

    Eagerly, the function is composed from ``tanh`` and in-place arithmetic with a
    hand-written backward that reuses the saved ``tanh``. Under ``torch.compile`` it is
    written as ``x * sigmoid(2 z)`` with ``z = C (x + A x^3)``, the same function since
    ``(1 + tanh z) / 2 = sigmoid(2 z)``: inductor fuses it (and its derivative) into one
    loop built on a vectorised ``exp``, while its vectorised ``tanh`` is much slower on CPU
    (a 256 x 512 forward: 63 vs 159 us on 2 threads; the paper-size compiled update runs
    about 10 % faster).

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
    return _GeluTanh.apply(x)


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


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule has forward hooks (the fast path would skip them).

    Examples:
        >>> net = nn.Linear(2, 2)
        >>> has_hooks(net)
        False
        >>> _ = net.register_forward_pre_hook(lambda m, a: None)
        >>> has_hooks(net)
        True
    """
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


@dataclass(frozen=True)
class VelocityPlan:
    """Layout of a plain ``Linear -> tanh-GELU -> ... -> Linear`` velocity MLP.

    Attributes:
        num_linear: number of linear layers (hidden layers + output).
        observation_dim: width of the observation block of the first layer's input.
    """

    num_linear: int
    observation_dim: int


def velocity_layers(network: nn.Module, observation_dim: int) -> VelocityPlan | None:
    """The fast-path plan for a velocity network, or ``None`` if it is not a plain MLP.

    A plain MLP is an ``nn.Sequential`` alternating ``nn.Linear`` (with bias) and
    ``nn.GELU(approximate="tanh")``, ending with a linear layer; a lone ``nn.Linear``
    qualifies too.

    Examples:
        >>> from sorl_torchrl.modules.networks import make_velocity_mlp
        >>> velocity_layers(make_velocity_mlp(7, 2, (16, 16)), 3)
        VelocityPlan(num_linear=3, observation_dim=3)
        >>> velocity_layers(nn.Sequential(nn.Linear(7, 4), nn.ReLU(), nn.Linear(4, 2)), 3) is None
        True
    """
    layers = list(network) if isinstance(network, nn.Sequential) else [network]
    if not layers or len(layers) % 2 == 0:
        return None
    for i, layer in enumerate(layers):
        if i % 2 == 0:
            if type(layer) is not nn.Linear or layer.bias is None:
                return None
        elif type(layer) is not nn.GELU or layer.approximate != "tanh":
            return None
    return VelocityPlan(num_linear=(len(layers) + 1) // 2, observation_dim=observation_dim)


def velocity_observation_part(
    plan: VelocityPlan, params: Sequence[torch.Tensor], observation: torch.Tensor
) -> torch.Tensor:
    """``W_s s + b`` of the first layer: the part shared by all calls on one observation.

    Args:
        plan: from :func:`velocity_layers`.
        params: the network's parameters in module order (``W0, b0, W1, b1, ...``).
        observation: ``[*B, observation_dim]``.

    Returns:
        ``[*B, hidden]``.
    """
    weight, bias = params[0], params[1]
    return F.linear(observation, weight[:, : plan.observation_dim], bias)


def velocity_forward(
    plan: VelocityPlan,
    params: Sequence[torch.Tensor],
    observation_part: torch.Tensor,
    x: torch.Tensor,
    time: torch.Tensor | float,
    step_code: torch.Tensor | float,
) -> torch.Tensor:
    """The velocity ``f(s, x, t, d)`` from the precomputed observation part.

    Equal (up to float rounding) to ``network(cat(s, x, t, d))``.

    Args:
        plan: from :func:`velocity_layers`.
        params: the network's parameters in module order.
        observation_part: :func:`velocity_observation_part` of the observation,
            ``[*B, hidden]``.
        x: ``[*B, action_dim]``.
        time: ``t``, a float or a tensor broadcastable to ``[*B, 1]``.
        step_code: ``d``, a float or a tensor broadcastable to ``[*B, 1]``.

    Returns:
        ``[*B, action_dim]``.

    Examples:
        >>> from sorl_torchrl.modules.networks import make_velocity_mlp
        >>> net = make_velocity_mlp(3 + 2 + 2, 2, (8,))
        >>> plan, params = velocity_layers(net, 3), list(net.parameters())
        >>> s, x = torch.randn(4, 3), torch.randn(4, 2)
        >>> fast = velocity_forward(plan, params, velocity_observation_part(plan, params, s),
        ...                         x, 0.5, 2.0)
        >>> t_col, d_col = torch.full((4, 1), 0.5), torch.full((4, 1), 2.0)
        >>> slow = net(torch.cat([s, x, t_col, d_col], -1))
        >>> torch.allclose(fast, slow, atol=1e-6)
        True
    """
    time, code = feature_column(time, x), feature_column(step_code, x)
    rest = params[0][:, plan.observation_dim :]
    inputs = torch.cat([x, time, code], dim=-1)
    h = observation_part + F.linear(inputs, rest)
    for i in range(1, plan.num_linear):
        h = F.linear(gelu_tanh(h), params[2 * i], params[2 * i + 1])
    return h


@dataclass(frozen=True)
class EnsemblePlan:
    """Layout of an :class:`~sorl_torchrl.modules.networks.EnsembleMLP`.

    Attributes:
        num_members: ensemble size ``E``.
        num_hidden: number of hidden layers.
        layer_norm: whether each hidden layer ends with a per-member LayerNorm.
        layer_norm_eps: its epsilon.
    """

    num_members: int
    num_hidden: int
    layer_norm: bool
    layer_norm_eps: float


def ensemble_layers(network: nn.Module) -> EnsemblePlan | None:
    """The fast-path plan for a critic ensemble MLP, or ``None`` for any other module.

    Examples:
        >>> ensemble_layers(EnsembleMLP(2, 6, 1, num_cells=(16, 16)))
        EnsemblePlan(num_members=2, num_hidden=2, layer_norm=True, layer_norm_eps=1e-06)
    """
    if type(network) is not EnsembleMLP:
        return None
    layers = list(network.layers)
    linears = [m for m in layers if type(m) is EnsembleLinear]
    norms = [m for m in layers if type(m) is _EnsembleLayerNorm]
    gelus = [m for m in layers if type(m) is nn.GELU and m.approximate == "tanh"]
    num_hidden = len(linears) - 1
    if len(gelus) != num_hidden or len(norms) not in (0, num_hidden):
        return None
    if len(linears) + len(gelus) + len(norms) != len(layers):
        return None
    eps = norms[0].eps if norms else 0.0
    return EnsemblePlan(network.num_members, num_hidden, bool(norms), eps)


def ensemble_forward(
    plan: EnsemblePlan, params: Sequence[torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """``EnsembleMLP`` forward from its parameters: ``[N | E, N, in] -> [E, N, out]``.

    Examples:
        >>> mlp = EnsembleMLP(2, 6, 1, num_cells=(16, 16))
        >>> x = torch.randn(5, 6)
        >>> fast = ensemble_forward(ensemble_layers(mlp), list(mlp.parameters()), x)
        >>> torch.allclose(fast, mlp(x))
        True
    """
    h = x if x.ndim == 3 else x.expand(plan.num_members, *x.shape)
    step = 4 if plan.layer_norm else 2
    for i in range(plan.num_hidden):
        weight, bias = params[step * i], params[step * i + 1]
        h = gelu_tanh(torch.baddbmm(bias, h, weight))
        if plan.layer_norm:
            h = F.layer_norm(h, h.shape[-1:], eps=plan.layer_norm_eps)
            h = torch.addcmul(params[step * i + 3], h, params[step * i + 2])
    weight, bias = params[step * plan.num_hidden], params[step * plan.num_hidden + 1]
    return torch.baddbmm(bias, h, weight)
