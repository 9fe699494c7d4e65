"""The baselines' policies: IQL's Gaussian actor and ReBRAC's deterministic tanh actor.

Both follow the ``Actor`` of the FQL repository (``utils/networks.py``): an MLP whose hidden
layers are all activated (``Linear -> GELU``, no LayerNorm: ``actor_layer_norm=False``),
then a mean head ``Linear(action_dim)`` whose Glorot-uniform bound is scaled by
``sqrt(mean_head_scale)`` (flax ``variance_scaling(0.01, "fan_avg", "uniform")``: 0.1 x the
Glorot bound). The standard deviation is constant (``log sigma = 0``), scaled by a
temperature when sampling.

- :class:`GaussianActor` (IQL): ``pi(a | s) = N(mu(s), I)`` in training; it acts with
  ``clip(mu(s) + temperature * eps, -1, 1)``; evaluation (temperature 0) is ``clip(mu(s))``.
- :class:`TanhActor` (ReBRAC): acts with ``clip(tanh(mu(s)) + clip(noise_scale *
  temperature * eps, +-noise_clip), -1, 1)``; evaluation (temperature 0) is ``tanh(mu(s))``.

Both evaluation policies are deterministic. A best-of-N verifier needs distinct candidates:
sample with a temperature above 0 (``sample(observation, noise, temperature=1.0)``); with
temperature 0 all ``N`` candidates are the same action.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import Number, Settings
from sorl_torchrl.modules.networks import (
    DEFAULT_NUM_CELLS,
    LAYER_SIZES,
    SIZE,
    make_velocity_mlp,
)

__all__ = [
    "GAUSSIAN_ACTOR_SETTINGS",
    "TANH_ACTOR_SETTINGS",
    "GaussianActor",
    "GaussianPolicy",
    "TanhActor",
    "TanhPolicy",
    "gaussian_log_prob",
    "make_policy_mlp",
]

_TEMPERATURE = Number("[0, inf)", meaning="0: the deterministic evaluation action")
_SHARED = {
    "observation_dim": SIZE,
    "action_dim": SIZE,
    "num_cells": LAYER_SIZES,
    "mean_head_scale": Number("(0, inf)"),
    "temperature": _TEMPERATURE,
}
#: The checks of :class:`GaussianActor`'s settings.
GAUSSIAN_ACTOR_SETTINGS = Settings("GaussianActor", _SHARED)
#: The checks of :class:`TanhActor`'s settings.
TANH_ACTOR_SETTINGS = Settings(
    "TanhActor",
    {**_SHARED, "noise_scale": Number("[0, inf)"), "noise_clip": Number("[0, inf)")},
)


def make_policy_mlp(
    observation_dim: int,
    action_dim: int,
    num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
    mean_head_scale: float = 0.01,
) -> nn.Sequential:
    """The actor MLP ``mu(s)``: ``Linear -> GELU`` per hidden layer, then the mean head.

    :func:`~sorl_torchrl.modules.networks.make_velocity_mlp` (Glorot-uniform, zero biases)
    with the mean head's weights scaled by ``sqrt(mean_head_scale)``: a uniform weight of
    bound ``sqrt(scale * 6 / (fan_in + fan_out))``, flax's ``variance_scaling(scale,
    "fan_avg", "uniform")``.

    Examples:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = make_policy_mlp(3, 2, num_cells=(64,))
        >>> bound = math.sqrt(0.01 * 6 / (64 + 2))
        >>> bool(net[-1].weight.abs().max() <= bound)
        True
    """
    network = make_velocity_mlp(observation_dim, action_dim, num_cells)
    with torch.no_grad():
        network[-1].weight.mul_(math.sqrt(mean_head_scale))
    return network


class _Policy(nn.Module):
    """The mean network and the input checks shared by both policies."""

    def __init__(self, settings: dict) -> None:
        super().__init__()
        self.observation_dim = settings["observation_dim"]
        self.action_dim = settings["action_dim"]
        self.network = make_policy_mlp(
            self.observation_dim,
            self.action_dim,
            settings["num_cells"],
            settings["mean_head_scale"],
        )
        self.temperature = settings["temperature"]

    @property
    def temperature(self) -> float:
        """Default sampling temperature (0: the deterministic evaluation action)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = _TEMPERATURE(value, "temperature")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in."""
        return self.network[0].weight.dtype

    def mean(self, observation: torch.Tensor) -> torch.Tensor:
        """The mean head's output ``mu(s)``, ``[*B, obs] -> [*B, act]`` (no squashing)."""
        check_feature_dim(observation, self.observation_dim, "observation")
        if not torch.compiler.is_compiling():
            observation = as_model_dtype(observation, self.dtype, "observation")
        return self.network(observation)

    def _noise_term(
        self,
        center: torch.Tensor,
        noise: torch.Tensor | None,
        temperature: float | None,
    ) -> tuple[torch.Tensor | None, float]:
        """The checked noise (``None`` at temperature 0 without noise) and the temperature."""
        temp = self.temperature if temperature is None else _TEMPERATURE(temperature, "temperature")
        if noise is None:
            if temp == 0.0:
                return None, temp
            return torch.randn_like(center), temp
        check_feature_dim(noise, self.action_dim, "noise")
        noise = as_model_dtype(noise, center.dtype, "noise")
        try:
            shape = torch.broadcast_shapes(center.shape, noise.shape)
        except RuntimeError:
            shape = None
        if shape != noise.shape:
            raise ValueError(
                f"noise shape {list(noise.shape)} does not match the actions' "
                f"{list(center.shape)}: the observation batch shape must broadcast to the "
                "noise's (e.g. [B, 1, obs] against [B, N, act] for N candidates)."
            )
        return noise, temp

    def forward(
        self,
        observation: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """Actions for a batch of observations (see ``sample``)."""
        if not torch.compiler.is_compiling():
            check_finite(observation, "observation")
        return self.sample(observation, noise, temperature)


def gaussian_log_prob(mean: torch.Tensor, action: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``log N(a; mean, scale^2 I) = -|a - mean|^2 / (2 scale^2) - A log(scale) - (A/2) log 2 pi``.

    Summed over the last (action) dim: ``[*B, A] -> [*B]``; ``scale > 0``.

    Examples:
        >>> float(gaussian_log_prob(torch.zeros(1, 2), torch.ones(1, 2)))  # -1 - log(2 pi)
        -2.8378...
    """
    if not scale > 0:
        raise ValueError(f"The Gaussian's scale (temperature) must be > 0, got {scale!r}.")
    dim = action.shape[-1]
    squared = (action - mean).pow(2).sum(-1) / (2.0 * scale * scale)
    return -squared - dim * (math.log(scale) + 0.5 * math.log(2.0 * math.pi))


class GaussianPolicy(_Policy):
    """IQL's actor network: ``N(mu(s), temperature^2 I)`` (the ``nn.Module`` of the actor).

    Args:
        observation_dim: size of ``s`` (an integer >= 1).
        action_dim: size of ``a`` (an integer >= 1).
        num_cells: hidden sizes (released default 4 x 512).
        mean_head_scale: variance scale of the mean head's init (released 0.01).
        temperature: default sampling temperature, ``>= 0`` (0: evaluation).

    Examples:
        >>> policy = GaussianPolicy(3, 2, num_cells=(16,))
        >>> s = torch.randn(4, 3)
        >>> bool(torch.equal(policy.sample(s), policy.mean(s).clamp(-1, 1)))  # temperature 0
        True
        >>> policy.log_prob(s, torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        mean_head_scale: float = 0.01,
        temperature: float = 0.0,
    ) -> None:
        settings = GAUSSIAN_ACTOR_SETTINGS.check(
            {
                "observation_dim": observation_dim,
                "action_dim": action_dim,
                "num_cells": num_cells,
                "mean_head_scale": mean_head_scale,
                "temperature": temperature,
            }
        )
        super().__init__(settings)

    def log_prob(
        self, observation: torch.Tensor, action: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """``log pi(a | s)`` of ``N(mu(s), temperature^2 I)``, ``[*B]`` (training: 1).

        See :func:`gaussian_log_prob`.
        """
        check_feature_dim(action, self.action_dim, "action")
        action = as_model_dtype(action, self.dtype, "action")
        return gaussian_log_prob(self.mean(observation), action, temperature)

    def sample(
        self,
        observation: torch.Tensor,
        noise: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """``clip(mu(s) + temperature * eps, -1, 1)``.

        Args:
            observation: ``[*B, obs]``; with ``noise`` any shape broadcasting to the noise's
                batch shape (``[B, 1, obs]`` against ``[B, N, act]`` draws ``N`` candidates).
            noise: ``eps``; fresh standard normal noise if ``None`` (none is drawn at
                temperature 0).
            temperature: the module's :attr:`temperature` if ``None``. At 0 every candidate
                is ``clip(mu(s))``.

        Returns:
            Actions, ``[*B, act]`` (the noise's batch shape when given).
        """
        mean = self.mean(observation)
        noise, temp = self._noise_term(mean, noise, temperature)
        if noise is None:
            return mean.clamp(-1.0, 1.0)
        return (mean + temp * noise).clamp(-1.0, 1.0)


class TanhPolicy(_Policy):
    """ReBRAC's actor network: ``tanh(mu(s))`` with clipped Gaussian exploration noise.

    Args:
        observation_dim: size of ``s`` (an integer >= 1).
        action_dim: size of ``a`` (an integer >= 1).
        num_cells: hidden sizes (released default 4 x 512).
        mean_head_scale: variance scale of the mean head's init (released
            ``actor_fc_scale`` 0.01).
        temperature: default sampling temperature, ``>= 0`` (0: evaluation).
        noise_scale: standard deviation of the noise at temperature 1 (released
            ``actor_noise`` 0.2); it is also the target policy noise of ReBRAC's TD target.
        noise_clip: the noise is clipped to ``+-noise_clip`` (released 0.5).

    Examples:
        >>> policy = TanhPolicy(3, 2, num_cells=(16,))
        >>> s = torch.randn(4, 3)
        >>> bool(torch.equal(policy.sample(s), policy.mode(s)))  # temperature 0
        True
        >>> far = policy.sample(s, noise=torch.full((4, 2), 100.0), temperature=1.0)
        >>> bool(torch.allclose(far, (policy.mode(s) + 0.5).clamp(max=1.0)))  # noise clipped
        True
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        mean_head_scale: float = 0.01,
        temperature: float = 0.0,
        noise_scale: float = 0.2,
        noise_clip: float = 0.5,
    ) -> None:
        settings = TANH_ACTOR_SETTINGS.check(
            {
                "observation_dim": observation_dim,
                "action_dim": action_dim,
                "num_cells": num_cells,
                "mean_head_scale": mean_head_scale,
                "temperature": temperature,
                "noise_scale": noise_scale,
                "noise_clip": noise_clip,
            }
        )
        super().__init__(settings)
        self.noise_scale = settings["noise_scale"]
        self.noise_clip = settings["noise_clip"]

    def mode(self, observation: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mu(s))`` (the mode of the tanh-Gaussian)."""
        return torch.tanh(self.mean(observation))

    def sample(
        self,
        observation: torch.Tensor,
        noise: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """``clip(tanh(mu(s)) + clip(noise_scale * temperature * eps, +-noise_clip), -1, 1)``.

        ReBRAC's TD target uses this with the target actor's weights and temperature 1.

        Args:
            observation: ``[*B, obs]``; with ``noise`` any shape broadcasting to the noise's
                batch shape (``[B, 1, obs]`` against ``[B, N, act]`` draws ``N`` candidates).
            noise: ``eps``; fresh standard normal noise if ``None`` (none is drawn at
                temperature 0).
            temperature: the module's :attr:`temperature` if ``None``. At 0 every candidate
                is ``tanh(mu(s))``.

        Returns:
            Actions, ``[*B, act]`` (the noise's batch shape when given).
        """
        mode = self.mode(observation)
        noise, temp = self._noise_term(mode, noise, temperature)
        if noise is None:
            return mode
        scaled = (noise * (self.noise_scale * temp)).clamp(-self.noise_clip, self.noise_clip)
        return (mode + scaled).clamp(-1.0, 1.0)


class _ActorModule(TensorDictModule):
    """``observation -> action`` around a policy network; ``sample`` reads tensors."""

    def __init__(
        self, policy: _Policy, in_keys: Sequence[NestedKey], out_keys: Sequence[NestedKey]
    ) -> None:
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"{type(self).__name__} takes one observation key and writes one action key, "
                f"got in_keys={list(in_keys)}, out_keys={list(out_keys)}."
            )
        super().__init__(policy, in_keys=list(in_keys), out_keys=list(out_keys))

    @property
    def observation_dim(self) -> int:
        """Size of the observation vector."""
        return self.module.observation_dim

    @property
    def action_dim(self) -> int:
        """Size of the action vector."""
        return self.module.action_dim

    @property
    def temperature(self) -> float:
        """Default sampling temperature (0: the deterministic evaluation action)."""
        return self.module.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.module.temperature = value

    def sample(
        self,
        observation: torch.Tensor,
        noise: torch.Tensor | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """Actions from tensors (see the policy network's ``sample``)."""
        return self.module.sample(observation, noise, temperature)


class GaussianActor(_ActorModule):
    """IQL's policy as a TensorDict module, usable by ``env.rollout``.

    Wraps a :class:`GaussianPolicy`. Called on a tensordict it writes
    ``clip(mu(s) + temperature * eps, -1, 1)`` under the action key, with the module's
    :attr:`temperature` (default 0: the evaluation action ``clip(mu(s))``) or one given per
    call, ``actor(td, temperature=1.0)`` (offline-to-online exploration). TorchRL's
    exploration type is not read.

    Args:
        observation_dim: size of ``s``.
        action_dim: size of ``a``.
        num_cells: hidden sizes.
        mean_head_scale: variance scale of the mean head's init (released 0.01).
        temperature: default temperature, ``>= 0``.
        in_keys: the observation key (one key).
        out_keys: the action key (one key).

    Examples:
        >>> from tensordict import TensorDict
        >>> actor = GaussianActor(3, 2, num_cells=(16,))
        >>> td = TensorDict(observation=torch.randn(5, 3), batch_size=[5])
        >>> actor(td)["action"].shape
        torch.Size([5, 2])
        >>> candidates = actor.sample(torch.randn(5, 1, 3), torch.randn(5, 8, 2), 1.0)
        >>> candidates.shape
        torch.Size([5, 8, 2])
    """

    SETTINGS: ClassVar[Settings] = GAUSSIAN_ACTOR_SETTINGS

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        mean_head_scale: float = 0.01,
        temperature: float = 0.0,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
    ) -> None:
        policy = GaussianPolicy(
            observation_dim, action_dim, num_cells, mean_head_scale, temperature
        )
        super().__init__(policy, in_keys, out_keys)

    def log_prob(
        self, observation: torch.Tensor, action: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """``log pi(a | s)``, ``[*B]`` (see :meth:`GaussianPolicy.log_prob`; training: 1)."""
        return self.module.log_prob(observation, action, temperature)


class TanhActor(_ActorModule):
    """ReBRAC's policy as a TensorDict module, usable by ``env.rollout``.

    Wraps a :class:`TanhPolicy`. Called on a tensordict it writes
    ``clip(tanh(mu(s)) + clip(noise_scale * temperature * eps, +-noise_clip), -1, 1)``
    with the module's :attr:`temperature` (default 0: the evaluation action
    ``tanh(mu(s))``) or one given per call, ``actor(td, temperature=1.0)``. TorchRL's
    exploration type is not read.

    Args:
        observation_dim: size of ``s``.
        action_dim: size of ``a``.
        num_cells: hidden sizes.
        mean_head_scale: variance scale of the mean head's init (released 0.01).
        temperature: default temperature, ``>= 0``.
        noise_scale: noise standard deviation at temperature 1 (released 0.2).
        noise_clip: noise clip (released 0.5).
        in_keys: the observation key (one key).
        out_keys: the action key (one key).

    Examples:
        >>> from tensordict import TensorDict
        >>> actor = TanhActor(3, 2, num_cells=(16,))
        >>> td = TensorDict(observation=torch.randn(5, 3), batch_size=[5])
        >>> bool(actor(td)["action"].abs().max() < 1)
        True
    """

    SETTINGS: ClassVar[Settings] = TANH_ACTOR_SETTINGS

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        mean_head_scale: float = 0.01,
        temperature: float = 0.0,
        noise_scale: float = 0.2,
        noise_clip: float = 0.5,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
    ) -> None:
        policy = TanhPolicy(
            observation_dim,
            action_dim,
            num_cells,
            mean_head_scale,
            temperature,
            noise_scale,
            noise_clip,
        )
        super().__init__(policy, in_keys, out_keys)

    def mode(self, observation: torch.Tensor) -> torch.Tensor:
        """``tanh(mu(s))``, the evaluation action."""
        return self.module.mode(observation)
