"""Find the run dirs of a sweep and read each one's run record.

A run dir is any dir holding ``results.json``, ``failed.json``, ``config.yaml`` or
``.hydra/config.yaml``, at any depth under the sweep dir. Its record is what
:func:`~sorl_torchrl.recipes.run_record.read_record` reads: the ``results.json`` that
training writes when a run starts (``"status": "running"``) and again when it ends, else the
``failed.json`` of an older version. A run is

- *finished*: the record says ``finished`` and holds a valid (k, N) grid;
- *failed*: the record says ``failed`` or ``diverged``, or it cannot be read;
- *incomplete*: anything else (still running, killed, or only a config).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sorl_torchrl.deploy.load import algorithm_of
from sorl_torchrl.recipes.run_record import (
    FAILED_NAME,
    RESULTS_NAME,
    read_record,
    record_identity,
)

#: A test-time-compute grid point ``(k, N)``: inference steps and verifier candidates.
Cell = tuple[int, int]

#: The default output dir name inside the sweep dir (never searched for runs).
OUTPUT_DIRNAME = "aggregate"
#: Files that make a dir a run dir.
RUN_MARKERS = (RESULTS_NAME, FAILED_NAME, "config.yaml", ".hydra/config.yaml")
#: Record statuses of a run that stopped without results.
FAILED_STATUSES = frozenset({"failed", "diverged"})


@dataclass
class SweepRun:
    """One run dir of a sweep, as read from its files.

    Attributes:
        run_dir: the run dir.
        env: env name (``config.env.name``), ``None`` if unknown.
        task: ``config.env.task``, ``None`` if unknown.
        seed: ``config.seed``, ``None`` if unknown.
        status: ``"finished"``, ``"failed"`` or ``"incomplete"``.
        config: the resolved config as nested dicts (empty if none could be read).
        identity: the flat settings that identify the run
            (:func:`~sorl_torchrl.recipes.run_record.record_identity`: the record's
            ``run_key``, else the identity of the config; empty if neither is known).
        grid: success fraction of the final evaluation per ``(k, N)`` (finished runs only).
        episodes: evaluation episodes per ``(k, N)``, where the record gives them.
        wall_time_s: training wall time, if recorded.
        updates_per_second: training speed, if recorded.
        error: why the run failed (or why a file of it could not be read).
        algo: the algorithm it trains (``config.algo.name``; ``"sorl"`` for a run whose
            config does not say, as every run before the recipe trained other algorithms).
    """

    run_dir: Path
    env: str | None
    task: int | None
    seed: int | None
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    grid: dict[Cell, float] = field(default_factory=dict)
    episodes: dict[Cell, int] = field(default_factory=dict)
    wall_time_s: float | None = None
    updates_per_second: float | None = None
    error: str | None = None
    algo: str = "sorl"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds one of :data:`RUN_MARKERS`."""
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def find_run_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Run dirs under ``sweep_dir`` (itself included, symlinks followed), sorted.

    Never descends into a run dir; hidden dirs and the top-level :data:`OUTPUT_DIRNAME`
    dir are skipped.
    """
    root = Path(sweep_dir)
    found = []
    for current, dirnames, _ in os.walk(root, followlinks=True):
        path = Path(current)
        if is_run_dir(path):
            found.append(path)
            dirnames.clear()
            continue
        dirnames[:] = [
            name
            for name in dirnames
            if not name.startswith(".") and not (path == root and name == OUTPUT_DIRNAME)
        ]
    return sorted(found)


def collect_runs(sweep_dir: str | os.PathLike) -> list[SweepRun]:
    """Read every run dir under ``sweep_dir`` (see :func:`find_run_dirs` and :func:`read_run`)."""
    return [read_run(path) for path in find_run_dirs(sweep_dir)]


def read_run(run_dir: str | os.PathLike) -> SweepRun:
    """Status, identity, config and final grid of one run dir; unreadable files become errors.

    Examples:
        >>> import json, tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> _ = (run_dir / "results.json").write_text(json.dumps({"status": "diverged",
        ...     "error": "non-finite loss at step 30", "env": "scene-play", "task": 2, "seed": 1}))
        >>> run = read_run(run_dir)
        >>> run.status, run.error, (run.env, run.task, run.seed), run.algo
        ('failed', 'non-finite loss at step 30', ('scene-play', 2, 1), 'sorl')
    """
    run_dir = Path(run_dir)
    try:
        record, error = read_record(run_dir), None
    except (FileExistsError, UnicodeDecodeError) as exc:
        record, error = None, f"unreadable run record: {exc}"
    record = record or {}
    record_status = record.get("status")
    status = "failed" if error else "incomplete"
    grid, episodes = {}, {}
    if _is_finished(record):
        try:
            grid, episodes = parse_grid(record.get("grid"))
            status = "finished"
        except ValueError as exc:
            status, error = "failed", f"malformed {RESULTS_NAME}: {exc}"
    elif record_status in FAILED_STATUSES:
        status = "failed"
        error = str(record.get("error") or f"the run record says {record_status}, with no error")
    elif record_status not in (None, "running"):
        error = f"the run record has the unknown status {record_status!r}"

    config, config_error = _find_config(run_dir, record)
    if error is None and status == "incomplete" and config_error:
        error = config_error
    env, task, seed = _env_task_seed(config, record, run_dir.name)
    finished = status == "finished"
    identity = record_identity({**record, "config": config})
    return SweepRun(
        run_dir=run_dir,
        env=env,
        task=task,
        seed=seed,
        status=status,
        config=config,
        identity=identity,
        grid=grid,
        episodes=episodes,
        wall_time_s=_as_float(record.get("wall_time_s")) if finished else None,
        updates_per_second=_as_float(record.get("updates_per_second")) if finished else None,
        error=error,
        algo=algorithm_of(config) if "algo" in config else str(identity.get("algo.name", "sorl")),
    )


def parse_grid(rows: Any) -> tuple[dict[Cell, float], dict[Cell, int]]:
    """``({(k, N): success fraction}, {(k, N): episodes})`` from a record's ``grid`` rows.

    Rows without a valid ``num_episodes`` are left out of the second dict.

    Raises:
        ValueError: if the rows are not a non-empty list of valid grid points.

    Examples:
        >>> parse_grid([{"inference_steps": 2, "num_candidates": 4, "success_rate": 0.5,
        ...              "num_episodes": 10}])
        ({(2, 4): 0.5}, {(2, 4): 10})
    """
    if not isinstance(rows, list) or not rows:
        raise ValueError("'grid' is not a non-empty list")
    grid, episodes = {}, {}
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"grid row {row!r} is not an object")
        k, n = _as_int(row.get("inference_steps")), _as_int(row.get("num_candidates"))
        rate = _as_float(row.get("success_rate"))
        if k is None or n is None or k < 1 or n < 1:
            raise ValueError(f"grid row {row!r} lacks positive inference_steps/num_candidates")
        if rate is None or not 0.0 <= rate <= 1.0:
            raise ValueError(f"grid row {row!r}: success_rate is not a fraction in [0, 1]")
        grid[k, n] = rate
        count = _as_int(row.get("num_episodes"))
        if count is not None and count > 0:
            episodes[k, n] = count
    return grid, episodes


def relative_dir(path: Path, root: str | os.PathLike | None) -> str:
    """``path`` relative to ``root`` where possible (how reports name run dirs).

    Examples:
        >>> relative_dir(Path("sweeps/a/seed=1"), "sweeps/a"), relative_dir(Path("x"), "y")
        ('seed=1', 'x')
    """
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def _is_finished(results: dict[str, Any]) -> bool:
    """A finished record (one without ``status`` but with a grid counts as finished)."""
    status = results.get("status")
    return status == "finished" or (status is None and isinstance(results.get("grid"), list))


def _find_config(run_dir: Path, record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The run's config: from its record, else its ``config.yaml`` files."""
    if isinstance(record.get("config"), dict) and record["config"]:
        return record["config"], None
    errors = []
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (run_dir / name).is_file():
            config, error = _read_yaml_config(run_dir / name)
            if config:
                return config, None
            errors.append(f"unreadable {name}: {error}")
    return {}, "; ".join(errors) or None


