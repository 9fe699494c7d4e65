"""The shortcut actor: a velocity field ``f(s, x_t, t, d)`` sampled with ``k`` Euler steps."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import (
    PowerOfTwo,
    Settings,
    check_power_of_two,
    step_code,
)
from sorl_torchrl.modules.networks import (
    DEFAULT_NUM_CELLS,
    LAYER_SIZES,
    SIZE,
    VelocityMLP,
    feature_column,
)

__all__ = [
    "ACTOR_SETTINGS",
    "ShortcutActor",
    "ShortcutModel",
    "SplitVelocityNetwork",
    "StepsBeyondTrainingWarning",
]

#: Modules whose frames a warning skips, to point at the code that asked for the sample.
_SAMPLING_MODULES = ("sorl_torchrl.modules", "torch", "tensordict", "torchrl")


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside the sampling machinery (for warnings)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and str(frame.f_globals.get("__name__", "")).startswith(
        _SAMPLING_MODULES
    ):
        frame, level = frame.f_back, level + 1
    return level


_MODEL_SETTINGS = Settings("ShortcutModel", {"observation_dim": SIZE, "action_dim": SIZE})
#: The checks of :class:`ShortcutActor`'s settings (the recipes' config check reuses them).
ACTOR_SETTINGS = Settings(
    "ShortcutActor",
    {
        "observation_dim": SIZE,
        "action_dim": SIZE,
        "num_cells": LAYER_SIZES,
        "inference_steps": check_power_of_two,
    },
)


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


class StepsBeyondTrainingWarning(UserWarning):
    """Sampling with more Euler steps than the model was trained for (``k > M_disc``).

    Issued once per actor and step count. Turn it into an error with
    ``warnings.simplefilter("error", StepsBeyondTrainingWarning)``.
    """


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

    Steps beyond training: a shortcut model is trained for the step codes
    ``d <= log2 M_disc`` only (flow matching at ``log2 M_disc``, self-consistency below),
    so ``k > M_disc`` evaluates the velocity at a step code it never saw. Such sampling is
    *allowed, with a warning* (:class:`StepsBeyondTrainingWarning`, once per step count),
    rather than refused: probing it is a legitimate test-time-scaling experiment and its
    result is an honest measurement, but it must not pass unnoticed. The model knows
    ``M_disc`` from ``trained_steps``, which :class:`~sorl_torchrl.ShortcutLoss` sets;
    ``None`` (a model no loss has trained) never warns.

    Inputs follow the package's dtype rule: observations and noise of another floating-point
    dtype are converted to the network's dtype; integer and bool ones are refused.

    Args:
        network: the velocity network: a :class:`SplitVelocityNetwork`, or any module
            mapping ``[..., observation_dim + action_dim + 2]`` to ``[..., action_dim]``.
        observation_dim: size of the observation vector (an integer >= 1).
        action_dim: size of the action vector (an integer >= 1).
        inference_steps: default number of Euler steps ``k`` (paper: ``M_inf``) when the
            module is called without an explicit ``inference_steps``.

    Examples:
        >>> model = ShortcutModel(VelocityMLP(3, 2, (16,)), 3, 2)
        >>> model.sample(torch.zeros(4, 3), inference_steps=4).shape
        torch.Size([4, 2])
        >>> model.trained_steps = 4  # as ShortcutLoss(discretization_steps=4) records it
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = model.sample(torch.zeros(4, 3), inference_steps=8)
        ...     _ = model.sample(torch.zeros(4, 3), inference_steps=8)  # once per k
        >>> [type(w.message).__name__ for w in caught]
        ['StepsBeyondTrainingWarning']
    """

    def __init__(
        self,
        network: nn.Module,
        observation_dim: int,
        action_dim: int,
        inference_steps: int = 1,
    ) -> None:
        super().__init__()
        sizes = _MODEL_SETTINGS.check(
            {"observation_dim": observation_dim, "action_dim": action_dim}
        )
        self.network = network
        self.observation_dim = sizes["observation_dim"]
        self.action_dim = sizes["action_dim"]
        self.inference_steps = inference_steps
        self.trained_steps = None
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

    @property
    def trained_steps(self) -> int | None:
        """``M_disc`` of the loss that trains this model (``None``: unknown, never warns).

        Set by :class:`~sorl_torchrl.ShortcutLoss`; a plain attribute, not a weight, so it
        is not in the ``state_dict``. Sampling with more steps warns once per step count.
        """
        return getattr(self, "_trained_steps", None)  # absent on models pickled before it

    @trained_steps.setter
    def trained_steps(self, value: int | None) -> None:
        self._trained_steps = None if value is None else check_power_of_two(value, "trained_steps")
        self._warned_steps: set[int] = set()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in (its first parameter's; else torch's default)."""
        first = next(self.network.parameters(), None)
        return torch.get_default_dtype() if first is None else first.dtype

    def steps_for_call(self, inference_steps: int | None) -> int:
        """The step count ``k`` of a call: the default if ``None``, else checked.

        Warns (:class:`StepsBeyondTrainingWarning`, once per ``k``) when ``k`` is above
        ``trained_steps``.

        Raises:
            ValueError: ``inference_steps`` is not a positive power of two (a ``SettingError``).
        """
        steps = (
            self.inference_steps if inference_steps is None else check_power_of_two(inference_steps)
        )
        trained = self.trained_steps
        if trained is not None and steps > trained and steps not in self._warned_steps:
            self._warned_steps.add(steps)
            warnings.warn(
                f"Sampling with inference_steps={steps}, more Euler steps than the "
                f"{trained} (discretization_steps) this actor was trained for: the velocity "
                f"at step code {step_code(steps)} was never trained, and actions may leave "
                f"the data's modes (docs: Test-time scaling). Use inference_steps <= "
                f"{trained} to stay within training.",
                StepsBeyondTrainingWarning,
                stacklevel=_caller_stacklevel(),
            )
        return steps

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
        """The velocity ``f(s, x, t, d)`` of an observation ``[*B, observation_dim]``.

        :meth:`velocity_from_part` of :meth:`observation_part`; ``x``, ``time`` and
        ``step_code`` as there. Returns ``[*B, action_dim]``.
        """
        return self.velocity_from_part(self.observation_part(observation), x, time, step_code)

    def sample_from_part(
        self,
        observation_part: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        clip: bool = True,
        fixed_step_code: float | None = None,
    ) -> torch.Tensor:
        """The Euler sampler on validated inputs (see :meth:`sample`).

        ``x = a0; for i in 0..k-1: x = x + f(s, x, i/k, log2 k) / k``, then clip to
        ``[-1, 1]``.

        Args:
            observation_part: :meth:`observation_part` of the observations; its batch shape
                broadcasts to the noise's.
            noise: the starting point ``a0``, ``[*B, action_dim]``.
            num_steps: ``k``, a power of two (any integer >= 1 with ``fixed_step_code``).
            clip: clip the result to ``[-1, 1]``.
            fixed_step_code: the step code fed to every step instead of ``log2 k``: a plain
                flow with step ``1/k`` whose network ignores the code (FQL's ``K = 10`` steps
                at code 0). ``None``: the shortcut sampler, ``log2 k``.

        Returns:
            ``[*B, action_dim]``.
        """
        code = float(step_code(num_steps) if fixed_step_code is None else fixed_step_code)
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
            inference_steps: ``k`` (a power of two); the module default if ``None``. Above
                ``trained_steps`` it warns, once per ``k``.
            noise: the starting point ``a0``, ``[*B, action_dim]``; fresh standard
                Gaussian noise if ``None``. Float observations and noise are converted to
                :attr:`dtype`; integer ones are refused.
            clip: clip the result to ``[-1, 1]``.

        Returns:
            Actions, ``[*B, action_dim]`` (the noise's batch shape).
        """
        check_feature_dim(observation, self.observation_dim, "observation")
        if torch.compiler.is_compiling():  # a compiled caller checked and converted already
            steps = self.inference_steps if inference_steps is None else inference_steps
        else:
            steps = self.steps_for_call(inference_steps)
            dtype = self.dtype
            observation = as_model_dtype(observation, dtype, "observation")
            if noise is not None:
                noise = as_model_dtype(noise, dtype, "noise")
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
        observation_dim: size of the observation vector (an integer >= 1).
        action_dim: size of the action vector (an integer >= 1).
        network: the velocity network, any module mapping
            ``[..., observation_dim + action_dim + 2]`` to ``[..., action_dim]``. Default:
            :class:`~sorl_torchrl.modules.networks.VelocityMLP` with ``num_cells``.
        num_cells: hidden sizes of the default network, integers >= 1 (the paper's 4 x 512).
        inference_steps: default number of Euler steps ``k`` (paper: ``M_inf``), a power of
            two; a call may override it with ``actor(td, inference_steps=8)``, checked the
            same way. Sampling with more steps than ``trained_steps`` warns.
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
        >>> actor.sample(torch.randn(5, 3, dtype=torch.float64)).dtype  # the dtype rule
        torch.float32
    """

    SETTINGS: ClassVar[Settings] = ACTOR_SETTINGS

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
        self.SETTINGS.check(
            {
                "observation_dim": observation_dim,
                "action_dim": action_dim,
                "num_cells": num_cells,
                "inference_steps": inference_steps,
            }
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

    @property
    def trained_steps(self) -> int | None:
        """``M_disc`` of the loss that trains this actor; see ``ShortcutModel.trained_steps``.

        Sampling with more steps than this warns (:class:`StepsBeyondTrainingWarning`), once
        per step count. ``None`` until a :class:`~sorl_torchrl.ShortcutLoss` is built on it.
        """
        return self.module.trained_steps

    @trained_steps.setter
    def trained_steps(self, value: int | None) -> None:
        self.module.trained_steps = value

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
