"""Atomic, resumable training checkpoints (networks, targets, optimizers, RNG, sampler).

A checkpoint holds only tensors and plain containers (``dict``, ``list``, ``tuple``, ``str``,
numbers, ``bool``, ``None``), so it loads with ``torch.load(path, weights_only=True)``: no
code from the file runs while it is read. :func:`save_checkpoint` refuses anything else and
names where it is; :func:`get_rng_state` writes NumPy's generator state as a tensor and
numbers.

Checkpoints of format 1 (earlier versions) stored NumPy's state as an array, which a safe
load refuses. :func:`load_checkpoint` still reads them: it allows exactly the NumPy names an
array needs, and only for a file that then says it is of format 1.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sorl_torchrl._io import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "load_module_state",
    "save_checkpoint",
    "set_rng_state",
]

#: The format :func:`save_checkpoint` writes (tensors and plain containers only).
CHECKPOINT_FORMAT = "sorl-torchrl-checkpoint/2"
#: The format of earlier versions: NumPy's RNG state stored as an array.
_FORMAT_1 = "sorl-torchrl-checkpoint/1"

#: The only globals a format-1 file needs beyond tensors: those of NumPy's RNG state array.
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core  # NumPy 2 renamed numpy.core
_FORMAT_1_GLOBALS: dict[str, Any] = {
    "numpy.core.multiarray._reconstruct": _NUMPY_CORE.multiarray._reconstruct,
    "numpy._core.multiarray._reconstruct": _NUMPY_CORE.multiarray._reconstruct,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "numpy.dtypes.UInt32DType": type(np.dtype(np.uint32)),
}

#: Exact types (a NumPy float is a ``float`` subclass that a safe load refuses).
_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or from another configuration."""


