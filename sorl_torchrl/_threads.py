"""CPU threads that degrade gracefully on a busy machine: one torch thread per run by default.

The networks of this project are small: a demo update is a few dozen GEMMs of 256 x 256, an
evaluation step a handful. With two torch intra-op threads every parallel region waits for
its second thread, so when other processes hold the cores (a sweep, a shared server, CI) a
run waits at every region: ``benchmarks/busy_machine.py`` measured the demo update 4-7 times
slower and env stepping 6-8 times slower next to two busy processes, on 2 CPUs. With one
thread the same work is 1.4-1.7 times slower than on the quiet machine, the evaluation is as
fast as with two threads on a quiet machine, and the update is about 35 % slower there
(``benchmarks/RESULTS.md``, "Threads on a busy machine"). No other setting measured (the
OpenMP wait policy ``PASSIVE``, or a short ``GOMP_SPINCOUNT``) kept both: they lose more on
a quiet machine than one thread does. So the default is one thread; a run that has the
machine to itself may ask for more (``threads=2`` in the recipes, ``--threads 2``).

Examples:
    >>> default_threads("cpu"), default_threads("cuda:0")
    (1, 1)
"""

from __future__ import annotations

import os

__all__ = ["configure_threads", "default_threads"]


def default_threads(device: object = "cpu") -> int:
    """The number of torch intra-op threads a run on ``device`` gets by default.

    ``OMP_NUM_THREADS`` when the environment sets it to a count, else 1 (see the module doc;
    on a CUDA device the CPU only launches kernels and samples batches).

    Args:
        device: a torch device or its name (``"cpu"``, ``"cuda:0"``).
    """
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    if str(device).split(":")[0] == "cpu" and requested.isdigit() and int(requested) >= 1:
        return int(requested)
    return 1


def configure_threads(threads: int | None, device: object = "cpu") -> int:
    """Apply ``threads`` (``None``: :func:`default_threads`) with ``torch.set_num_threads``.

    Args:
        threads: intra-op threads, an integer ``>= 1``, or ``None`` for the default.
        device: the run's device (chooses the default).

    Returns:
        The number of threads set.

    Raises:
        ValueError: ``threads`` is not ``None`` nor an integer ``>= 1``.

    Examples:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> configure_threads(1)
        1
        >>> configure_threads(0)
        Traceback (most recent call last):
        ...
        ValueError: threads must be None (the default) or an integer >= 1, got 0.
        >>> _ = configure_threads(before)
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads must be None (the default) or an integer >= 1, got {threads!r}.")
    import torch

    count = default_threads(device) if threads is None else threads
    torch.set_num_threads(count)
    return count
