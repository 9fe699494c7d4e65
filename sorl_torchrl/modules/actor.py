"""The shortcut actor: a velocity field ``f(s, x_t, t, d)`` sampled with ``k`` Euler steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._validation import (
    PowerOfTwo,
    check_feature_dim,
    check_finite,
    check_power_of_two,
    step_code,
)
from sorl_torchrl.modules.networks import DEFAULT_NUM_CELLS, VelocityMLP, feature_column

__all__ = ["ShortcutActor", "ShortcutModel", "SplitVelocityNetwork"]


@runtime_checkable
class SplitVelocityNetwork(Protocol):
    """A velocity network that computes the observation's share of its input once.

    :class:`~sorl_torchrl.modules.networks.VelocityMLP` implements it. Any network with these
    two methods gets the same savings in :class:`ShortcutModel`; any other module is fed
    ``concat(s, x, t, d)`` on every call.
    """

    def observation_part(self, observation: torch.Tensor) -> torch.Tensor:
        """What the network computes from the observation alone, ``[*B, P]``."""

    def velocity(
        self,
        observation_part: torch.Tensor,
        x: torch.Tensor,
        time: torch.Tensor | float,
        step_code: torch.Tensor | float,
    ) -> torch.Tensor:
        """``f(s, x, t, d)`` from :meth:`observation_part` of ``s``."""


class ShortcutModel(nn.Module):
    """A shortcut velocity field and its Euler sampler (the ``nn.Module`` inside the actor).

    The velocity ``v = f(s, x_t, t, d)`` is ``network(concat(s, x_t, t, d))`` with the time
    ``t`` in ``[0, 1]`` (0 = noise, 1 = data) and the step code ``d = log2(k)`` given as raw
    scalars, as in the released SORL code. Everything that evaluates the velocity (the
    sampler, the losses, the verifier) goes through :meth:`observation_part` and
    :meth:`velocity_from_part`, so the observation is processed once per call however many
    Euler steps follow: for a :class:`SplitVelocityNetwork` (the default
    :class:`~sorl_torchrl.modules.networks.VelocityMLP`) its share of the first layer is
    computed once; for any other network the raw observation is concatenated each time.

    Args:
        network: the velocity network: a :class:`SplitVelocityNetwork`, or any module
            mapping ``[..., observation_dim + action_dim + 2]`` to ``[..., action_dim]``.
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.
        inference_steps: default number of Euler steps ``k`` (paper: ``M_inf``) when the
            module is called without an explicit ``inference_steps``.

    Examples:
        >>> model = ShortcutModel(VelocityMLP(3, 2, (16,)), 3, 2)
        >>> model.sample(torch.zeros(4, 3), inference_steps=4).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        network: nn.Module,
        observation_dim: int,
        action_dim: int,
        inference_steps: int = 1,
    ) -> None:
        super().__init__()
        self.network = network
        self.observation_dim = int(observation_dim)
        self.action_dim = int(action_dim)
        self.inference_steps = inference_steps
        self.splits_observation = isinstance(network, SplitVelocityNetwork)
        split_at = getattr(network, "observation_dim", self.observation_dim)
        if self.splits_observation and split_at != self.observation_dim:
            raise ValueError(
                f"The velocity network splits its input after {split_at} observation "
                f"features, but the actor's observation_dim is {self.observation_dim}: build "
                "both with the same observation size."
            )

    inference_steps = PowerOfTwo(
        "Default number of Euler steps ``k`` used when a call does not give one."
    )

    def observation_part(self, observation: torch.Tensor) -> torch.Tensor:
        """What the velocity needs of the observation, computed once per observation.

        The network's :meth:`SplitVelocityNetwork.observation_part` if it has one, else the
        observation itself.
        """
        if self.splits_observation:
            return self.network.observation_part(observation)
        return observation

    def velocity_from_part(
        self,
        observation_part: torch.Tensor,
        x: torch.Tensor,
        time: torch.Tensor | float,
        step_code: torch.Tensor | float,
    ) -> torch.Tensor:
        """The velocity ``f(s, x, t, d)`` from :meth:`observation_part` of ``s``.

        Args:
            observation_part: from :meth:`observation_part`; its batch shape broadcasts to
                ``x``'s.
            x: the current point of the flow, ``[*B, action_dim]``.
            time: ``t``, a float or a tensor broadcastable to ``[*B, 1]``.
            step_code: ``d = log2(1 / step size)``, a float or a tensor broadcastable to
                ``[*B, 1]``.

        Returns:
            The velocity, ``[*B, action_dim]``.
        """
        if self.splits_observation:
            return self.network.velocity(observation_part, x, time, step_code)
        observation = observation_part.expand(*x.shape[:-1], observation_part.shape[-1])
        time, code = feature_column(time, x), feature_column(step_code, x)
        return self.network(torch.cat([observation, x, time, code], dim=-1))

    def velocity(
        self,
        observation: torch.Tensor,
        x: torch.Tensor,
        time: torch.Tensor | float,
        step_code: torch.Tensor | float,
    ) -> torch.Tensor:
        """The velocity ``f(s, x, t, d)``.

        Args:
            observation: ``[*B, observation_dim]``.
            x: the current point of the flow, ``[*B, action_dim]``.
            time: ``t``, a float or a tensor broadcastable to ``[*B, 1]``.
            step_code: ``d = log2(1 / step size)``, a float or a tensor broadcastable to
                ``[*B, 1]``.

        Returns:
            The velocity, ``[*B, action_dim]``.
        """
        return self.velocity_from_part(self.observation_part(observation), x, time, step_code)

    def sample_from_part(
        self,
        observation_part: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        clip: bool = True,
    ) -> torch.Tensor:
        """The Euler sampler on validated inputs (see :meth:`sample`).

        ``x = a0; for i in 0..k-1: x = x + f(s, x, i/k, log2 k) / k``, then clip to
        ``[-1, 1]``.

        Args:
            observation_part: :meth:`observation_part` of the observations; its batch shape
                broadcasts to the noise's.
            noise: the starting point ``a0``, ``[*B, action_dim]``.
            num_steps: ``k``, a power of two (not checked here).
            clip: clip the result to ``[-1, 1]``.

        Returns:
            ``[*B, action_dim]``.
        """
        code = float(step_code(num_steps))
        x = noise
        for i in range(num_steps):
            x = x + self.velocity_from_part(observation_part, x, i / num_steps, code) / num_steps
        return x.clamp(-1.0, 1.0) if clip else x

    def sample(
        self,
        observation: torch.Tensor,
        inference_steps: int | None = None,
        noise: torch.Tensor | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """Integrate the flow from noise to an action with ``k`` Euler steps.

        ``x = a0; for i in 0..k-1: x = x + f(s, x, i/k, log2 k) / k``, then clip to
        ``[-1, 1]``. Gradients flow through every step while grad mode is on (BPTT); wrap
        the call in ``torch.no_grad()`` for plain inference.

        Args:
            observation: ``[*B, observation_dim]``; with ``noise`` given, any shape that
                broadcasts to the noise's batch shape (``[B, 1, obs]`` against ``[B, N,
                act]`` samples ``N`` actions per observation, and the observation is then
                processed once per observation row).
            inference_steps: ``k`` (a power of two); the module default if ``None``.
            noise: the starting point ``a0``, ``[*B, action_dim]``; fresh standard
                Gaussian noise if ``None``.
            clip: clip the result to ``[-1, 1]``.

        Returns:
            Actions, ``[*B, action_dim]`` (the noise's batch shape).
        """
        steps = (
            self.inference_steps if inference_steps is None else check_power_of_two(inference_steps)
        )
        check_feature_dim(observation, self.observation_dim, "observation")
        if noise is None:
            noise = torch.randn(
                *observation.shape[:-1],
                self.action_dim,
                device=observation.device,
                dtype=observation.dtype,
            )
        else:
            check_feature_dim(noise, self.action_dim, "noise")
            try:
                batch = torch.broadcast_shapes(observation.shape[:-1], noise.shape[:-1])
            except RuntimeError:
                batch = None
            if batch != noise.shape[:-1]:
                raise ValueError(
                    f"noise batch shape {list(noise.shape[:-1])} does not match the "
                    f"observation batch shape {list(observation.shape[:-1])} (the "
                    "observation must broadcast to the noise's batch shape)."
                )
        return self.sample_from_part(self.observation_part(observation), noise, steps, clip)

    def forward(
        self,
        observation: torch.Tensor,
        *,
        inference_steps: int | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample actions for a batch of observations (see :meth:`sample`)."""
        check_feature_dim(observation, self.observation_dim, "observation")
        if not torch.compiler.is_compiling():
            check_finite(observation, "observation")
        return self.sample(observation, inference_steps, noise)


class ShortcutActor(TensorDictModule):
    """A SORL shortcut policy as a TensorDict module: ``observation -> action``.

    Wraps a velocity network ``f(s, x_t, t, d)`` (paper: the shortcut model) and samples
    actions with ``k`` Euler steps, ``k`` a power of two. Usable directly as a TorchRL
    policy, e.g. ``env.rollout(max_steps, policy=actor)``.

    Args:
        observation_dim: size of the observation vector.
        action_dim: size of the action vector.
        network: the velocity network, any module mapping
            ``[..., observation_dim + action_dim + 2]`` to ``[..., action_dim]``. Default:
            :class:`~sorl_torchrl.modules.networks.VelocityMLP` with ``num_cells``.
        num_cells: hidden sizes of the default network (the paper's 4 x 512).
        inference_steps: default number of Euler steps ``k`` (paper: ``M_inf``); a call
            may override it with ``actor(td, inference_steps=8)``.
        in_keys: the observation key (one key).
        out_keys: the action key (one key).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = ShortcutActor(observation_dim=3, action_dim=2, num_cells=(32, 32))
        >>> td = TensorDict({"observation": torch.randn(5, 3)}, batch_size=[5])
        >>> actor(td)["action"].shape
        torch.Size([5, 2])
        >>> actor(td, inference_steps=8)["action"].abs().max() <= 1
        tensor(True)
        >>> actor.sample(torch.randn(5, 3), inference_steps=4, noise=torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        network: nn.Module | None = None,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        inference_steps: int = 1,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("action",),
    ) -> None:
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                f"ShortcutActor takes one observation key and writes one action key, got "
                f"in_keys={list(in_keys)}, out_keys={list(out_keys)}."
            )
        if network is None:
            network = VelocityMLP(observation_dim, action_dim, num_cells)
        model = ShortcutModel(network, observation_dim, action_dim, inference_steps)
        super().__init__(model, in_keys=list(in_keys), out_keys=list(out_keys))

    @property
    def observation_dim(self) -> int:
        """Size of the observation vector."""
        return self.module.observation_dim

    @property
    def action_dim(self) -> int:
        """Size of the action vector."""
        return self.module.action_dim

    @property
    def inference_steps(self) -> int:
        """Default number of Euler steps ``k`` (a power of two)."""
        return self.module.inference_steps

    @inference_steps.setter
    def inference_steps(self, value: int) -> None:
        self.module.inference_steps = value

    def velocity(
        self,
        observation: torch.Tensor,
        x: torch.Tensor,
        time: torch.Tensor | float,
        step_code: torch.Tensor | float,
    ) -> torch.Tensor:
        """The velocity ``f(s, x, t, d)``; see :meth:`ShortcutModel.velocity`."""
        return self.module.velocity(observation, x, time, step_code)

    def sample(
        self,
        observation: torch.Tensor,
        inference_steps: int | None = None,
        noise: torch.Tensor | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """Euler-sample actions from tensors; see :meth:`ShortcutModel.sample`."""
        return self.module.sample(observation, inference_steps, noise, clip)
