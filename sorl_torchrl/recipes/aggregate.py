"""Collect a sweep of SORL training runs into paper-style tables and test-time-scaling plots.

    sorl-results sweeps/paper                          # all envs, default (k, N) cells
    sorl-results sweeps/paper --cell 1,1 --cell 8,16   # choose the table columns
    sorl-results sweeps/paper --tasks 1 2 3 4 5 --seeds 1 2 3 4 5 6 7 8  # the expected runs
    sorl-results sweeps/paper --strict     # exit status 1 if any run is missing or unfinished
    python -m sorl_torchrl.recipes.aggregate sweeps/paper --out results/

A run dir is any dir holding ``results.json``, ``failed.json``, ``config.yaml`` or
``.hydra/config.yaml``, at any depth under the sweep dir. A run is *finished* (``results.json``
with ``"status": "finished"``), *failed* (``failed.json``, or a ``results.json`` that cannot be
read) or *incomplete* (only a config: still running, or killed).

Statistics follow OGBench and SORL: for every seed, the mean success (%) over the env's tasks;
then the mean ± population std of those per-seed means over seeds. Runs of one env whose configs
differ in a setting that changes results (a *variant*, e.g. ``env.q_loss_coef``) are never
averaged together. Every cell says how many runs it averages and flags the ones it lacks.

Writes into ``--out`` (default ``<sweep_dir>/aggregate``): ``results.md``, ``results_env.csv``,
``results_task.csv``, ``runs.csv`` and one ``scaling_<env>[_<variant>].png`` per env and variant.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sorl_torchrl.recipes.run_record import FAILED_NAME, RESULTS_NAME, flatten, is_bookkeeping
from sorl_torchrl._io import atomic_write, atomic_write_text

#: A test-time-compute grid point ``(k, N)``: inference steps and verifier candidates.
Cell = tuple[int, int]

#: The default output dir name inside the sweep dir (never searched for runs).
OUTPUT_DIRNAME = "aggregate"
#: Files that make a dir a run dir.
RUN_MARKERS = (RESULTS_NAME, FAILED_NAME, "config.yaml", ".hydra/config.yaml")
#: Keys that place a run inside its group (env, task, seed): never variants. The settings
#: that do not change results at all are :data:`sorl_torchrl.recipes.run_record.BOOKKEEPING_KEYS`.
IDENTITY_KEYS = frozenset({"seed", "env.task", "env.name"})
#: Variant label of a group whose runs share every result-changing setting.
NO_VARIANT = "-"
#: Variant label of runs without a readable config in an env that has variants.
UNKNOWN_VARIANT = "(config unknown)"

#: Columns of ``results_env.csv`` (and keys of :func:`aggregate`'s environment rows).
ENV_FIELDS = (
    "env",
    "variant",
    "k",
    "N",
    "mean",
    "std",
    "n_runs",
    "expected_runs",
    "n_seeds",
    "flags",
)
#: Columns of ``results_task.csv`` (and keys of :func:`aggregate`'s per-task rows).
TASK_FIELDS = (
    "env",
    "variant",
    "task",
    "k",
    "N",
    "mean",
    "std",
    "n_seeds",
    "expected_seeds",
    "flags",
)
#: Columns of ``runs.csv``.
RUN_FIELDS = (
    "run_dir",
    "env",
    "variant",
    "task",
    "seed",
    "status",
    "wall_time_s",
    "updates_per_second",
    "error",
)

#: Why a (task, seed) has no value in a cell, in the order the flags list them.
REASONS = ("missing", "failed", "unfinished", "not in grid")

#: Kinds of problem lines (each line starts with ``<kind>:``), in report order.
PROBLEM_KINDS = ("failed", "incomplete", "missing", "not in grid", "duplicate", "unidentified")

_UNSET = object()


@dataclass
class RunRecord:
    """One run dir of a sweep.

    Attributes:
        run_dir: the run dir.
        env: env name (``config.env.name``), ``None`` if unknown.
        task: ``config.env.task``, ``None`` if unknown.
        seed: ``config.seed``, ``None`` if unknown.
        status: ``"finished"``, ``"failed"`` or ``"incomplete"``.
        config: the resolved config as nested dicts (empty if none could be read).
        grid: success fraction of the final evaluation per ``(k, N)`` (finished runs only).
        wall_time_s: training wall time, if recorded.
        updates_per_second: training speed, if recorded.
        error: why the run failed (or why a file of it could not be read).
    """

    run_dir: Path
    env: str | None
    task: int | None
    seed: int | None
    status: str
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[Cell, float] = field(default_factory=dict)
    wall_time_s: float | None = None
    updates_per_second: float | None = None
    error: str | None = None


# --------------------------------------------------------------------------- reading runs


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds one of :data:`RUN_MARKERS`."""
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def find_run_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Run dirs under ``sweep_dir`` (itself included, symlinks followed), sorted.

    Never descends into a run dir.

    Hidden dirs and the top-level ``aggregate/`` output dir are skipped.
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


