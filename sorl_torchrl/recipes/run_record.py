"""A training run's record on disk: what makes a run dir finished, failed or resumable.

Every run dir (one per Hydra job) ends with exactly one of

- ``results.json``: ``status: finished``, the final (k, N) grid, every evaluation, final
  metrics, wall time, updates/s, git commit, package versions and the resolved config;
- ``failed.json``: ``status: failed``, the error and its traceback, and the config.

Both are written atomically, so a reader never sees half a file. A sweep relaunched into the
same directory skips runs whose ``results.json`` matches the current config, resumes runs that
left only a checkpoint, and restarts failed ones (see :func:`finished_results`).
"""

from __future__ import annotations

import json
import platform
import subprocess
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sorl_torchrl._io import atomic_write_text

RESULTS_NAME = "results.json"
FAILED_NAME = "failed.json"

#: Top-level config keys that do not change a run's results (where and how fast it runs,
#: how it logs; thread count and compilation change them only by float rounding). Two runs
#: that differ only in these are the same run.
BOOKKEEPING_KEYS = (
    "run_dir",
    "resume",
    "progress",
    "threads",
    "compile",
    "device",
    "data.root",
    "data.workers",
    "data.prefetch",
    "logger",
    "log_interval",
    "checkpoint_interval",
    "val_interval",
    "val_batches",
)


def utc_now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """The commit of the checkout holding ``path`` (default: this package) and if it is dirty.

    ``{"commit": None, "dirty": None}`` when the code is not in a git checkout (an installed
    wheel) or git is absent.
    """
    where = str(path or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", where, *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def versions() -> dict[str, str]:
    """Versions of Python and the packages that decide a run's numbers."""
    import tensordict
    import torch
    import torchrl

    import sorl_torchrl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "sorl_torchrl": sorl_torchrl.__version__,
    }


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}``; lists and empty dicts stay whole values.

    Examples:
        >>> flatten({"seed": 1, "env": {"name": "scene-play", "task": 2}})
        {'seed': 1, 'env.name': 'scene-play', 'env.task': 2}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_bookkeeping(key: str) -> bool:
    """Whether a flattened config key is one of :data:`BOOKKEEPING_KEYS` (or below one)."""
    return any(key == k or key.startswith(f"{k}.") for k in BOOKKEEPING_KEYS)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Settings (other than bookkeeping) that differ between two resolved configs.

    Examples:
        >>> config_differences({"seed": 1, "threads": 2}, {"seed": 3, "threads": 1})
        ['seed: stored 1, now 3']
    """
    a, b = flatten(old), flatten(new)
    return [
        f"{key}: stored {a.get(key)!r}, now {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if not is_bookkeeping(key) and a.get(key) != b.get(key)
    ]


def finished_results(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results if ``run_dir`` holds a finished run of ``config``, else ``None``.

    Raises:
        FileExistsError: the run dir holds a finished run with other settings; it is left as
            it is, and the message names each differing setting.
    """
    path = run_dir / RESULTS_NAME
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FileExistsError(
            f"{path} exists but cannot be read ({err}). Move it away to rerun the evaluation "
            "(pass resume=true to continue from the checkpoint), or choose another run_dir."
        ) from err
    if stored.get("status") != "finished":
        return None
    diffs = config_differences(stored.get("config", {}), config)
    if diffs:
        raise FileExistsError(
            f"{run_dir} holds a finished run with other settings:\n  "
            + "\n  ".join(diffs)
            + "\nPass resume=true to continue that run under the new settings (e.g. more "
            "updates), or choose another run_dir (hydra.sweep.dir for a sweep)."
        )
    return stored


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """Atomically write ``results.json`` (``status: finished``) and drop a stale failure."""
    path = run_dir / RESULTS_NAME
    atomic_write_text(path, json.dumps({"status": "finished", **results}, indent=2))
    (run_dir / FAILED_NAME).unlink(missing_ok=True)
    return path


def write_failure(run_dir: Path, error: BaseException, config: dict[str, Any]) -> Path:
    """Atomically write ``failed.json`` with the error, its traceback and the config."""
    env = config.get("env", {})
    record = {
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
        "traceback": "".join(traceback.format_exception(error)),
        "env": env.get("name"),
        "task": env.get("task"),
        "seed": config.get("seed"),
        "failed_at": utc_now(),
        "git": git_revision(),
        "config": config,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FAILED_NAME
    atomic_write_text(path, json.dumps(record, indent=2, default=str))
    return path
