"""Divergence detection for the training loop, without a host synchronisation per update.

Every update, :meth:`DivergenceMonitor.record` copies the update step's losses and gradient
norms (:data:`DIVERGENCE_TERMS`) into one row of a small buffer on the training device: one
``torch.stack`` into a preallocated row, no host synchronisation. :meth:`DivergenceMonitor.check`
reads the rows written since the last check on the host (one small copy) and returns the
first update whose values were NaN or infinite, with the terms that were. The training recipe
checks at its log interval, before every checkpoint and evaluation, and at the end, so a
checkpoint never holds weights trained past a non-finite value. A run that diverged records
``status: diverged`` with a ``divergence`` entry (:func:`divergence_fields`), and
:func:`refuse_diverged` keeps a rerun with the same settings from repeating it.

Examples:
    >>> from tensordict import TensorDict
    >>> monitor = DivergenceMonitor(window=4, terms=("loss_actor", "grad_norm_actor"))
    >>> for update, value in enumerate([1.0, 2.0, float("nan"), 3.0], start=1):
    ...     monitor.record(update, TensorDict(loss_actor=torch.tensor(value),
    ...                                       grad_norm_actor=torch.tensor(0.5)))
    >>> monitor.check()
    Divergence(update=3, terms=('loss_actor',), detected_at=4)
    >>> monitor.check().describe()
    'loss_actor became non-finite (NaN or inf) at update 3'
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase

from sorl_torchrl._cli import EXIT_FAILURE, UserError
from sorl_torchrl.recipes.run_record import (
    RESULTS_NAME,
    read_record,
    record_identity,
    resume_differences,
)

__all__ = [
    "DIVERGENCE_TERMS",
    "ON_DIVERGENCE",
    "Divergence",
    "DivergenceError",
    "DivergenceMonitor",
    "describe_divergence",
    "divergence_fields",
    "refuse_diverged",
]

#: The values of ``SORLUpdateStep``'s output that must stay finite: the losses and the
#: global gradient norms (before clipping) of both steps.
DIVERGENCE_TERMS: tuple[str, ...] = (
    "loss_qvalue",
    "loss_actor",
    "fm_loss",
    "sc_loss",
    "q_loss",
    "grad_norm_critic",
    "grad_norm_actor",
    # the baselines' (algo=fql|iql|rebrac|bc): their own terms, one gradient norm
    "loss_value",
    "loss_bc_flow",
    "grad_norm",
)

#: The values of the training recipe's ``on_divergence`` setting.
ON_DIVERGENCE: tuple[str, ...] = ("stop", "continue")


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first update whose values a :class:`DivergenceMonitor` found not finite.

    Attributes:
        update: That update, counted from 1 as checkpoints count them.
        terms: The terms that were NaN or infinite at that update.
        detected_at: The last update the check that found it covered.
    """

    update: int
    terms: tuple[str, ...]
    detected_at: int

    def describe(self) -> str:
        """One clause: which terms went non-finite, at which update."""
        return f"{', '.join(self.terms)} became non-finite (NaN or inf) at update {self.update}"


class DivergenceMonitor:
    """Watch an update step's outputs for non-finite values at no per-update host sync.

    Args:
        window: Rows of the device buffer: the most updates between two checks. A caller
            that checks less often costs one host synchronisation per ``window`` updates.
        terms: Keys of the update step's output to watch; those it does not report are
            skipped (at least one must be there).
    """

    def __init__(self, window: int, terms: Sequence[str] = DIVERGENCE_TERMS) -> None:
        if int(window) < 1:
            raise ValueError(f"window must be at least 1 update, got {window}.")
        self.window = int(window)
        self.terms = tuple(terms)
        #: The first divergence found (kept once found).
        self.first: Divergence | None = None
        self._watched: tuple[str, ...] = ()
        self._buffer: torch.Tensor | None = None
        self._updates: list[int] = []

    def _allocate(self, info: TensorDictBase) -> torch.Tensor:
        self._watched = tuple(key for key in self.terms if key in info.keys())
        if not self._watched:
            raise KeyError(
                f"The update step reports none of the terms {list(self.terms)} to watch for "
                f"divergence (it reports {sorted(info.keys())}); pass terms= with its keys."
            )
        values = [info.get(key) for key in self._watched]
        dtype = functools.reduce(torch.promote_types, (value.dtype for value in values))
        return torch.empty(self.window, len(values), dtype=dtype, device=values[0].device)

    def record(self, update: int, info: TensorDictBase) -> None:
        """Copy the watched terms of ``update`` into the device buffer (no host sync).

        Args:
            update: The update's number (from 1).
            info: The update step's output: 0-d tensors, on the training device.
        """
        if self._buffer is None:
            self._buffer = self._allocate(info)
        if len(self._updates) == self.window:
            self.check()
        row = self._buffer[len(self._updates)]
        torch.stack([info.get(key) for key in self._watched], out=row)
        self._updates.append(update)

    def check(self) -> Divergence | None:
        """The first divergence seen so far; reads the rows recorded since the last check.

        The only host synchronisation: one copy of those rows' finiteness.
        """
        if self._updates:
            assert self._buffer is not None
            bad = (~torch.isfinite(self._buffer[: len(self._updates)])).cpu()
            rows = bad.any(dim=1).nonzero().flatten().tolist()
            if rows and self.first is None:
                terms = tuple(key for key, b in zip(self._watched, bad[rows[0]].tolist()) if b)
                self.first = Divergence(self._updates[rows[0]], terms, self._updates[-1])
            self._updates.clear()
        return self.first


