"""A training run's identity and its one record on disk.

**The run identity.** :func:`run_identity` is the one definition of which settings identify a
run: every flattened config key except the :data:`BOOKKEEPING_KEYS` (where and how fast it
runs, how it logs) and ``hydra.*``. It holds the seed, the sizes of the updates and the
networks, every loss, optimizer and evaluation setting, and the data: ``data.dataset_name``
(the file trained on, e.g. ``cube-single-play-v0``) and ``data.fingerprint`` (the SHA-256 of
that file, see :mod:`sorl_torchrl.data.fingerprint`), which the training recipe adds to the
config it records. The same identity decides

- whether a run dir already holds a finished run of a command (:func:`finished_results`),
- whether a checkpoint may be resumed (:func:`resume_differences`: only the run's length
  ``num_updates`` and its evaluation settings ``eval.*`` may change, as neither changes the
  weights a checkpoint holds; a resume *extends* a run, it never shortens it),
- a sweep job's dir name (:func:`run_dirname`, the ``sorl.run_dirname`` resolver of
  ``hydra.sweep.subdir``): the job's overrides minus the bookkeeping ones,
- the variants of a sweep report, and ``sorl-evaluate``'s check of a checkpoint against its
  run dir's record.

**The record.** Every run dir holds one ``results.json``, rewritten atomically (a reader never
sees half a file): ``status: running`` when a run starts (its ``run_key``, config, dataset,
code version, and from which update it continues), then ``status: finished`` with the final
(k, N) grid, every evaluation and final metrics, or ``status: failed`` with the error and its
traceback, or ``status: diverged`` when a loss or gradient norm went non-finite (its
``divergence`` entry names the update, the terms and the last good checkpoint; a run that
trained on with ``on_divergence=continue`` has its grid too, and is never ``finished``). A
record that stays ``running`` after its process is gone marks a killed run: rerunning the
command resumes it from its checkpoint (rerunning a diverged run is refused, see
:mod:`sorl_torchrl.recipes.divergence`). A record that cannot be written (a full disk, a
read-only run dir) is an :class:`OSError` that names the file (:func:`writing`). Run dirs
written by earlier versions may hold a separate ``failed.json`` instead; it is still read
(:func:`read_record`), and removed once a new run claims the dir.

Records written before the data was part of the identity have no ``data.*`` keys: they are
compared without them (a warning says so). Records written before the recipe trained other
algorithms have no ``algo.name``: :data:`IMPLIED_SETTINGS` gives it (``sorl``), so a SORL
run's identity is the same with or without it. The baselines' per-environment blocks of the
env config (:data:`DERIVED_KEYS`) are no part of any identity: a run reads them through its
``loss.*``, which the identity holds. The ``env.observation_dim`` / ``env.action_dim`` of
older configs are no longer settings (the sizes come from the dataset spec) and are dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import traceback
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sorl_torchrl._io import atomic_write_text

__all__ = [
    "BOOKKEEPING_KEYS",
    "CHECKPOINT_NAME",
    "DATA_KEYS",
    "DERIVED_KEYS",
    "EXTEND_KEYS",
    "FAILED_NAME",
    "IMPLIED_SETTINGS",
    "RESULTS_NAME",
    "RunRecord",
    "finished_results",
    "flatten",
    "identity_differences",
    "is_bookkeeping",
    "read_record",
    "record_identity",
    "register_resolvers",
    "resume_differences",
    "run_dirname",
    "run_identity",
    "with_dataset",
    "writing",
]

log = logging.getLogger("sorl.train")

RESULTS_NAME = "results.json"
CHECKPOINT_NAME = "checkpoint.pt"
#: The failure record of earlier versions (read, never written).
FAILED_NAME = "failed.json"

#: Flattened config keys (each also covers the keys below it) that never change a run's
#: results. Two runs that differ only in these are the same run.
BOOKKEEPING_KEYS: tuple[str, ...] = (
    # where the run's files go, and whether it continues an earlier run
    "run_dir",
    "resume",
    # how fast it runs: thread count, compilation and device change numbers by float rounding
    "threads",
    "compile",
    "device",
    # where the data is read from and how (the data itself is data.fingerprint)
    "data.root",
    "data.generate_if_missing",
    "data.source",  # the files' provenance is checked against it before training
    "data.download_if_missing",
    "data.num_episodes",
    "data.workers",
    "data.prefetch",
    # what it logs, how often it checkpoints and validates (validation restores the RNG)
    "progress",
    "logger",
    # what a divergence does (stop or train on): the record's status says it diverged
    "on_divergence",
    "log_interval",
    "checkpoint_interval",
    "val_interval",
    "val_batches",
    # how the evaluation envs run (in this process or one process each): same episodes
    "eval.parallel",
    # config groups that only say how a sweep is launched (they set hydra.* and device)
    "launcher",
    "sweep",
    "hydra",
)

#: Identity keys a resume may change: the run's length (offline updates, online steps) and
#: its evaluation settings.
EXTEND_KEYS: tuple[str, ...] = ("num_updates", "online_steps", "eval")

#: The data part of the identity, added to the recorded config by the training recipe.
DATA_KEYS: tuple[str, ...] = ("data.dataset_name", "data.fingerprint")

#: Keys older configs held that are no longer settings (dropped from their identities).
RETIRED_KEYS: tuple[str, ...] = ("env.observation_dim", "env.action_dim")

#: Settings with the value that every record written before them implied: one with that
#: value is left out of the identity, so an older record compares equal to a new one.
IMPLIED_SETTINGS: dict[str, Any] = {
    "algo.name": "sorl",
    "data.dataset": None,
    # offline-to-online fine-tuning (sorl_torchrl.recipes.online): off by default
    "init_from": None,
    "online_steps": 0,
    "online.balanced_sampling": False,
    "online.inference_steps": None,
    "online.num_candidates": 1,
    "online.temperature": 1.0,
    "online.eval_interval": 0,
    "online.eval_before": True,
    "online.env_seed": None,
    "online.max_episode_steps": None,
    # videos of the evaluations (eval.*, which a resume may change)
    "eval.video_episodes": 0,
    "eval.video_size": [256, 256],
    "eval.video_fps": 30,
}

#: Config keys (and the keys below them) whose values reach a run only through other keys
#: of its identity: the baselines' per-environment blocks, read through ``loss.*``.
DERIVED_KEYS: tuple[str, ...] = ("env.fql", "env.iql", "env.rebrac")

#: Command-line overrides that select what :data:`IMPLIED_SETTINGS` implies (left out of
#: sweep dir names, so ``algo=sorl,fql`` reuses an earlier SORL sweep's dirs).
_IMPLIED_OVERRIDES: dict[str, str] = {"algo": "sorl", "algo.name": "sorl"}


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


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in prefixes)


def is_bookkeeping(key: str) -> bool:
    """Whether a flattened config key is one of :data:`BOOKKEEPING_KEYS` (or below one).

    Examples:
        >>> [is_bookkeeping(k) for k in ("threads", "logger.backend", "seed", "data.root")]
        [True, True, False, True]
    """
    return _covered(key, BOOKKEEPING_KEYS)


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """Every setting that identifies a run, flat and sorted: ``{"a.b": value}``.

    Bookkeeping, retired and derived keys, ``hydra.*`` and settings at their implied value
    (``algo.name: sorl``) are removed; values are normalised to
    their JSON form, so an identity read back from ``results.json`` or a checkpoint compares
    equal to a fresh one. An identity passed in again comes back unchanged.

    Args:
        config: A resolved config (nested, as recorded), or an identity.

    Examples:
        >>> config = {"seed": 3, "threads": 2, "logger": {"backend": "csv"},
        ...           "optim": {"lr": 1e-4}, "network": {"actor_cells": (32, 32)},
        ...           "data": {"root": "/data", "dataset_name": "cube-single-play-v0",
        ...                    "fingerprint": "sha256:ab"}}
        >>> run_identity(config)  # doctest: +NORMALIZE_WHITESPACE
        {'data.dataset_name': 'cube-single-play-v0', 'data.fingerprint': 'sha256:ab',
         'network.actor_cells': [32, 32], 'optim.lr': 0.0001, 'seed': 3}
        >>> run_identity(run_identity(config)) == run_identity(config)
        True
        >>> run_identity({**config, "algo": {"name": "sorl"}}) == run_identity(config)
        True
        >>> run_identity({"algo": {"name": "fql"}, "env": {"fql": {"alpha": 300}}})
        {'algo.name': 'fql'}
    """
    flat = flatten(config)
    kept = {
        key: value
        for key, value in flat.items()
        if not is_bookkeeping(key)
        and not _covered(key, RETIRED_KEYS + DERIVED_KEYS)
        and not (key in IMPLIED_SETTINGS and IMPLIED_SETTINGS[key] == value)
    }
    return json.loads(json.dumps(dict(sorted(kept.items())), default=str))


def with_dataset(config: dict[str, Any], dataset_name: str, fingerprint: str) -> dict[str, Any]:
    """A copy of ``config`` whose ``data`` also names the dataset trained on and its hash.

    Examples:
        >>> with_dataset({"seed": 0, "data": {}}, "scene-play-v0", "sha256:00")["data"]
        {'dataset_name': 'scene-play-v0', 'fingerprint': 'sha256:00'}
    """
    data = {**config.get("data", {}), "dataset_name": dataset_name, "fingerprint": fingerprint}
    return {**config, "data": data}


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: stored X, now Y`` for every identity setting that differs, sorted by key.

    Args:
        old: The stored run's identity (or its config).
        new: The current one (or its config).

    Examples:
        >>> identity_differences({"seed": 1, "threads": 2}, {"seed": 3, "threads": 1})
        ['seed: stored 1, now 3']
        >>> identity_differences({"batch_size": 256}, {"batch_size": 256, "env.task": 2})
        ['env.task: stored None, now 2']
    """
    a, b = run_identity(old), run_identity(new)
    return [
        f"{key}: stored {a.get(key)!r}, now {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def _comparable(
    stored: dict[str, Any], current: dict[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both identities without the data keys that one of them lacks.

    A record or checkpoint written before the data was part of the identity has no
    ``data.*`` keys: the two are compared on the other keys only, and a warning says so.
    """
    missing = [key for key in DATA_KEYS if (key in stored) != (key in current)]
    if missing:
        log.warning(
            "%s was written before the data was part of a run's identity: compared without %s.",
            where,
            ", ".join(missing),
        )
    drop = set(missing)
    return (
        {k: v for k, v in stored.items() if k not in drop},
        {k: v for k, v in current.items() if k not in drop},
    )


def resume_differences(
    stored: dict[str, Any], current: dict[str, Any], where: str = "The checkpoint"
) -> list[str]:
    """The differences that forbid continuing a run with ``stored`` identity as ``current``.

    Only :data:`EXTEND_KEYS` may change (a run is extended to more updates, or evaluated
    differently); everything else, the seed and the data included, must be equal.

    Examples:
        >>> stored = {"seed": 0, "batch_size": 256, "num_updates": 100, "eval.num_episodes": 5}
        >>> resume_differences(stored, {**stored, "num_updates": 200, "eval.num_episodes": 50})
        []
        >>> resume_differences(stored, {**stored, "seed": 1, "batch_size": 64})
        ['batch_size: stored 256, now 64', 'seed: stored 0, now 1']
    """
    stored, current = _comparable(run_identity(stored), run_identity(current), where)
    return identity_differences(
        {k: v for k, v in stored.items() if not _covered(k, EXTEND_KEYS)},
        {k: v for k, v in current.items() if not _covered(k, EXTEND_KEYS)},
    )


# --------------------------------------------------------------------------- run dir names


def run_dirname(overrides: Iterable[str]) -> str:
    """A sweep job's dir name: its command-line overrides that are not bookkeeping.

    Hydra's ``override_dirname`` format (sorted ``key=value`` joined by commas), with the
    overrides of :data:`BOOKKEEPING_KEYS` (and of the keys below them) and those selecting an
    implied setting (``algo=sorl``) left out, so that two commands that run the same run land
    in the same dir. Registered as the ``sorl.run_dirname`` resolver used by
    ``hydra.sweep.subdir`` in ``conf/train.yaml``.

    Examples:
        >>> run_dirname(["seed=2", "threads=4", "logger.backend=wandb", "env.task=1",
        ...              "launcher=local", "+experiment=paper", "algo=sorl"])
        '+experiment=paper,env.task=1,seed=2'
        >>> run_dirname(["algo=fql", "seed=2"])
        'algo=fql,seed=2'
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return ",".join(
        sorted(
            o.input_line
            for o in parsed
            if not is_bookkeeping(o.key_or_group)
            and _IMPLIED_OVERRIDES.get(o.key_or_group, object()) != o.value()
        )
    )


def register_resolvers() -> None:
    """Register the ``sorl.run_dirname`` OmegaConf resolver (once per process)."""
    if not OmegaConf.has_resolver("sorl.run_dirname"):
        OmegaConf.register_new_resolver("sorl.run_dirname", run_dirname)


# --------------------------------------------------------------------------- the record


@contextlib.contextmanager
def writing(path: Path, what: str, kept: str = "") -> Iterator[None]:
    """Turn an :class:`OSError` while writing ``path`` into one that says what to do.

    A full disk, a read-only dir or missing permissions end the run with the file named and
    the way out; the file's previous content is intact, as every write is atomic. The error
    keeps its type and ``errno``.

    Args:
        path: The file being written.
        what: What it is, e.g. ``"checkpoint"``.
        kept: What is still on disk, said after the reason.

    Examples:
        >>> import errno
        >>> try:
        ...     with writing(Path("run/results.json"), "run record"):
        ...         raise OSError(errno.ENOSPC, "No space left on device")
        ... except OSError as err:
        ...     print(err.errno == errno.ENOSPC, err)  # doctest: +NORMALIZE_WHITESPACE
        True Cannot write the run record run/results.json: No space left on device. Free
        space on that disk or make run writable (or pass another run_dir), then run the same
        command again: an interrupted run resumes from its last checkpoint.
    """
    try:
        yield
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write as a RuntimeError raised while handling it
        cause = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        error = type(cause)(
            f"Cannot write the {what} {path}: {cause.strerror or cause}. {kept}Free space on "
            f"that disk or make {path.parent} writable (or pass another run_dir), then run the "
            "same command again: an interrupted run resumes from its last checkpoint."
        )
        error.errno = cause.errno
        raise error from err


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


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run dir's record: ``results.json``, else an earlier version's ``failed.json``.

    Raises:
        FileExistsError: The record exists but cannot be read; the message says what to do.
    """
    for name in (RESULTS_NAME, FAILED_NAME):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise FileExistsError(
                f"{path} exists but cannot be read ({err}). Move it away to rerun the run "
                "(pass resume=true to continue from the checkpoint), or choose another run_dir."
            ) from err
        if not isinstance(record, dict):
            raise FileExistsError(f"{path} does not hold a run record; move it away.")
        return record
    return None


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The identity a record or checkpoint stores (``run_key``), else that of its config."""
    return run_identity(record.get("run_key") or record.get("config") or {})


def finished_results(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The stored record if ``run_dir`` holds a finished run of ``identity``, else ``None``.

    Raises:
        FileExistsError: The run dir holds a finished run with another identity (it is left
            as it is; the message names each difference), or a record that cannot be read.
    """
    stored = read_record(run_dir)
    if stored is None or stored.get("status") != "finished":
        return None
    old, new = _comparable(record_identity(stored), run_identity(identity), f"{run_dir}'s record")
    diffs = identity_differences(old, new)
    if diffs:
        raise FileExistsError(
            f"{run_dir} holds a finished run with other settings:\n  "
            + "\n  ".join(diffs)
            + "\nPass resume=true to extend that run (more updates or online steps, or other "
            "eval settings), or choose another run_dir (hydra.sweep.dir for a sweep)."
        )
    return stored


class RunRecord:
    """The ``results.json`` of one run, rewritten at each stage of the run.

    Args:
        run_dir: The run dir.
        config: The run's resolved config (kept in every stage of the record).

    Examples:
        >>> import tempfile
        >>> record = RunRecord(Path(tempfile.mkdtemp()), {"seed": 0})
        >>> record.start(run_key={"seed": 0}, git={}, versions={})["status"]
        'running'
        >>> try:
        ...     raise ValueError("boom")
        ... except ValueError as err:
        ...     path = record.fail(err)
        >>> failed = json.loads(path.read_text())
        >>> failed["status"], failed["error"], failed["run_key"]
        ('failed', 'ValueError: boom', {'seed': 0})
    """

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_NAME
        env = config.get("env") or {}
        self.fields: dict[str, Any] = {
            "env": env.get("name"),
            "task": env.get("task"),
            "seed": config.get("seed"),
            "config": config,
        }
        self.claimed = False

    def _write(self, status: str, **fields: Any) -> dict[str, Any]:
        self.fields.update(fields)
        rest = {k: v for k, v in self.fields.items() if k != "config"}
        record = {"status": status, **rest, "config": self.fields["config"]}
        with writing(self.path, "run record"):
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(record, indent=2, default=str))
        return record

    def start(self, **fields: Any) -> dict[str, Any]:
        """Claim the run dir: write ``status: running`` with ``fields``.

        Adds ``started_at``, ``host`` and ``pid``; removes an earlier version's
        ``failed.json``.

        Raises:
            OSError: The record cannot be written (full disk, read-only run dir); the
                message names the file and what to do.
        """
        self.claimed = True
        record = self._write(
            "running", started_at=utc_now(), host=platform.node(), pid=os.getpid(), **fields
        )
        (self.run_dir / FAILED_NAME).unlink(missing_ok=True)
        return record

    def note(self, **fields: Any) -> dict[str, Any]:
        """Add ``fields`` to the record of the running run (``status: running``)."""
        return self._write("running", **fields)

    def finish(self, **fields: Any) -> dict[str, Any]:
        """Write the end of a run that trained to its last update (adds ``finished_at``).

        ``status: finished``, or ``status: diverged`` when ``fields`` (or an earlier
        :meth:`note`) hold a ``divergence``: a run that trained on past a non-finite value
        is never reported as finished.
        """
        status = "diverged" if {**self.fields, **fields}.get("divergence") else "finished"
        return self._write(status, **fields, finished_at=utc_now())

    def fail(self, error: BaseException, status: str = "failed", **fields: Any) -> Path | None:
        """Record ``error``, its traceback and ``fields``; returns the path written, or ``None``.

        A run that failed before it claimed its dir (a bad setting, a refused resume) only
        writes a record into a dir that holds no run: an existing record or checkpoint
        describes the run that is there, and stays as it is. A record that cannot be written
        (the disk is full, the dir read-only) is logged and ``None`` returned, so that the
        error that ended the run is the one raised.
        """
        if not self.claimed and (self.path.exists() or (self.run_dir / CHECKPOINT_NAME).exists()):
            return None
        try:
            self._write(
                status,
                error=f"{type(error).__name__}: {error}",
                traceback="".join(traceback.format_exception(error)),
                failed_at=utc_now(),
                git=self.fields.get("git") or git_revision(),
                **fields,
            )
            (self.run_dir / FAILED_NAME).unlink(missing_ok=True)
        except OSError as err:
            log.error("The run's %s record was not written: %s", status, err)
            return None
        return self.path
