"""Online transitions for offline-to-online fine-tuning, and the batches that mix them in.

:class:`OnlineTransitions` keeps the transitions a collector gathers in a TorchRL
:class:`~torchrl.data.ReplayBuffer` (a :class:`~torchrl.data.LazyTensorStorage`), in the TED
layout and with exactly the entries of the offline batches, so the losses read both alike:

- ``observation``, ``action`` and ``("next", ...)`` ``observation``, ``reward``, ``done``,
  ``terminated``, ``truncated`` as the env wrote them (OGBench's rewards are kept as they are,
  and only ``terminated`` stops the bootstrap, as in the released code's ``masks``);
- ``("next", "action")``: the action of the row written after it, as the offline data's
  ``action[min(i + 1, n - 1)]`` (the released code's ``next_actions``, which ReBRAC's critic
  penalty reads): the newest row holds its own action until the next one arrives, and the
  last row of an episode holds the next episode's first action (quirk (g), as offline);
- ``episode`` (when the offline rows have it): ``-1 - i`` for the ``i``-th online episode, so
  online rows never share an id with the dataset's episodes.

:class:`MixedBatches` draws the training batches of the online phase as the released code
does (``--balanced_sampling``):

- ``balanced=False`` (the default): uniformly, with replacement, from the union of the
  offline rows and the online ones (the released ring buffer holds the dataset with the online
  rows appended; every online row is kept here);
- ``balanced=True``: half the batch from the offline rows, half from the online ones, each
  uniformly with replacement.

Both draw their indices from torch's global RNG, so a run restored with its RNG state and
its transitions draws the same batches.

Examples:
    >>> import torch
    >>> from tensordict import TensorDict
    >>> def rows(n, offset=0.0):
    ...     return TensorDict({
    ...         "observation": torch.arange(n, dtype=torch.float32)[:, None] + offset,
    ...         "action": torch.arange(n, dtype=torch.float32)[:, None] + offset,
    ...         ("next", "observation"): torch.zeros(n, 1),
    ...         ("next", "action"): torch.zeros(n, 1),
    ...         ("next", "reward"): torch.zeros(n, 1),
    ...         ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
    ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
    ...         ("next", "truncated"): torch.zeros(n, 1, dtype=torch.bool),
    ...     }, batch_size=[n])
    >>> offline = rows(6)
    >>> online = OnlineTransitions(offline[:1], capacity=10)
    >>> for step in rows(3, offset=100.0).split(1):
    ...     online.add(step.exclude(("next", "action")))
    >>> len(online), online[torch.arange(3)]["next", "action"].flatten().tolist()
    (3, [101.0, 102.0, 102.0])
    >>> batches = MixedBatches(offline, online, batch_size=8, balanced=True)
    >>> batch = batches.sample()
    >>> int((batch["observation"] >= 100).sum())  # half online
    4
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer

__all__ = ["MixedBatches", "OnlineTransitions"]

NEXT_ACTION = ("next", "action")


class OnlineTransitions:
    """The online phase's transitions, with the entries of an offline batch.

    Args:
        example: one offline row or batch (a TED tensordict); the online rows get its entries,
            shapes and dtypes.
        capacity: how many transitions fit (the run's online steps: none is dropped).
        device: where the rows live (default: the example's device).

    Raises:
        ValueError: ``capacity`` is not a positive integer.
    """

    def __init__(
        self, example: TensorDictBase, capacity: int, device: torch.device | str | None = None
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}.")
        row = example.reshape(-1)[0] if example.batch_dims else example
        if device is None:
            device = row.device if row.device is not None else "cpu"
        self.device = torch.device(device)
        self.template = row.to(self.device).clone()
        self.keys = [key for key in self.template.keys(True, True)]
        self.capacity = capacity
        self.buffer = ReplayBuffer(
            storage=LazyTensorStorage(capacity, device=self.device), batch_size=None
        )
        self.episodes = 0  # online episodes finished so far

    def __len__(self) -> int:
        return len(self.buffer)

    def __getitem__(self, index: torch.Tensor) -> TensorDictBase:
        """The rows at ``index`` (a 1-d tensor of row numbers)."""
        return self.buffer.storage.get(index)

    def add(self, transitions: TensorDictBase) -> None:
        """Append collected transitions (a collector's batch, any batch shape), in order.

        Raises:
            KeyError: a transition lacks an entry the offline rows have (named, with the
                entries it has).
            RuntimeError: the buffer is full (``capacity`` rows).
        """
        for step in transitions.reshape(-1).unbind(0):
            self._add_one(step)

    def _add_one(self, step: TensorDictBase) -> None:
        if len(self) >= self.capacity:
            raise RuntimeError(
                f"The online buffer is full ({self.capacity} transitions): it holds as many "
                "transitions as the run has online steps."
            )
        row = self.template.clone()
        present = set(step.keys(True, True))
        for key in self.keys:
            if key == NEXT_ACTION:
                continue  # set below, from this row's action and the next row's
            if key in present:
                value = row.get(key)
                row.set(key, step.get(key).to(self.device, value.dtype).reshape_as(value))
            elif key == "episode":
                row.set(key, torch.full_like(row.get(key), -1 - self.episodes))
            else:
                raise KeyError(
                    f"A collected transition has no {key!r} entry, which the offline batches "
                    f"have; it has {sorted(map(str, present))}. Collect from the env the "
                    "dataset was recorded in."
                )
        if NEXT_ACTION in self.keys:
            row.set(NEXT_ACTION, row.get("action"))
        if NEXT_ACTION in self.keys and len(self) > 0:
            last = torch.tensor([len(self) - 1], device=self.device)
            previous = self.buffer.storage.get(last)
            previous.set(NEXT_ACTION, row.get("action").unsqueeze(0))
            self.buffer.storage.set(last, previous, set_cursor=False)  # rewrite, not append
        self.buffer.add(row)
        if bool(row.get(("next", "done")).any()):
            self.episodes += 1

    def state_dict(self) -> dict[str, Any]:
        """The rows (plain tensors) and the episode count, for a checkpoint.

        :meth:`load_state_dict` restores them into a buffer of any capacity that holds
        them (a run extended to more online steps has a larger one).
        """
        rows = self[torch.arange(len(self), device=self.device)] if len(self) else None
        return {
            "rows": {} if rows is None else rows.to_dict(),
            "count": len(self),
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the rows and counts with those :meth:`state_dict` returned.

        Raises:
            ValueError: more rows than :attr:`capacity`.
        """
        count = int(state["count"])
        if count > self.capacity:
            raise ValueError(
                f"The checkpoint holds {count} online transitions, more than this run's "
                f"{self.capacity} online steps: pass online_steps>={count}."
            )
        self.buffer.empty()
        if count:
            rows = TensorDict(state["rows"], batch_size=[count], device=self.device)
            self.buffer.extend(rows.select(*self.keys))
        self.episodes = int(state["episodes"])


class MixedBatches:
    """Training batches of the online phase: offline rows and online ones, as configured.

    Args:
        offline: the offline data, indexable by a tensor of row numbers (``buffer[index]``);
            e.g. the training :class:`~sorl_torchrl.data.OGBenchExperienceReplay`.
        online: the online transitions.
        batch_size: rows per batch.
        balanced: half offline and half online (true), or uniform over their union (false).
    """

    def __init__(
        self, offline: Any, online: OnlineTransitions, batch_size: int, *, balanced: bool
    ) -> None:
        self.offline, self.online = offline, online
        self.batch_size, self.balanced = batch_size, balanced
        self.num_offline = len(offline)

    def sample(self) -> TensorDictBase:
        """One batch (offline rows first); needs at least one online row."""
        num_online = len(self.online)
        if num_online == 0:
            raise RuntimeError("No online transition yet: add one before sampling a batch.")
        if self.balanced:
            half = self.batch_size // 2
            offline_rows = torch.randint(self.num_offline, (self.batch_size - half,))
            online_rows = torch.randint(num_online, (half,))
        else:
            rows = torch.randint(self.num_offline + num_online, (self.batch_size,))
            offline_rows = rows[rows < self.num_offline]
            online_rows = rows[rows >= self.num_offline] - self.num_offline
        offline = self.offline[offline_rows].to(self.online.device)
        online = self.online[online_rows.to(self.online.device)]
        return torch.cat([offline.select(*self.online.keys), online], 0)
