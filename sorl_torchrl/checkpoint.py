"""Atomic, resumable training checkpoints (networks, targets, optimizers, RNG, sampler)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sorl_torchrl._io import atomic_write

__all__ = [
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

_FORMAT = "sorl-torchrl-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or from another configuration."""


def get_rng_state() -> dict[str, Any]:
    """The state of every RNG a training run draws from (torch CPU/CUDA, NumPy, ``random``).

    Examples:
        >>> state = get_rng_state()
        >>> a = torch.rand(2)
        >>> set_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states written by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same dir, then rename.

    A crash while writing leaves any previous checkpoint at ``path`` intact.

    Args:
        path: destination file.
        state: anything ``torch.save`` can write (tensors, state dicts, plain containers).

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = save_checkpoint(target, {"step": 3})
        >>> load_checkpoint(target)["step"]
        3
    """
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save({"format": _FORMAT, "state": state}, handle)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt, or not a sorl-torchrl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({type(err).__name__}: {err}). It is truncated "
            "or corrupt; resume from an earlier checkpoint or start a new run."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a sorl-torchrl checkpoint ({_FORMAT}).")
    return payload["state"]
