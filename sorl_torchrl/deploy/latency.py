"""Latency of one call on this machine: the first call and warm-up excluded, median and p99.

What :mod:`~sorl_torchrl.deploy.budget` measures each ``(k, N)`` with, and what
``sorl-export --latency`` compares the exported program with.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Latency", "machine_description", "measure_latency", "set_threads"]


@dataclass(frozen=True)
class Latency:
    """Wall-clock latency of one call, over ``repeats`` calls after the warm-up.

    Attributes:
        median_ms: median, in milliseconds.
        p99_ms: 99th percentile (linear interpolation), in milliseconds.
        first_call_s: the first call (compilation included, when there is one), in seconds;
            not part of the statistics.
        repeats: calls the statistics are over.
    """

    median_ms: float
    p99_ms: float
    first_call_s: float
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (for JSON)."""
        return asdict(self)


def measure_latency(
    call: Callable[[], Any],
    device: str | torch.device = "cpu",
    *,
    repeats: int = 100,
    warmup: int = 3,
) -> Latency:
    """Time ``call()``: once (reported apart), ``warmup`` more times, then ``repeats`` times.

    Each call is timed on its own, with a device synchronisation after it on CUDA, so the
    p99 sees the slow calls a control loop would.

    Args:
        call: what to time (no arguments).
        device: where it runs (synchronised after each call when CUDA).
        repeats: timed calls (at least 1).
        warmup: untimed calls after the first.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.

    Examples:
        >>> latency = measure_latency(lambda: torch.ones(8).sum(), repeats=20)
        >>> latency.repeats, latency.median_ms <= latency.p99_ms
        (20, True)
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}.")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed() -> float:
        start = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - start

    first = timed()
    for _ in range(warmup):
        timed()
    times = [timed() for _ in range(repeats)]
    return Latency(
        median_ms=1e3 * statistics.median(times),
        p99_ms=1e3 * float(np.percentile(times, 99)),
        first_call_s=first,
        repeats=repeats,
    )


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``, refusing a count below 1 with a clear message.

    Examples:
        >>> set_threads(0)
        Traceback (most recent call last):
        ...
        ValueError: threads must be an integer >= 1, got 0.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}.")
    torch.set_num_threads(threads)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Where a latency was measured: processor or GPU, torch version and threads.

    Examples:
        >>> sorted(machine_description("cpu"))
        ['cpu', 'device', 'logical_cpus', 'torch', 'torch_threads']
    """
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "logical_cpus": _usable_cpus(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
