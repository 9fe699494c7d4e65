"""Faults to inject: a full disk, a read-only dir, a hard kill, a NaN (never a conftest)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from sorl_torchrl import _io
from sorl_torchrl.data import generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
from recipe_helpers import REPO, compose_train, run_train_command, tiny_overrides  # noqa: E402

__all__ = [
    "REPO",
    "Disk",
    "NaNAt",
    "compose_train",
    "hidden_temp_files",
    "kill_when",
    "read_only",
    "run_train_command",
    "start_python",
    "tiny_cube",
    "tiny_overrides",
]

_DATASETS: dict[str, Path] = {}


def tiny_cube(tmp_path_factory) -> Path:
    """A 3-episode cube-single-play dataset (120 rows each), generated once per process."""
    if "cube" not in _DATASETS:
        root = tmp_path_factory.mktemp("ogbench-faults")
        generate_dataset(
            "cube-single-play-v0",
            out_dir=root,
            num_episodes=3,
            num_val_episodes=1,
            episode_length=120,
            seed=0,
            progress=False,
        )
        _DATASETS["cube"] = root
    return _DATASETS["cube"]


def hidden_temp_files(root: Path) -> list[Path]:
    """The temporary files atomic writes leave behind (``.<name>.<random>.tmp``)."""
    return sorted(p for p in Path(root).rglob(".*.tmp"))


# --------------------------------------------------------------------------- a full disk


class _Filling:
    """A file whose write fails with ENOSPC after ``room`` more bytes."""

    def __init__(self, handle, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, data) -> int:
        if not isinstance(data, str):
            data = memoryview(data).cast("B")
        size = len(data)
        if size > self._room:
            self._handle.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= size
        return self._handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


class Disk:
    """A disk that fills up: atomic writes fail with ENOSPC part-way once it is full.

    Args:
        files_left: Whole files that still fit (``None``: until :meth:`fill` is called).
        room: Bytes of the first file that no longer fits that are written before ENOSPC.
    """

    def __init__(self, files_left: int | None = None, room: int = 4096) -> None:
        self.files_left, self.room = files_left, room

    def fill(self) -> None:
        """From now on every write fails."""
        self.files_left = 0

    def patch(self, monkeypatch, module) -> None:
        """Make ``module.atomic_write`` write to this disk."""
        real = module.atomic_write

        @contextlib.contextmanager
        def atomic_write(path, mode: str = "wb") -> Iterator:
            with real(path, mode) as handle:
                if self.files_left == 0:
                    yield _Filling(handle, self.room)
                else:
                    if self.files_left is not None:
                        self.files_left -= 1
                    yield handle

        monkeypatch.setattr(module, "atomic_write", atomic_write)


# --------------------------------------------------------------------------- a read-only dir


@contextlib.contextmanager
def read_only(directory: Path, monkeypatch) -> Iterator[None]:
    """Make ``directory`` read-only for the block.

    The dir loses its write permission. Root ignores permissions, so there the atomic
    writer's temporary files in that dir also fail with ``EACCES``, as they would for
    anyone else.
    """
    directory = Path(directory)
    mode = directory.stat().st_mode
    directory.chmod(0o555)
    if os.geteuid() == 0:
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
            if dir is not None and Path(dir).resolve() == directory.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(_io.tempfile, "mkstemp", mkstemp)
    try:
        yield
    finally:
        directory.chmod(mode)


# --------------------------------------------------------------------------- a hard kill


def start_python(*args: str) -> subprocess.Popen:
    """``python ARGS`` from the repository root, its output discarded."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def kill_when(
    process: subprocess.Popen,
    ready: Callable[[], bool],
    delay: float = 0.0,
    timeout: float = 300.0,
) -> bool:
    """SIGKILL ``process`` ``delay`` s after ``ready()``; whether it was still running then."""
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    running = process.poll() is None
    if running:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return running


# --------------------------------------------------------------------------- a NaN


class NaNAt:
    """Wraps a recipe's ``build_algorithm``: one actor weight turns NaN before update ``update``.

    ``monkeypatch.setattr(train_module, "build_algorithm", NaNAt(build_algorithm, 13))``; the
    update is counted from the start of this process's run.
    """

    def __init__(self, build: Callable, update: int) -> None:
        self.build, self.update = build, update

    def __call__(self, cfg, runtime=None):
        modules = self.build(cfg, runtime)
        weight = next(iter(modules.loss.actor_network_params.values(True, True)))
        return dataclasses.replace(modules, update=_Poisoned(modules.update, weight, self.update))


class _Poisoned:
    """An update step that sets ``weight[0]`` to NaN before its ``at``-th call."""

    def __init__(self, update, weight: torch.Tensor, at: int) -> None:
        self._update, self._weight, self._at, self._calls = update, weight, at, 0

    def __call__(self, batch):
        self._calls += 1
        if self._calls == self._at:
            with torch.no_grad():
                self._weight.view(-1)[0] = float("nan")
        return self._update(batch)

    def __getattr__(self, name: str):
        return getattr(self._update, name)