def get_rng_state() -> dict[str, Any]:
    """The state of every RNG a training run draws from (torch CPU/CUDA, NumPy, ``random``).

    Only tensors and numbers: NumPy's ``MT19937`` key is an ``int64`` tensor.

    Examples:
        >>> state = get_rng_state()
        >>> a, b = torch.rand(2), np.random.rand()
        >>> set_rng_state(state)
        >>> torch.equal(a, torch.rand(2)), b == np.random.rand()
        (True, True)
        >>> state["numpy"]["key"].dtype
        torch.int64
    """
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states written by :func:`get_rng_state` (or by an earlier version)."""
    # RNG states are CPU byte tensors, whatever map_location a checkpoint was loaded with.
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    if isinstance(numpy_state, Mapping):
        key = np.asarray(numpy_state["key"].tolist(), dtype=np.uint32)
        numpy_state = (
            numpy_state["bit_generator"],
            key,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])


def _check_plain(value: Any, where: str) -> None:
    """Raise a ``TypeError`` naming the first value a ``weights_only`` load would refuse."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(
                    f"save_checkpoint: {where} has the key {key!r} of type "
                    f"{type(key).__name__}; use str or int keys."
                )
            _check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(
        f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__qualname__}. "
        "A checkpoint holds only tensors and plain containers (dict, list, tuple, str, int, "
        "float, bool, None), so that it loads with torch.load(weights_only=True): convert it "
        "first (torch.as_tensor for an array, a dict of its fields for an object)."
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same dir, then rename.

    A crash while writing leaves any previous checkpoint at ``path`` intact.

    Args:
        path: destination file.
        state: tensors, state dicts and plain containers (``dict``, ``list``, ``tuple``,
            ``str``, numbers, ``bool``, ``None``).

    Returns:
        The path written.

    Raises:
        TypeError: ``state`` holds another kind of object (the message says where).

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = save_checkpoint(target, {"step": 3, "rng": get_rng_state()})
        >>> load_checkpoint(target)["step"]
        3
        >>> torch.load(target, weights_only=True)["format"]
        'sorl-torchrl-checkpoint/2'
        >>> save_checkpoint(target, {"seen": np.zeros(2)})
        Traceback (most recent call last):
        ...
        TypeError: save_checkpoint: state['seen'] is a numpy.ndarray. A checkpoint holds only ...
    """
    _check_plain(state, "state")
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "state": state}, handle)
    return path


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {path} cannot be read ({type(err).__name__}: "
        f"{str(err).partition(chr(10))[0] or 'no details'}). "
        "It is truncated or corrupt; resume from an earlier checkpoint or start a new run."
    )


def _load_format_1(path: Path, map_location: Any) -> Any:
    """A file that a safe load refused: read it only if it needs NumPy's array names alone."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - not a zip checkpoint: damaged or foreign
        raise _unreadable(path, err) from err
    others = sorted(set(names) - set(_FORMAT_1_GLOBALS))
    if others:
        raise CheckpointError(
            f"{path} is not a sorl-torchrl checkpoint: it holds Python objects that a safe "
            f"load refuses ({', '.join(others)}). Load it with torch.load(weights_only=False) "
            "only if you trust where it came from."
        )
    allowed = [(value, name) for name, value in _FORMAT_1_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise _unreadable(path, err) from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT_1:
        raise CheckpointError(
            f"{path} holds NumPy arrays but is not a sorl-torchrl checkpoint of format 1 "
            f"({_FORMAT_1}); it was written by other code."
        )
    return payload


def _check_crc(path: Path) -> None:
    """Refuse a checkpoint whose zip records fail their CRC-32 (``torch.load`` does not check).

    A file that is no zip archive at all is left to ``torch.load``'s own error.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return
    except Exception as err:  # noqa: BLE001 - a damaged archive can fail in many ways
        raise _unreadable(path, err) from err
    if bad is not None:
        raise CheckpointError(
            f"Checkpoint {path} is corrupt: its record {bad} fails its CRC-32 check. Resume "
            "from an earlier checkpoint or start a new run."
        )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (any version), safely.

    Args:
        path: the checkpoint file.
        map_location: where its tensors go (as for ``torch.load``).

    Returns:
        The ``state`` that was saved.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt, or not a sorl-torchrl checkpoint.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "other.pt"
        >>> torch.save({"weights": torch.zeros(2)}, target)
        >>> load_checkpoint(target)
        Traceback (most recent call last):
        ...
        sorl_torchrl.checkpoint.CheckpointError: ... is not a sorl-torchrl checkpoint ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    _check_crc(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err).lower().replace(" ", "_"):
            raise _unreadable(path, err) from err
        payload = _load_format_1(path, map_location)
    except Exception as err:  # noqa: BLE001 - torch raises several types for damaged files
        raise _unreadable(path, err) from err
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, _FORMAT_1):
        raise CheckpointError(
            f"{path} is not a sorl-torchrl checkpoint (no {CHECKPOINT_FORMAT!r} marker): it "
            "was written by other code."
        )
    return payload["state"]


def load_module_state(module: nn.Module, saved: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Load ``saved`` into ``module``, every tensor with its shape, or say what does not fit.

    Args:
        module: the module built from the checkpoint's config.
        saved: its state dict as the checkpoint holds it.
        path: the checkpoint (named in the error).

    Raises:
        CheckpointError: a weight is missing, unexpected or of another shape (each named,
            the first ten listed).

    Examples:
        >>> load_module_state(nn.Linear(2, 3), {"weight": torch.zeros(3, 2)}, "ckpt.pt")
        Traceback (most recent call last):
        ...
        sorl_torchrl.checkpoint.CheckpointError: The weights in ckpt.pt do not fit ...
          missing from the checkpoint: bias
        ...
    """
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{path} holds no state dict of the networks (got {type(saved)}).")
    expected = module.state_dict()
    problems = [f"missing from the checkpoint: {key}" for key in expected if key not in saved]
    problems += [f"not in the model: {key}" for key in saved if key not in expected]
    problems += [
        f"{key}: checkpoint {tuple(saved[key].shape)}, model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in saved and tuple(getattr(saved[key], "shape", ())) != tuple(value.shape)
    ]
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if problems[10:] else [])
        raise CheckpointError(
            f"The weights in {path} do not fit the networks its config builds:\n  "
            + "\n  ".join(shown)
            + "\nThe checkpoint was written by other code or edited; load it with the "
            "sorl-torchrl version that wrote it."
        )
    module.load_state_dict(saved)
