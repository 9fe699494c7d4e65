"""Where and how a run executes: the device, compilation and data loading it gets by default.

``device=auto`` and ``compile=auto`` (the defaults of ``sorl-train``) resolve here, once, when
the run starts; the run record keeps both what was asked and what was chosen.

- ``device=auto``: the current CUDA device when torch sees a GPU, else the CPU.
- ``compile=auto``: compile the update on CUDA, always; on the CPU only for runs of at least
  :data:`CPU_COMPILE_MIN_UPDATES` updates: twice the measured break-even (compiling every
  graph costs minutes there and saves milliseconds per update; ``benchmarks/RESULTS.md``,
  "Compile break-even").
- data: batches are sampled on the CPU; for a GPU run they are collated in pinned memory and
  prefetched (``data.prefetch``, default :data:`GPU_PREFETCH`) so the copy to the device
  overlaps the update.
"""

from __future__ import annotations

import dataclasses

import torch
from omegaconf import DictConfig

from sorl_torchrl._validation import check_compile, check_device

__all__ = [
    "CPU_COMPILE_MIN_UPDATES",
    "GPU_PREFETCH",
    "Runtime",
    "resolve_compile",
    "resolve_runtime",
]

#: ``compile=auto`` compiles a CPU run of at least this many updates (see the module doc).
CPU_COMPILE_MIN_UPDATES = 25_000

#: Batches prefetched in the background for a GPU run when ``data.prefetch`` is null.
GPU_PREFETCH = 2


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What a run executes on, resolved from ``device``, ``compile`` and ``data.prefetch``.

    Attributes:
        device: the torch device the networks and batches live on.
        compile_mode: the ``torch.compile`` mode of the update, or ``None`` (eager).
        compile_reason: why, in words (for the log and the run record).
        pin_memory: collate batches in pinned memory (GPU runs).
        prefetch: batches sampled ahead in a background thread (``None``: none).
    """

    device: torch.device
    compile_mode: str | None
    compile_reason: str
    pin_memory: bool
    prefetch: int | None

    def as_record(self) -> dict:
        """The fields the run record keeps (JSON-ready)."""
        return {
            "device": str(self.device),
            "compile_mode": self.compile_mode,
            "compile_reason": self.compile_reason,
            "pin_memory": self.pin_memory,
            "prefetch": self.prefetch,
        }


def resolve_compile(
    value: object, device: torch.device, num_updates: int
) -> tuple[str | None, str]:
    """The compile mode a ``compile`` setting means for a run, and why.

    Examples:
        >>> cpu = torch.device("cpu")
        >>> resolve_compile("auto", cpu, 200)
        (None, 'compile=auto: eager, a CPU run of 200 updates is below 25000 ...')
        >>> resolve_compile("auto", cpu, 1_000_000)[0], resolve_compile(False, cpu, 10**6)[0]
        ('default', None)
        >>> resolve_compile("auto", torch.device("cuda"), 200)[0]
        'default'
    """
    if value != "auto":
        mode = check_compile(value)
        return mode, f"compile={value}"
    if device.type == "cuda":
        return "default", "compile=auto: compiled, the run is on CUDA"
    if num_updates >= CPU_COMPILE_MIN_UPDATES:
        return "default", (
            f"compile=auto: compiled, a CPU run of {num_updates} updates is at least "
            f"{CPU_COMPILE_MIN_UPDATES} (compiling repays itself)"
        )
    return None, (
        f"compile=auto: eager, a CPU run of {num_updates} updates is below "
        f"{CPU_COMPILE_MIN_UPDATES} (compiling would cost more than it saves; compile=true "
        "forces it)"
    )


def resolve_runtime(cfg: DictConfig) -> Runtime:
    """The run's device, compile mode and data loading, from a (validated) config.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"device": "cpu", "compile": "auto", "num_updates": 100,
        ...                         "data": {"prefetch": None}})
        >>> runtime = resolve_runtime(cfg)
        >>> runtime.device, runtime.compile_mode, runtime.pin_memory, runtime.prefetch
        (device(type='cpu'), None, False, None)
    """
    device = check_device(cfg.device)
    mode, reason = resolve_compile(cfg.get("compile", "auto"), device, int(cfg.num_updates))
    on_gpu = device.type == "cuda"
    prefetch = cfg.data.get("prefetch") if "data" in cfg else None
    if prefetch is None and on_gpu:
        prefetch = GPU_PREFETCH
    return Runtime(device, mode, reason, pin_memory=on_gpu, prefetch=prefetch)
