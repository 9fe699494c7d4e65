"""FQL's one-step policy ``mu(s, z)``: noise to action in one network call, no Euler steps.

Paper: *Flow Q-Learning* (Park, Li, Levine, ICML 2025, https://arxiv.org/abs/2502.02538).
The policy is an MLP on ``concat(s, z)`` (the released code's ``ActorVectorField`` without
the time input): ``Linear -> GELU`` per hidden layer, then a linear output, built by
:func:`~sorl_torchrl.modules.networks.make_velocity_mlp`. An action is
``clip(mu(s, z), -1, 1)`` with fresh noise ``z ~ N(0, I)`` on every call: the released code
ignores the sampling temperature, so evaluation is stochastic too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import Settings
from sorl_torchrl.modules.networks import DEFAULT_NUM_CELLS, LAYER_SIZES, SIZE, make_velocity_mlp

__all__ = ["ONE_STEP_POLICY_SETTINGS", "OneStepModel", "OneStepPolicy"]

#: The checks of :class:`OneStepPolicy`'s settings.
ONE_STEP_POLICY_SETTINGS = Settings(
    "OneStepPolicy", {"observation_dim": SIZE, "action_dim": SIZE, "num_cells": LAYER_SIZES}
)


class OneStepModel(nn.Module):
    """The map ``mu(s, z) = network(concat(s, z))`` and its sampler (the module in the policy).

    Args:
        network: any module mapping ``[..., observation_dim + action_dim]`` to
            ``[..., action_dim]``.
        observation_dim: size of ``s``.
        action_dim: size of ``z`` and of the action.

    Examples:
        >>> model = OneStepModel(make_velocity_mlp(5, 2, (8,)), 3, 2)
        >>> s, z = torch.randn(4, 3), torch.randn(4, 2)
        >>> raw = model.sample(s, z, clip=False)
        >>> torch.equal(model.sample(s, z), raw.clamp(-1, 1))
        True
    """

    def __init__(self, network: nn.Module, observation_dim: int, action_dim: int) -> None:
        super().__init__()
        self.network = network
        self.observation_dim = observation_dim
        self.action_dim = action_dim

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in (its first parameter's; else torch's default)."""
        first = next(self.network.parameters(), None)
        return torch.get_default_dtype() if first is None else first.dtype

    def sample(
        self, observation: torch.Tensor, noise: torch.Tensor | None = None, clip: bool = True
    ) -> torch.Tensor:
        """``clip(mu(s, z), -1, 1)`` (or ``mu(s, z)`` with ``clip=False``).

        Args:
            observation: ``[*B, observation_dim]``; broadcast to the noise's batch shape.
            noise: ``z``, ``[*B, action_dim]``; fresh standard Gaussian noise if ``None``.
                Float inputs are converted to :attr:`dtype`; integer ones are refused.
            clip: clip to ``[-1, 1]`` (the policy's action); ``False`` gives the raw map,
                which FQL's distillation loss regresses.

        Returns:
            ``[*B, action_dim]``.
        """
        check_feature_dim(observation, self.observation_dim, "observation")
        if not torch.compiler.is_compiling():  # compiled callers pass checked inputs
            observation = as_model_dtype(observation, self.dtype, "observation")
            if noise is not None:
                noise = as_model_dtype(noise, self.dtype, "noise")
        if noise is None:
            shape = (*observation.shape[:-1], self.action_dim)
            noise = torch.randn(shape, device=observation.device, dtype=observation.dtype)
        check_feature_dim(noise, self.action_dim, "noise")
        observation = observation.expand(*noise.shape[:-1], self.observation_dim)
        action = self.network(torch.cat([observation, noise], dim=-1))
        return action.clamp(-1.0, 1.0) if clip else action

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """An action per observation with fresh noise (see :meth:`sample`)."""
        if not torch.compiler.is_compiling():
            check_finite(observation, "observation")
        return self.sample(observation)


class OneStepPolicy(TensorDictModule):
    """FQL's one-step policy as a TensorDict module: ``observation -> action``.

    ``action = clip(mu(s, z), -1, 1)`` with ``z ~ N(0, I)`` drawn on every call, whatever
    the exploration type (as in the released code). Usable directly as a TorchRL policy,
    e.g. ``env.rollout(max_steps, policy=policy)``.

    Args:
        observation_dim: size of the observation vector (an integer >= 1).
        action_dim: size of the action vector (an integer >= 1).
        network: the map ``mu``, any module mapping ``[..., observation_dim + action_dim]``
            to ``[..., action_dim]``. Default: :func:`make_velocity_mlp` with ``num_cells``
            (the released code's actor MLP without LayerNorm, ``actor_layer_norm=False``).
        num_cells: hidden sizes of the default network (paper: 4 x 512).
        in_keys: the observation key (one key).
        out_keys: the action key (one key).

    Examples:
        >>> from tensordict import TensorDict
        >>> policy = OneStepPolicy(observation_dim=3, action_dim=2, num_cells=(16, 16))
        >>> td = TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5])
        >>> policy(td)["action"].shape
        torch.Size([5, 2])
        >>> s, z = torch.randn(5, 3), torch.zeros(5, 2)
        >>> torch.equal(policy.sample(s, z), policy.sample(s, z))  # the noise decides
        True
        >>> OneStepPolicy(3, 0)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: action_dim must be an integer >= 1, got 0.
    """

    SETTINGS: ClassVar[Settings] = ONE_STEP_POLICY_SETTINGS

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        network: nn.Module | None = None,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
    ) -> None:
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"OneStepPolicy takes one observation key and writes one action key, got "
                f"in_keys={list(in_keys)}, out_keys={list(out_keys)}."
            )
        sizes = self.SETTINGS.check(
            {"observation_dim": observation_dim, "action_dim": action_dim, "num_cells": num_cells}
        )
        obs_dim, act_dim = sizes["observation_dim"], sizes["action_dim"]
        if network is None:
            network = make_velocity_mlp(obs_dim + act_dim, act_dim, sizes["num_cells"])
        model = OneStepModel(network, obs_dim, act_dim)
        super().__init__(model, in_keys=list(in_keys), out_keys=list(out_keys))

    @property
    def observation_dim(self) -> int:
        """Size of the observation vector."""
        return self.module.observation_dim

    @property
    def action_dim(self) -> int:
        """Size of the action vector."""
        return self.module.action_dim

    def sample(
        self, observation: torch.Tensor, noise: torch.Tensor | None = None, clip: bool = True
    ) -> torch.Tensor:
        """``clip(mu(s, z), -1, 1)`` from tensors; see :meth:`OneStepModel.sample`."""
        return self.module.sample(observation, noise, clip)