def divergence_fields(
    divergence: Divergence, checkpoint: Path, checkpoint_update: int | None
) -> dict[str, Any]:
    """The record's ``divergence`` entry: what went non-finite, when, and the last good weights.

    Examples:
        >>> divergence_fields(Divergence(37, ("loss_qvalue",), 40), Path("run/ckpt.pt"), 30)
        ... # doctest: +NORMALIZE_WHITESPACE
        {'update': 37, 'terms': ['loss_qvalue'], 'detected_at_update': 40,
         'last_good_checkpoint': 'run/ckpt.pt', 'last_good_update': 30}
    """
    return {
        "update": divergence.update,
        "terms": list(divergence.terms),
        "detected_at_update": divergence.detected_at,
        "last_good_checkpoint": str(checkpoint) if checkpoint_update is not None else None,
        "last_good_update": checkpoint_update,
    }


class DivergenceError(UserError, RuntimeError):
    """Training produced a non-finite loss or gradient norm and was stopped.

    A console command reports it in one message, without a traceback, and exits with status
    1: the run ran and its check failed (:mod:`sorl_torchrl._cli`).

    Args:
        fields: The record's ``divergence`` entry (:func:`divergence_fields`).

    Examples:
        >>> fields = divergence_fields(Divergence(37, ("loss_qvalue",), 40), Path("c.pt"), 30)
        >>> print(DivergenceError(fields))  # doctest: +NORMALIZE_WHITESPACE
        Training diverged: loss_qvalue became non-finite (NaN or inf) at update 37 (found by
        the check at update 40). The last good checkpoint is c.pt (update 30); none was
        written after it. Lower optim.lr or optim.grad_clip_norm, check the dataset's value
        ranges (`sorl-data verify FILE` prints each key's min and max), or pass
        on_divergence=continue to train on regardless.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        super().__init__(
            f"Training diverged: {describe_divergence(fields)} Lower optim.lr or "
            "optim.grad_clip_norm, check the dataset's value ranges (`sorl-data verify FILE` "
            "prints each key's min and max), or pass on_divergence=continue to train on "
            "regardless."
        )


def describe_divergence(fields: dict[str, Any]) -> str:
    """What went non-finite, when, and where the last good weights are (from the record)."""
    what = Divergence(fields["update"], tuple(fields["terms"]), fields["detected_at_update"])
    if fields["last_good_update"] is None:
        kept = "No checkpoint was written before it."
    else:
        kept = (
            f"The last good checkpoint is {fields['last_good_checkpoint']} (update "
            f"{fields['last_good_update']}); none was written after it."
        )
    return f"{what.describe()} (found by the check at update {what.detected_at}). {kept}"


def refuse_diverged(run_dir: Path, identity: dict[str, Any]) -> None:
    """Refuse to rerun a run of ``identity`` whose record says it diverged.

    Rerunning it resumes from its last good checkpoint, or starts it again, with the same
    settings: on CPU it diverges again at the same update. A record of another identity is
    left to the resume checks, which name every difference.

    Raises:
        FileExistsError: The run dir holds a diverged run of ``identity`` (perhaps with
            fewer updates or other evaluation settings); the message says what to do.
    """
    stored = read_record(run_dir)
    if stored is None or stored.get("status") != "diverged":
        return
    if resume_differences(record_identity(stored), identity, f"{run_dir}'s record"):
        return
    fields = stored.get("divergence")
    what = describe_divergence(fields) if fields else f"{stored.get('error')}."
    if fields and fields["last_good_update"] is not None:
        way = (
            "or pass resume=true to continue it from its last good checkpoint (with "
            "on_divergence=continue to train on past the divergence)"
        )
    else:
        way = f"or remove {Path(run_dir) / RESULTS_NAME} to start it again"
    raise FileExistsError(
        f"{run_dir} holds a run of these settings that diverged: {what} Rerunning it would "
        f"diverge again: change a setting (e.g. a lower optim.lr) in another run_dir, {way}."
    )
