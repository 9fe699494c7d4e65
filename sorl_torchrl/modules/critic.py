"""The SORL critic: an ensemble of ``E`` independent Q networks evaluated in one call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim
from sorl_torchrl._validation import (
    FLAG,
    Choice,
    Number,
    Settings,
    check_power_of_two,
)
from sorl_torchrl.modules.networks import (
    DEFAULT_NUM_CELLS,
    LAYER_SIZES,
    SIZE,
    EnsembleMLP,
    feature_column,
)

__all__ = ["CRITIC_SETTINGS", "QEnsemble", "aggregate_q"]

QAggregation = Literal["min", "mean"]

#: The checks of :class:`QEnsemble`'s settings (the recipes' config check reuses them).
CRITIC_SETTINGS = Settings(
    "QEnsemble",
    {
        "observation_dim": SIZE,
        "action_dim": SIZE,
        "num_members": SIZE,
        "num_cells": LAYER_SIZES,
        "condition_on_steps": FLAG,
        "step_feature": Choice("steps", "log2"),
        "layer_norm": FLAG,
        "layer_norm_eps": Number("(0, inf)"),
    },
)


def aggregate_q(values: torch.Tensor, how: QAggregation) -> torch.Tensor:
    """Aggregate ensemble values ``[E, *B, 1]`` over the members (dim 0) -> ``[*B, 1]``.

    Examples:
        >>> q = torch.tensor([[[1.0]], [[3.0]]])  # E=2, B=1
        >>> aggregate_q(q, "min"), aggregate_q(q, "mean")
        (tensor([[1.]]), tensor([[2.]]))
    """
    if how == "min":
        return values.amin(dim=0)
    if how == "mean":
        return values.mean(dim=0)
    raise ValueError(f"Unknown Q aggregation {how!r}: use 'min' or 'mean'.")


def policy_q_term(
    values: torch.Tensor, how: QAggregation, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The actor's Q term: ``(lam * -mean(Q), Q [*B, 1], lam)``, ``Q`` aggregated over members.

    ``lam = 1 / mean |Q|``, detached (the normalised Q loss of SORL, FQL, IQL's ``ddpgbc``
    actor and ReBRAC), or 1 when ``normalize`` is false.

    Examples:
        >>> values = torch.tensor([[[2.0], [-4.0]], [[4.0], [-2.0]]])  # E=2, B=2
        >>> loss, q, lam = policy_q_term(values, "mean")
        >>> q.flatten().tolist(), lam.item(), loss.item()  # -mean(Q) / mean|Q| = 0 / 3
        ([3.0, -3.0], 0.3333333432674408, -0.0)
    """
    q = aggregate_q(values, how)
    loss = -q.mean()
    lam = (1.0 / q.abs().mean()).detach() if normalize else torch.ones_like(loss)
    return lam * loss, q, lam