def _read_yaml_config(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A YAML config as nested dicts, resolved where possible.

    Hydra saves ``.hydra/config.yaml`` unresolved; ``${hydra:...}`` values cannot be resolved
    outside a Hydra job, so they become ``None`` (they are bookkeeping, e.g. ``run_dir``).
    """
    from omegaconf import OmegaConf

    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # omegaconf and yaml raise many exception types
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(raw, dict):
        return None, "not a mapping"
    try:
        cleaned = OmegaConf.create(_drop_hydra_interpolations(raw))
        return OmegaConf.to_container(cleaned, resolve=True), None
    except Exception:  # an interpolation that cannot be resolved: keep it as text
        return raw, None


def _drop_hydra_interpolations(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_hydra_interpolations(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_drop_hydra_interpolations(item) for item in value]
    if isinstance(value, str) and value.startswith("${hydra:"):
        return None
    return value


def _env_task_seed(
    config: dict[str, Any], payload: dict[str, Any], dirname: str
) -> tuple[str | None, int | None, int | None]:
    """``(env, task, seed)``: from the config, else the run's files, else the dir name."""
    env_cfg = config.get("env") if isinstance(config.get("env"), dict) else {}
    from_name = _env_task_seed_from_dirname(dirname)
    env = env_cfg.get("name") or payload.get("env") or from_name[0]
    task = _first_int(env_cfg.get("task"), payload.get("task"), from_name[1])
    seed = _first_int(config.get("seed"), payload.get("seed"), from_name[2])
    return (str(env) if env else None), task, seed


def _env_task_seed_from_dirname(name: str) -> tuple[str | None, int | None, int | None]:
    """``(env, task, seed)`` from a Hydra subdir name (override string or default pattern).

    Examples:
        >>> _env_task_seed_from_dirname("env.task=2,env=cube-single-play,seed=1")
        ('cube-single-play', 2, 1)
        >>> _env_task_seed_from_dirname("scene-play-task3-seed0")
        ('scene-play', 3, 0)
    """
    match = re.fullmatch(r"(.+)-task(\d+)-seed(\d+)", name)
    if match:
        return match[1], int(match[2]), int(match[3])
    pairs = dict(part.split("=", 1) for part in name.split(",") if "=" in part)
    env = pairs.get("env.name") or pairs.get("env")
    return env, _as_int(pairs.get("env.task")), _as_int(pairs.get("seed"))


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _first_int(*values: Any) -> int | None:
    return next((v for v in map(_as_int, values) if v is not None), None)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