def collect_runs(sweep_dir: str | os.PathLike) -> list[RunRecord]:
    """Read every run dir under ``sweep_dir`` (see :func:`find_run_dirs` and :func:`read_run`)."""
    return [read_run(path) for path in find_run_dirs(sweep_dir)]


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Status, identity, config and final grid of one run dir; unreadable files become errors."""
    run_dir = Path(run_dir)
    results, results_error = _read_json(run_dir / RESULTS_NAME)
    failed, failed_error = _read_json(run_dir / FAILED_NAME)
    status, error, grid = "incomplete", None, {}
    if results is not None and _is_finished(results):
        try:
            grid = parse_grid(results.get("grid"))
            status = "finished"
        except ValueError as exc:
            status, error = "failed", f"malformed results.json: {exc}"
    elif failed is not None:
        status = "failed"
        error = str(failed.get("error") or "failed.json gives no error message")
    elif results is not None and results.get("status") == "failed":
        status = "failed"
        error = str(results.get("error") or "results.json says failed, without an error")
    elif failed_error:
        status, error = "failed", f"unreadable failed.json: {failed_error}"
    elif results_error:
        status, error = "failed", f"unreadable results.json: {results_error}"

    config, config_error = _find_config(run_dir, results, failed)
    if error is None and status == "incomplete" and config_error:
        error = config_error
    payload = results if status == "finished" else (failed or results or {})
    env, task, seed = _identity(config, payload, run_dir.name)
    return RunRecord(
        run_dir=run_dir,
        env=env,
        task=task,
        seed=seed,
        status=status,
        config=config,
        grid=grid,
        wall_time_s=_as_float(payload.get("wall_time_s")) if status == "finished" else None,
        updates_per_second=(
            _as_float(payload.get("updates_per_second")) if status == "finished" else None
        ),
        error=error,
    )


def parse_grid(rows: Any) -> dict[Cell, float]:
    """``{(k, N): success fraction}`` from a results file's ``grid`` rows.

    Raises:
        ValueError: if the rows are not a non-empty list of valid grid points.

    Examples:
        >>> parse_grid([{"inference_steps": 2, "num_candidates": 4, "success_rate": 0.5}])
        {(2, 4): 0.5}
    """
    if not isinstance(rows, list) or not rows:
        raise ValueError("'grid' is not a non-empty list")
    grid = {}
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
    return grid


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(content, None)``, ``(None, error)`` if unreadable, ``(None, None)`` if absent."""
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def _is_finished(results: dict[str, Any]) -> bool:
    """A finished results file (one without ``status`` but with a grid counts as finished)."""
    status = results.get("status")
    return status == "finished" or (status is None and isinstance(results.get("grid"), list))