class QEnsemble(TensorDictModuleBase):
    """``E`` independent critics ``Q_e(s, a[, k])`` evaluated with batched GEMMs.

    Each member is ``[Linear -> GELU -> LayerNorm] x len(num_cells) -> Linear(1)``, every
    member initialised independently. With ``condition_on_steps=True`` (the released SORL
    code) the critic also reads the number of denoising steps ``k`` of the action it scores
    and learns ``Q(s, a, k)``; with ``False`` it is the paper's ``Q(s, a)``.

    As a TensorDict module it follows :class:`tensordict.nn.EnsembleModule`: it returns a
    new tensordict of batch size ``[E, *B]`` whose ``state_action_value`` is
    ``[E, *B, 1]``. From tensors use :meth:`values` and :meth:`aggregate`.

    Args:
        observation_dim: size of the observation vector (an integer >= 1).
        action_dim: size of the action vector (an integer >= 1).
        num_members: ensemble size ``E``, an integer >= 1 (paper: 2).
        num_cells: hidden sizes, integers >= 1 (paper: 4 x 512).
        condition_on_steps: feed the step count ``k`` as an extra input (a bool).
        step_feature: how ``k`` is fed: ``"steps"`` feeds ``k`` itself as a float (released
            code, quirk (f)); ``"log2"`` feeds the step code ``log2 k`` like the actor.
        layer_norm: LayerNorm after each hidden activation (a bool; paper: yes).
        layer_norm_eps: LayerNorm epsilon, finite and ``> 0`` (flax default ``1e-6``).
        in_keys: observation, action and (when conditioned) step-count keys.
        out_keys: the value key.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> critic = QEnsemble(observation_dim=3, action_dim=2, num_cells=(32, 32))
        >>> q = critic.values(torch.randn(5, 3), torch.rand(5, 2), inference_steps=4)
        >>> q.shape, critic.aggregate(q, "min").shape
        (torch.Size([2, 5, 1]), torch.Size([5, 1]))
        >>> td = TensorDict(
        ...     observation=torch.randn(5, 3), action=torch.rand(5, 2),
        ...     inference_steps=torch.full((5, 1), 4.0), batch_size=[5])
        >>> critic(td)["state_action_value"].shape
        torch.Size([2, 5, 1])
    """

    SETTINGS: ClassVar[Settings] = CRITIC_SETTINGS

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        num_members: int = 2,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        condition_on_steps: bool = True,
        step_feature: Literal["steps", "log2"] = "steps",
        layer_norm: bool = True,
        layer_norm_eps: float = 1e-6,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] = ("state_action_value",),
    ) -> None:
        super().__init__()
        settings = self.SETTINGS.check(
            {
                "observation_dim": observation_dim,
                "action_dim": action_dim,
                "num_members": num_members,
                "num_cells": num_cells,
                "condition_on_steps": condition_on_steps,
                "step_feature": step_feature,
                "layer_norm": layer_norm,
                "layer_norm_eps": layer_norm_eps,
            }
        )
        self.observation_dim = settings["observation_dim"]
        self.action_dim = settings["action_dim"]
        self.num_members = settings["num_members"]
        self.condition_on_steps = settings["condition_on_steps"]
        self.step_feature = settings["step_feature"]
        in_features = self.observation_dim + self.action_dim + int(self.condition_on_steps)
        self.network = EnsembleMLP(
            self.num_members,
            in_features,
            1,
            settings["num_cells"],
            settings["layer_norm"],
            settings["layer_norm_eps"],
        )
        if in_keys is None:
            in_keys = ["observation", "action"] + (
                ["inference_steps"] if condition_on_steps else []
            )
        expected = 3 if condition_on_steps else 2
        if len(in_keys) != expected:
            raise ValueError(
                f"QEnsemble(condition_on_steps={condition_on_steps}) needs {expected} in_keys "
                f"(observation, action{', inference_steps' if condition_on_steps else ''}), "
                f"got {list(in_keys)}."
            )
        self.in_keys = list(in_keys)
        self.out_keys = list(out_keys)

    def values(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        inference_steps: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Q values of every member.

        Float observations and actions of another dtype are converted to the critic's;
        integer ones are refused.

        Args:
            observation: ``[*B, observation_dim]``.
            action: ``[*B, action_dim]``.
            inference_steps: the step count ``k`` of the scored actions, a number (a power
                of two, checked) or a tensor broadcastable to ``[*B, 1]`` (not checked:
                that would cost a device sync); required iff ``condition_on_steps``.

        Returns:
            ``[E, *B, 1]``.
        """
        features = self.features(observation, action, inference_steps)
        flat = features.reshape(-1, features.shape[-1])
        return self.network(flat).reshape(self.num_members, *features.shape[:-1], 1)

    def features(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        inference_steps: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The network's input ``[s, a(, k)]``, ``[*B, in_features]`` (see :meth:`values`).

        Examples:
            >>> critic = QEnsemble(3, 2, num_cells=(8,))
            >>> critic.features(torch.zeros(4, 3), torch.ones(4, 2), 8)[0].tolist()
            [0.0, 0.0, 0.0, 1.0, 1.0, 8.0]
        """
        check_feature_dim(observation, self.observation_dim, "observation")
        check_feature_dim(action, self.action_dim, "action")
        checked = torch.compiler.is_compiling()  # compiled callers pass checked inputs
        if not checked:
            dtype = self.network.layers[0].weight.dtype
            observation = as_model_dtype(observation, dtype, "observation")
            action = as_model_dtype(action, dtype, "action")
        try:
            batch = torch.broadcast_shapes(observation.shape[:-1], action.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"observation batch shape {list(observation.shape[:-1])} and action batch "
                f"shape {list(action.shape[:-1])} do not broadcast: pass one action per "
                "observation (or observations that broadcast to the actions)."
            ) from None
        inputs = [observation.expand(*batch, -1), action.expand(*batch, -1)]
        if self.condition_on_steps:
            if inference_steps is None:
                raise ValueError(
                    "This QEnsemble is conditioned on the number of denoising steps "
                    "(condition_on_steps=True): pass inference_steps."
                )
            if isinstance(inference_steps, torch.Tensor):
                steps = inference_steps.to(action.dtype)
                steps = torch.log2(steps) if self.step_feature == "log2" else steps
            else:  # a number: filled on the device, no host-to-device copy
                if not checked:
                    inference_steps = check_power_of_two(inference_steps, "inference_steps")
                steps = float(inference_steps)
                steps = math.log2(steps) if self.step_feature == "log2" else steps
            inputs.append(feature_column(steps, inputs[1]))
        return torch.cat(inputs, dim=-1)

    @staticmethod
    def aggregate(values: torch.Tensor, how: QAggregation = "mean") -> torch.Tensor:
        """Aggregate ``[E, *B, 1]`` over members with ``"min"`` or ``"mean"`` -> ``[*B, 1]``."""
        return aggregate_q(values, how)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Return ``tensordict`` expanded to ``[E, *B]`` with ``state_action_value`` set."""
        present = set(tensordict.keys(True, True))
        missing = [key for key in self.in_keys if unravel_key(key) not in present]
        if missing:
            raise KeyError(
                f"QEnsemble needs the keys {missing} in the input tensordict; "
                f"it has {sorted(map(str, present))}."
            )
        inputs = [tensordict.get(key) for key in self.in_keys]
        values = self.values(*inputs)
        out = tensordict.expand(self.num_members, *tensordict.batch_size).clone(False)
        out.set(self.out_keys[0], values)
        return out

    def extra_repr(self) -> str:
        return (
            f"num_members={self.num_members}, condition_on_steps={self.condition_on_steps}, "
            f"step_feature={self.step_feature!r}"
        )
