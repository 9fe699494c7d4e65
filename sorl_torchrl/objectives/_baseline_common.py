"""What every loss of the package shares (SORL, baselines): TED keys, batch reading, swaps."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives.common import LossModule

from sorl_torchrl.modules.critic import QEnsemble
from sorl_torchrl.objectives.batch import read_ted_batch

__all__ = ["TEDKeys", "TEDLoss", "check_critic"]


@dataclass
class TEDKeys:
    """The tensordict keys every loss reads (its ``_AcceptedKeys``; ``loss.set_keys(...)``).

    A loss that reads more subclasses it (ReBRAC's ``next_action``, SORL's ``priority``).

    Attributes:
        observation: observation key (``("next", observation)`` is the next one).
            Defaults to ``"observation"``.
        action: dataset action key. Defaults to ``"action"``.
        reward: reward key, read under ``"next"``. Defaults to ``"reward"``.
        terminated: termination key, read under ``"next"``; ``mask = 1 - terminated``.
            Defaults to ``"terminated"``.
        done: episode-end key (not read: the TD target uses ``mask``). Defaults to ``"done"``.
    """

    observation: NestedKey = "observation"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    terminated: NestedKey = "terminated"
    done: NestedKey = "done"


def check_critic(qvalue_network: QEnsemble, actor: nn.Module, owner: str) -> None:
    """Refuse a critic that is no unconditioned :class:`QEnsemble` of the actor's sizes."""
    if not isinstance(qvalue_network, QEnsemble):
        raise TypeError(f"qvalue_network must be a QEnsemble, got {type(qvalue_network).__name__}.")
    if qvalue_network.condition_on_steps:
        raise ValueError(
            f"{owner} scores Q(s, a): build the QEnsemble with condition_on_steps=False."
        )
    sizes = (qvalue_network.observation_dim, qvalue_network.action_dim)
    if sizes != (actor.observation_dim, actor.action_dim):
        raise ValueError(
            f"actor_network and qvalue_network disagree on observation/action size: "
            f"(obs, act) = {(actor.observation_dim, actor.action_dim)} and {sizes}. Build both "
            "for the same environment."
        )


class TEDLoss(LossModule):
    """A loss on TED batches: ``observation``, ``action`` and ``("next", ...)`` keys.

    Subclasses set ``observation_dim``, ``action_dim`` and ``validate_inputs`` and own an
    ``actor_network``; ``EXTRA_IN_KEYS`` names the ``tensor_keys`` fields they read beyond
    the five of :func:`~sorl_torchrl.objectives.batch.read_ted_batch`.
    """

    EXTRA_IN_KEYS: tuple[str, ...] = ()

    @staticmethod
    def _swap(params: TensorDictBase, network: nn.Module) -> AbstractContextManager:
        """Evaluate ``network`` with ``params`` for the duration of a ``with`` block."""
        return params.to_module(network, preserve_module_state=False)

    def _set_in_keys(self) -> None:
        keys = self.tensor_keys
        self._in_keys = [
            keys.observation,
            keys.action,
            ("next", keys.observation),
            ("next", keys.reward),
            ("next", keys.terminated),
            *(getattr(keys, name) for name in self.EXTRA_IN_KEYS),
        ]

    @property
    def in_keys(self) -> list[NestedKey]:
        """The tensordict keys the loss reads."""
        if getattr(self, "_in_keys", None) is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values: list[NestedKey]) -> None:
        self._in_keys = values

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the networks compute in (batches of another float dtype are converted)."""
        first = next(self.actor_network_params.parameters(), None)
        return torch.get_default_dtype() if first is None else first.dtype

    def read_batch(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor]:
        """``observation, action, next_observation, reward, mask`` of a TED batch.

        See :func:`~sorl_torchrl.objectives.batch.read_ted_batch`: keys, shapes and dtypes
        are always checked, values when ``validate_inputs`` is on.
        """
        return read_ted_batch(
            tensordict,
            self.tensor_keys,
            self.observation_dim,
            self.action_dim,
            check_values=self.validate_inputs,
            dtype=self.dtype,
            owner=type(self).__name__,
        )