def _find_config(
    run_dir: Path, *payloads: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """The run's config: from its results/failure file, else ``config.yaml`` files."""
    for payload in payloads:
        if payload and isinstance(payload.get("config"), dict) and payload["config"]:
            return payload["config"], None
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
        conf = OmegaConf.load(path)
        raw = OmegaConf.to_container(conf, resolve=False)
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


def _identity(
    config: dict[str, Any], payload: dict[str, Any], dirname: str
) -> tuple[str | None, int | None, int | None]:
    """``(env, task, seed)``: from the config, else the run's files, else the dir name."""
    env_cfg = config.get("env") if isinstance(config.get("env"), dict) else {}
    from_name = _identity_from_dirname(dirname)
    env = env_cfg.get("name") or payload.get("env") or from_name[0]
    task = _first_int(env_cfg.get("task"), payload.get("task"), from_name[1])
    seed = _first_int(config.get("seed"), payload.get("seed"), from_name[2])
    return (str(env) if env else None), task, seed


def _identity_from_dirname(name: str) -> tuple[str | None, int | None, int | None]:
    """``(env, task, seed)`` from a Hydra subdir name (override string or default pattern).

    Examples:
        >>> _identity_from_dirname("env.task=2,env=cube-single-play,seed=1")
        ('cube-single-play', 2, 1)
        >>> _identity_from_dirname("scene-play-task3-seed0")
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


# --------------------------------------------------------------------------- variants


def is_variant_key(key: str) -> bool:
    """Whether a flattened config key can tell two variants of an env apart.

    Examples:
        >>> [is_variant_key(k) for k in ("run_dir", "logger.backend", "seed", "env.q_loss_coef")]
        [False, False, False, True]
    """
    return not (key in IDENTITY_KEYS or key.startswith("hydra.") or is_bookkeeping(key))


def variant_keys(configs: Iterable[dict[str, Any]]) -> list[str]:
    """Sorted flattened keys whose values differ across ``configs`` (bookkeeping excluded)."""
    flats = [flatten(c) for c in configs if c]
    keys = sorted({key for flat in flats for key in flat if is_variant_key(key)})
    return [key for key in keys if len({_freeze(flat.get(key, _UNSET)) for flat in flats}) > 1]


def variant_labels(runs: Sequence[RunRecord]) -> list[str]:
    """The variant label of each run, e.g. ``env.q_loss_coef=30, optim.lr=0.001`` or ``-``."""
    return [label for label, _ in _variants(runs)]


def _variants(runs: Sequence[RunRecord]) -> list[tuple[str, tuple]]:
    """``(label, sort key)`` of each run's variant, found within the run's env."""
    keys_by_env = {
        env: variant_keys(r.config for r in runs if r.env == env)
        for env in {r.env for r in runs if r.env is not None}
    }
    out = []
    for run in runs:
        keys = keys_by_env.get(run.env, [])
        if not keys:
            out.append((NO_VARIANT, ()))
        elif not run.config:
            out.append((UNKNOWN_VARIANT, ((2, 0.0, ""),)))
        else:
            flat = flatten(run.config)
            values = [flat.get(key, _UNSET) for key in keys]
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in zip(keys, values))
            out.append((label, tuple(_sort_key(v) for v in values)))
    return out


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _format_value(value: Any) -> str:
    """A config value as written on a Hydra command line.

    Examples:
        >>> [_format_value(v) for v in (30, 0.001, True, None, [1, 2], "mean")]
        ['30', '0.001', 'true', 'null', '[1,2]', 'mean']
    """
    if value is _UNSET:
        return "<unset>"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, float(value), ""
    return 1, 0.0, _format_value(value)


# --------------------------------------------------------------------------- statistics


@dataclass
class _Group:
    env: str
    variant: str
    order: tuple
    runs: list[RunRecord]


def default_cells(runs: Iterable[RunRecord]) -> list[Cell]:
    """``(1, 1)``, ``(kmax, 1)``, ``(kmax, Nmax)`` over finished runs' grids, deduplicated.

    Examples:
        >>> run = RunRecord(Path("r"), "e", 1, 0, "finished", grid={(1, 1): 0.1, (4, 8): 0.2})
        >>> default_cells([run])
        [(1, 1), (4, 1), (4, 8)]
    """
    points = {cell for run in runs if run.status == "finished" for cell in run.grid}
    if not points:
        return [(1, 1)]
    kmax, nmax = max(k for k, _ in points), max(n for _, n in points)
    return list(dict.fromkeys([(1, 1), (kmax, 1), (kmax, nmax)]))


def aggregate(
    runs: Sequence[RunRecord],
    cells: Sequence[Cell],
    tasks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Environment rows, per-task rows and problem lines for ``cells``.

    Args:
        runs: from :func:`collect_runs`.
        cells: the ``(k, N)`` points to report.
        tasks: expected tasks (default: every task seen in the env).
        seeds: expected seeds (default: every seed seen in the env).
        root: run dirs are shown relative to it (the sweep dir).

    Returns:
        ``(env_rows, task_rows, problems)``: rows with the fields of :data:`ENV_FIELDS` and
        :data:`TASK_FIELDS` (means and stds in %, NaN where no run has a value), and one line
        per failed, incomplete, missing, duplicate or unidentified run.
    """
    problems = _run_problems(runs, root)
    env_rows, task_rows = [], []
    for groups in _groups_by_env(runs).values():
        env_runs = [run for group in groups for run in group.runs]
        exp_tasks = sorted(set(tasks)) if tasks else _seen(env_runs, "task")
        exp_seeds = sorted(set(seeds)) if seeds else _seen(env_runs, "seed")
        for group in groups:
            slots, lines = _slots(group, exp_tasks, exp_seeds, root)
            problems += lines
            for cell in cells:
                env_rows.append(_env_row(group, cell, slots, exp_tasks, exp_seeds))
            for task in exp_tasks:
                for cell in cells:
                    task_rows.append(_task_row(group, task, cell, slots, exp_seeds))
            problems += _grid_problems(slots, cells, root)
    order = {kind: i for i, kind in enumerate(PROBLEM_KINDS)}
    problems.sort(key=lambda line: order.get(line.split(":", 1)[0], len(order)))
    return env_rows, task_rows, problems


def _groups_by_env(runs: Sequence[RunRecord]) -> dict[str, list[_Group]]:
    """Runs with a known env, by env (sorted) then variant (sorted by value)."""
    groups: dict[tuple[str, str], _Group] = {}
    for run, (label, order) in zip(runs, _variants(runs)):
        if run.env is not None:
            key = (run.env, label)
            groups.setdefault(key, _Group(run.env, label, order, [])).runs.append(run)
    by_env: dict[str, list[_Group]] = {}
    for group in sorted(groups.values(), key=lambda g: (g.env, g.order, g.variant)):
        by_env.setdefault(group.env, []).append(group)
    return by_env


def _seen(runs: Iterable[RunRecord], attr: str) -> list[int]:
    return sorted({getattr(run, attr) for run in runs if getattr(run, attr) is not None})


def _slots(
    group: _Group, tasks: Sequence[int], seeds: Sequence[int], root: Any
) -> tuple[dict[tuple[int, int], RunRecord | None], list[str]]:
    """The run used for each expected ``(task, seed)`` (``None``: absent) and problem lines.

    Where several run dirs share a ``(task, seed)``, a finished one wins (the first in path
    order), then an incomplete one, then a failed one.
    """
    rank = {"finished": 0, "incomplete": 1, "failed": 2}
    candidates: dict[tuple[int, int], list[RunRecord]] = {}
    for run in group.runs:
        candidates.setdefault((run.task, run.seed), []).append(run)
    slots, lines = {}, []
    where = f"{group.env}, variant {group.variant}"
    for task in tasks:
        for seed in seeds:
            found = sorted(candidates.get((task, seed), []), key=lambda r: rank[r.status])
            slots[task, seed] = found[0] if found else None
            if not found:
                lines.append(f"missing: {where}, task {task}, seed {seed} (no run dir)")
            elif len(found) > 1:
                dirs = ", ".join(f"`{_display(r.run_dir, root)}`" for r in found)
                lines.append(
                    f"duplicate: {where}, task {task}, seed {seed} has {len(found)} run dirs "
                    f"({dirs}); using `{_display(found[0].run_dir, root)}`"
                )
    return slots, lines


def _outcome(run: RunRecord | None, cell: Cell) -> float | str:
    """Success (%) of a slot at ``cell``, or the reason (one of :data:`REASONS`) it has none."""
    if run is None:
        return "missing"
    if run.status == "failed":
        return "failed"
    if run.status != "finished":
        return "unfinished"
    if cell not in run.grid:
        return "not in grid"
    return 100.0 * run.grid[cell]


def _env_row(
    group: _Group,
    cell: Cell,
    slots: dict[tuple[int, int], RunRecord | None],
    tasks: Sequence[int],
    seeds: Sequence[int],
) -> dict[str, Any]:
    """Mean ± std over seeds of the per-seed task mean at ``cell``."""
    per_seed: dict[int, list[float]] = {}
    notes: dict[str, list[str]] = {}
    for seed in seeds:
        for task in tasks:
            outcome = _outcome(slots[task, seed], cell)
            if isinstance(outcome, str):
                notes.setdefault(outcome, []).append(f"task{task}/seed{seed}")
            else:
                per_seed.setdefault(seed, []).append(outcome)
    mean, std = _mean_std([float(np.mean(values)) for values in per_seed.values()])
    n_runs, expected = sum(map(len, per_seed.values())), len(tasks) * len(seeds)
    return {
        "env": group.env,
        "variant": group.variant,
        "k": cell[0],
        "N": cell[1],
        "mean": mean,
        "std": std,
        "n_runs": n_runs,
        "expected_runs": expected,
        "n_seeds": len(per_seed),
        "flags": _flags(n_runs, expected, "runs", notes),
    }


def _task_row(
    group: _Group,
    task: int,
    cell: Cell,
    slots: dict[tuple[int, int], RunRecord | None],
    seeds: Sequence[int],
) -> dict[str, Any]:
    """Mean ± std over seeds of one task's success at ``cell``."""
    values, notes = [], {}
    for seed in seeds:
        outcome = _outcome(slots[task, seed], cell)
        if isinstance(outcome, str):
            notes.setdefault(outcome, []).append(f"seed{seed}")
        else:
            values.append(outcome)
    mean, std = _mean_std(values)
    return {
        "env": group.env,
        "variant": group.variant,
        "task": task,
        "k": cell[0],
        "N": cell[1],
        "mean": mean,
        "std": std,
        "n_seeds": len(values),
        "expected_seeds": len(seeds),
        "flags": _flags(len(values), len(seeds), "seeds", notes),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (``ddof=0``); NaN for no values."""
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=0))


def _flags(count: int, expected: int, unit: str, notes: dict[str, list[str]]) -> str:
    """``""`` for a complete cell, else e.g. ``incomplete: 3 of 4 runs; missing task2/seed5``.

    Examples:
        >>> _flags(3, 4, "runs", {"failed": ["task1/seed3"], "missing": ["task2/seed5"]})
        'incomplete: 3 of 4 runs; missing task2/seed5; failed task1/seed3'
    """
    if expected == 0:
        return "no runs with a known task and seed"
    if not notes:
        return ""
    parts = [f"incomplete: {count} of {expected} {unit}"]
    parts += [f"{reason} {', '.join(notes[reason])}" for reason in REASONS if reason in notes]
    return "; ".join(parts)


def _run_problems(runs: Iterable[RunRecord], root: Any) -> list[str]:
    """A line per failed, incomplete or unidentified run."""
    lines = []
    for run in runs:
        where = f"`{_display(run.run_dir, root)}`"
        if run.status == "failed":
            lines.append(f"failed: {where}: {_first_line(run.error)}")
        elif run.status == "incomplete":
            detail = f": {_first_line(run.error)}" if run.error else ""
            lines.append(f"incomplete: {where} (no results.json or failed.json){detail}")
        unknown = [name for name in ("env", "task", "seed") if getattr(run, name) is None]
        if unknown:
            lines.append(f"unidentified: {where}: unknown {'/'.join(unknown)}, not in the tables")
    return lines


def _grid_problems(
    slots: dict[tuple[int, int], RunRecord | None], cells: Sequence[Cell], root: Any
) -> list[str]:
    lines = []
    for run in slots.values():
        if run is not None and run.status == "finished":
            absent = [f"k={k}, N={n}" for k, n in cells if (k, n) not in run.grid]
            if absent:
                where = _display(run.run_dir, root)
                lines.append(f"not in grid: `{where}` has no {'; '.join(absent)}")
    return lines


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no error message"


def _display(path: Path, root: Any) -> str:
    """``path`` relative to ``root`` where possible."""
    if root is not None:
        try:
            return Path(path).relative_to(root).as_posix() or "."
        except ValueError:
            pass
    return str(path)


# --------------------------------------------------------------------------- reports


def _cell_name(cell: Cell) -> str:
    return f"k={cell[0]}, N={cell[1]}"


def _pm(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.1f} ± {std:.1f}"


def _markdown_table(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    cells: Sequence[Cell],
    text: Callable[[dict[str, Any]], str],
) -> tuple[str, list[str]]:
    """A table with one line per distinct ``keys`` and one column per cell, and its notes.

    ``text(row)`` formats a cell; flagged cells get ``†`` and a note listing the flags.
    """
    lines: dict[tuple, dict[Cell, dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(tuple(row[key] for key in keys), {})[row["k"], row["N"]] = row
    table = [
        "| " + " | ".join([*keys, *map(_cell_name, cells)]) + " |",
        "|---" * (len(keys) + len(cells)) + "|",
    ]
    notes = []
    for line_key, by_cell in lines.items():
        shown = [
            f"`{value}`" if key == "variant" else str(value) for key, value in zip(keys, line_key)
        ]
        texts, flagged = [], {}
        for cell in cells:
            row = by_cell[cell]
            texts.append(text(row) + (" †" if row["flags"] else ""))
            if row["flags"]:
                flagged.setdefault(row["flags"], []).append(_cell_name(cell))
        table.append("| " + " | ".join([*shown, *texts]) + " |")
        where = ", ".join(f"task {v}" if k == "task" else v for k, v in zip(keys, shown))
        for flags, names in flagged.items():
            notes.append(f"- {where} ({'; '.join(names)}): {flags}")
    return "\n".join(table), notes


def format_env_table(rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> str:
    """The environment table in Markdown (``mean ± std (n/expected runs)``) with its notes."""
    table, notes = _markdown_table(
        rows,
        ("env", "variant"),
        cells,
        lambda r: f"{_pm(r['mean'], r['std'])} ({r['n_runs']}/{r['expected_runs']})",
    )
    return table + (("\n\n† flagged cells:\n" + "\n".join(notes)) if notes else "")


def format_task_table(rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> str:
    """The per-task table in Markdown (``mean ± std (n/expected seeds)``) with its notes."""
    table, notes = _markdown_table(
        rows,
        ("env", "variant", "task"),
        cells,
        lambda r: f"{_pm(r['mean'], r['std'])} ({r['n_seeds']}/{r['expected_seeds']} seeds)",
    )
    return table + (("\n\n† flagged cells:\n" + "\n".join(notes)) if notes else "")


def format_report(
    sweep_dir: str | os.PathLike,
    runs: Sequence[RunRecord],
    env_rows: Sequence[dict[str, Any]],
    task_rows: Sequence[dict[str, Any]],
    problems: Sequence[str],
    cells: Sequence[Cell],
) -> str:
    """The whole Markdown report (``results.md``)."""
    counts = {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "incomplete")}
    parts = [
        "# SORL results",
        f"Sweep `{sweep_dir}`: {len(runs)} run dirs, {counts['finished']} finished, "
        f"{counts['failed']} failed, {counts['incomplete']} incomplete.",
        "## Environments",
        "Success (%): for each seed the mean over the env's tasks, then mean ± population std "
        "over seeds; `(n/expected)` counts the finished runs averaged.",
        format_env_table(env_rows, cells),
        "## Per task",
        "Success (%): mean ± population std over seeds; `(n/expected seeds)`.",
        format_task_table(task_rows, cells),
        "## Problems",
        "\n".join(f"- {line}" for line in problems)
        if problems
        else "No problems: every expected run finished and has every reported (k, N).",
    ]
    return "\n\n".join(parts) + "\n"


def _csv_text(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in fields})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _run_rows(runs: Sequence[RunRecord], root: Any) -> list[dict[str, Any]]:
    return [
        {
            "run_dir": _display(run.run_dir, root),
            "env": run.env,
            "variant": label,
            "task": run.task,
            "seed": run.seed,
            "status": run.status,
            "wall_time_s": run.wall_time_s,
            "updates_per_second": run.updates_per_second,
            "error": run.error,
        }
        for run, label in zip(runs, variant_labels(runs))
    ]


def _slug(text: str) -> str:
    """A file-name-safe form of ``text`` (shortened with a hash when long).

    Examples:
        >>> _slug("env.q_loss_coef=30, optim.lr=0.001")
        'env.q_loss_coef-30_optim.lr-0.001'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("=", "-")).strip("_") or "x"
    if len(slug) > 80:
        slug = f"{slug[:60]}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return slug


def plot_group(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = ""
) -> Path | None:
    """Success vs ``k`` (a line per ``N``) and vs ``N`` (a line per ``k``), ± std bands.

    Args:
        rows: environment rows of one (env, variant) over every ``(k, N)`` to draw.
        path: the PNG to write (atomically).
        title: figure title.

    Returns:
        ``path``, or ``None`` if no row has a value (nothing drawn).
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = {(r["k"], r["N"]): (r["mean"], r["std"]) for r in rows if r["n_seeds"]}
    if not stats:
        return None
    steps = sorted({k for k, _ in stats})
    cands = sorted({n for _, n in stats})
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for n in cands:
        _band(left, steps, [stats.get((k, n)) for k in steps], f"N={n}")
    for k in steps:
        _band(right, cands, [stats.get((k, n)) for n in cands], f"k={k}")
    left.set_ylabel("success (%)")
    for axis, ticks, label in (
        (left, steps, "inference steps k"),
        (right, cands, "verifier candidates N"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(t) for t in ticks])
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def _band(axis: Any, xs: Sequence[int], stats: Sequence[tuple[float, float] | None], label: str):
    """One line of means with a shaded ± std band (gaps where a point has no value)."""
    mean = np.array([s[0] if s else np.nan for s in stats])
    std = np.array([s[1] if s else np.nan for s in stats])
    (line,) = axis.plot(xs, mean, marker="o", label=label)
    low, high = np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100)
    axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def write_plots(
    runs: Sequence[RunRecord],
    out_dir: Path,
    tasks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Path]:
    """One ``scaling_<env>[_<variant>].png`` per (env, variant) with finished runs."""
    all_cells = sorted({cell for run in runs if run.status == "finished" for cell in run.grid})
    if not all_cells:
        return []
    env_rows, _, _ = aggregate(runs, all_cells, tasks, seeds)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in env_rows:
        groups.setdefault((row["env"], row["variant"]), []).append(row)
    paths = []
    for (env, variant), rows in groups.items():
        n_runs, expected = max(r["n_runs"] for r in rows), rows[0]["expected_runs"]
        count = f"{n_runs} runs" if n_runs == expected else f"{n_runs} of {expected} runs"
        stem = _slug(env) + ("" if variant == NO_VARIANT else f"_{_slug(variant)}")
        shown = env if variant == NO_VARIANT else f"{env} [{variant}]"
        title = f"{shown}: {count}, mean ± std over seeds"
        path = plot_group(rows, out_dir / f"scaling_{stem}.png", title)
        if path is not None:
            paths.append(path)
    return paths


def write_outputs(
    sweep_dir: Path,
    out_dir: Path,
    runs: Sequence[RunRecord],
    cells: Sequence[Cell],
    tasks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    plots: bool = True,
) -> tuple[list[dict[str, Any]], list[str], list[Path]]:
    """Write the report, CSV files and plots; returns env rows, problems and written paths."""
    env_rows, task_rows, problems = aggregate(runs, cells, tasks, seeds, root=sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "results.md": format_report(sweep_dir, runs, env_rows, task_rows, problems, cells),
        "results_env.csv": _csv_text(env_rows, ENV_FIELDS),
        "results_task.csv": _csv_text(task_rows, TASK_FIELDS),
        "runs.csv": _csv_text(_run_rows(runs, sweep_dir), RUN_FIELDS),
    }
    paths = []
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    if plots:
        paths += write_plots(runs, out_dir, tasks, seeds)
    return env_rows, problems, paths


# --------------------------------------------------------------------------- command line


def parse_cell(text: str) -> Cell:
    """``"K,N"`` as a cell of positive ints (an argparse type).

    Examples:
        >>> parse_cell("8,16")
        (8, 16)
    """
    parts = text.split(",")
    try:
        k, n = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected K,N (two positive ints), got {text!r}"
        ) from None
    if k < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"K and N must be positive, got {text!r}")
    return k, n


def build_parser() -> argparse.ArgumentParser:
    """The ``sorl-results`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sorl-results",
        description="Collect a sweep of SORL runs into tables (Markdown, CSV) and scaling plots.",
    )
    parser.add_argument("sweep_dir", type=Path, help="Hydra sweep dir (run dirs at any depth)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output dir (default: <sweep_dir>/{OUTPUT_DIRNAME})"
    )
    parser.add_argument(
        "--cell",
        type=parse_cell,
        action="append",
        metavar="K,N",
        help="a (k, N) table column, repeatable (default: 1,1  kmax,1  kmax,Nmax)",
    )
    parser.add_argument(
        "--tasks", type=int, nargs="+", help="expected tasks (default: those seen per env)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="expected seeds (default: those seen per env)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit status 1 if any run is not all there"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the scaling plots")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``sorl-results``); returns the exit status.

    Raises:
        SystemExit: if the sweep dir does not exist or holds no run dirs, or on bad arguments.
    """
    args = build_parser().parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        raise SystemExit(f"sorl-results: sweep dir {sweep_dir} does not exist (or is no dir).")
    runs = collect_runs(sweep_dir)
    if not runs:
        markers = ", ".join(RUN_MARKERS)
        raise SystemExit(f"sorl-results: no run dirs under {sweep_dir} (none holds {markers}).")
    cells = list(dict.fromkeys(args.cell)) if args.cell else default_cells(runs)
    out_dir = args.out if args.out is not None else sweep_dir / OUTPUT_DIRNAME
    env_rows, problems, paths = write_outputs(
        sweep_dir, out_dir, runs, cells, args.tasks, args.seeds, plots=not args.no_plots
    )
    statuses = [run.status for run in runs]
    print(
        f"{sweep_dir}: {len(runs)} run dirs, {statuses.count('finished')} finished, "
        f"{statuses.count('failed')} failed, {statuses.count('incomplete')} incomplete."
    )
    print(format_env_table(env_rows, cells))
    if problems:
        print(f"\n{len(problems)} problems: see {out_dir / 'results.md'}")
    print("\nWrote:\n" + "\n".join(f"  {path}" for path in paths))
    return 1 if args.strict and problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
