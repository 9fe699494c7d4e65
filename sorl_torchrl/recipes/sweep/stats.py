"""A sweep's statistics: success per env and per task, over seeds, with every gap flagged.

They follow OGBench and SORL: for every seed, the mean success (%) over the env's tasks;
then the mean ± population std of those per-seed means over seeds. Runs of different
algorithms (``algo``) or variants (:mod:`~sorl_torchrl.recipes.sweep.variants`) are never
averaged together. An algorithm without inference steps (FQL, IQL, ReBRAC) is evaluated at
``k = 1`` only: a reported ``(k, N)`` is its ``(1, N)`` (:func:`evaluated_cell`). Every
cell says how many runs it averages and flags the ones it lacks, and every failed,
incomplete, missing, duplicate or unidentified run becomes a problem line.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sorl_torchrl.recipes.algorithms import ALGORITHM_SPECS, ALGORITHMS
from sorl_torchrl.recipes.sweep.collect import Cell, SweepRun, relative_dir
from sorl_torchrl.recipes.sweep.variants import run_variants

#: Columns of ``results_env.csv`` (environment rows also carry ``num_episodes``).
ENV_FIELDS = (
    "env",
    "algo",
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
#: Columns of ``results_task.csv``.
TASK_FIELDS = (
    "env",
    "algo",
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
#: Why a (task, seed) has no value in a cell, in the order the flags list them.
REASONS = ("missing", "failed", "unfinished", "not in grid")
#: Kinds of problem lines (each line starts with ``<kind>:``), in report order.
PROBLEM_KINDS = ("failed", "incomplete", "missing", "not in grid", "duplicate", "unidentified")

Slots = dict[tuple[int, int], SweepRun | None]


@dataclass
class Group:
    """The runs of one env, algorithm and variant.

    Attributes:
        env: env name.
        algo: the algorithm.
        variant: variant label (see :func:`~sorl_torchrl.recipes.sweep.variants.run_variants`).
        order: sort key of the variant.
        runs: its runs, in path order.
    """

    env: str
    algo: str
    variant: str
    order: tuple
    runs: list[SweepRun]

    def where(self, named: bool) -> str:
        """How problem lines name the group: ``env[, algo], variant ...``."""
        algo = f", {self.algo}" if named else ""
        return f"{self.env}{algo}, variant {self.variant}"


def evaluated_cell(algo: str, cell: Cell) -> Cell:
    """The grid point of ``algo``'s runs that a reported ``(k, N)`` shows.

    ``(1, N)`` for an algorithm without inference steps (``k`` means nothing to it and its
    runs evaluate ``k = 1`` only), else ``(k, N)`` itself.

    Examples:
        >>> evaluated_cell("fql", (8, 16)), evaluated_cell("sorl", (8, 16))
        ((1, 16), (8, 16))
    """
    spec = ALGORITHM_SPECS.get(algo)
    return (1, cell[1]) if spec is not None and not spec.has_steps else cell


def algorithm_cells(algo: str, cells: Sequence[Cell]) -> list[Cell]:
    """The distinct grid points of ``algo`` that ``cells`` show (:func:`evaluated_cell`).

    Examples:
        >>> algorithm_cells("iql", [(1, 1), (8, 1), (8, 16)])
        [(1, 1), (1, 16)]
    """
    return list(dict.fromkeys(evaluated_cell(algo, cell) for cell in cells))


def names_algorithms(algos: Iterable[str]) -> bool:
    """Whether labels name the algorithm: unless every run is SORL's (the recipe's default).

    Examples:
        >>> names_algorithms(["sorl", "sorl"]), names_algorithms(["sorl", "fql"])
        (False, True)
    """
    return set(algos) - {"sorl"} != set()


def algorithm_order(algo: str) -> tuple[int, str]:
    """Sort key of an algorithm: :data:`~sorl_torchrl.recipes.algorithms.ALGORITHMS` order."""
    return (ALGORITHMS.index(algo), "") if algo in ALGORITHMS else (len(ALGORITHMS), algo)


def default_cells(runs: Iterable[SweepRun]) -> list[Cell]:
    """``(1, 1)``, ``(kmax, 1)``, ``(kmax, Nmax)`` over finished runs' grids, deduplicated.

    Examples:
        >>> from pathlib import Path
        >>> run = SweepRun(Path("r"), "e", 1, 0, "finished", grid={(1, 1): 0.1, (4, 8): 0.2})
        >>> default_cells([run])
        [(1, 1), (4, 1), (4, 8)]
    """
    points = {cell for run in runs if run.status == "finished" for cell in run.grid}
    if not points:
        return [(1, 1)]
    kmax, nmax = max(k for k, _ in points), max(n for _, n in points)
    return list(dict.fromkeys([(1, 1), (kmax, 1), (kmax, nmax)]))


def aggregate(
    runs: Sequence[SweepRun],
    cells: Sequence[Cell],
    tasks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Environment rows, per-task rows and problem lines for ``cells``.

    Args:
        runs: from :func:`~sorl_torchrl.recipes.sweep.collect.collect_runs`.
        cells: the ``(k, N)`` points to report (an algorithm without inference steps is
            reported at its ``(1, N)``, :func:`algorithm_cells`).
        tasks: expected tasks (default: every task seen in the env).
        seeds: expected seeds (default: every seed seen in the env).
        root: run dirs are shown relative to it (the sweep dir).

    Returns:
        ``(env_rows, task_rows, problems)``: rows of each env, algorithm and variant, with
        the fields of :data:`ENV_FIELDS`
        (plus ``num_episodes``, the evaluation episodes behind the cell where every run
        records them, else ``None``) and :data:`TASK_FIELDS`, means and stds in % (NaN where
        no run has a value); and one line per failed, incomplete, missing, duplicate or
        unidentified run.
    """
    problems = run_problems(runs, root)
    named = names_algorithms(run.algo for run in runs)
    env_rows, task_rows = [], []
    for groups in groups_by_env(runs).values():
        env_runs = [run for group in groups for run in group.runs]
        exp_tasks = sorted(set(tasks)) if tasks else _seen(env_runs, "task")
        exp_seeds = sorted(set(seeds)) if seeds else _seen(env_runs, "seed")
        for group in groups:
            slots, lines = _slots(group, exp_tasks, exp_seeds, root, named)
            problems += lines
            shown = algorithm_cells(group.algo, cells)
            env_rows += [_env_row(group, cell, slots, exp_tasks, exp_seeds) for cell in shown]
            for task in exp_tasks:
                task_rows += [_task_row(group, task, cell, slots, exp_seeds) for cell in shown]
            problems += _grid_problems(slots, shown, root)
    order = {kind: i for i, kind in enumerate(PROBLEM_KINDS)}
    problems.sort(key=lambda line: order.get(line.split(":", 1)[0], len(order)))
    return env_rows, task_rows, problems


def groups_by_env(runs: Sequence[SweepRun]) -> dict[str, list[Group]]:
    """Runs with a known env, by env (sorted), algorithm, then variant (sorted by value)."""
    groups: dict[tuple[str, str, str], Group] = {}
    for run, (label, order) in zip(runs, run_variants(runs)):
        if run.env is not None:
            key = (run.env, run.algo, label)
            groups.setdefault(key, Group(run.env, run.algo, label, order, [])).runs.append(run)
    by_env: dict[str, list[Group]] = {}
    ordered = sorted(
        groups.values(), key=lambda g: (g.env, algorithm_order(g.algo), g.order, g.variant)
    )
    for group in ordered:
        by_env.setdefault(group.env, []).append(group)
    return by_env


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (``ddof=0``); NaN for no values.

    Examples:
        >>> mean_std([40.0, 50.0]), mean_std([])
        ((45.0, 5.0), (nan, nan))
    """
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def run_problems(runs: Iterable[SweepRun], root: str | os.PathLike | None) -> list[str]:
    """A line per failed, incomplete or unidentified run."""
    lines = []
    for run in runs:
        where = f"`{relative_dir(run.run_dir, root)}`"
        if run.status == "failed":
            lines.append(f"failed: {where}: {_first_line(run.error)}")
        elif run.status == "incomplete":
            detail = f": {_first_line(run.error)}" if run.error else ""
            lines.append(f"incomplete: {where} (running, or stopped before it finished){detail}")
        unknown = [name for name in ("env", "task", "seed") if getattr(run, name) is None]
        if unknown:
            lines.append(f"unidentified: {where}: unknown {'/'.join(unknown)}, not in the tables")
    return lines


def _seen(runs: Iterable[SweepRun], attr: str) -> list[int]:
    return sorted({getattr(run, attr) for run in runs if getattr(run, attr) is not None})


def _slots(
    group: Group, tasks: Sequence[int], seeds: Sequence[int], root: Any, named: bool
) -> tuple[Slots, list[str]]:
    """The run used for each expected ``(task, seed)`` (``None``: absent) and problem lines.

    Where several run dirs share a ``(task, seed)``, a finished one wins (the first in path
    order), then an incomplete one, then a failed one.
    """
    rank = {"finished": 0, "incomplete": 1, "failed": 2}
    candidates: dict[tuple[int, int], list[SweepRun]] = {}
    for run in group.runs:
        candidates.setdefault((run.task, run.seed), []).append(run)
    slots, lines = {}, []
    where = group.where(named)
    for task in tasks:
        for seed in seeds:
            found = sorted(candidates.get((task, seed), []), key=lambda r: rank[r.status])
            slots[task, seed] = found[0] if found else None
            if not found:
                lines.append(f"missing: {where}, task {task}, seed {seed} (no run dir)")
            elif len(found) > 1:
                dirs = ", ".join(f"`{relative_dir(r.run_dir, root)}`" for r in found)
                lines.append(
                    f"duplicate: {where}, task {task}, seed {seed} has {len(found)} run dirs "
                    f"({dirs}); using `{relative_dir(found[0].run_dir, root)}`"
                )
    return slots, lines


def _outcome(run: SweepRun | None, cell: Cell) -> float | str:
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
    group: Group, cell: Cell, slots: Slots, tasks: Sequence[int], seeds: Sequence[int]
) -> dict[str, Any]:
    """Mean ± std over seeds of the per-seed task mean at ``cell``."""
    per_seed: dict[int, list[float]] = {}
    notes: dict[str, list[str]] = {}
    episodes: list[int | None] = []
    for seed in seeds:
        for task in tasks:
            outcome = _outcome(slots[task, seed], cell)
            if isinstance(outcome, str):
                notes.setdefault(outcome, []).append(f"task{task}/seed{seed}")
            else:
                per_seed.setdefault(seed, []).append(outcome)
                episodes.append(slots[task, seed].episodes.get(cell))
    mean, std = mean_std([statistics.fmean(values) for values in per_seed.values()])
    n_runs, expected = sum(map(len, per_seed.values())), len(tasks) * len(seeds)
    return {
        "env": group.env,
        "algo": group.algo,
        "variant": group.variant,
        "k": cell[0],
        "N": cell[1],
        "mean": mean,
        "std": std,
        "n_runs": n_runs,
        "expected_runs": expected,
        "n_seeds": len(per_seed),
        "flags": _flags(n_runs, expected, "runs", notes),
        "num_episodes": sum(episodes) if episodes and None not in episodes else None,
    }


def _task_row(
    group: Group, task: int, cell: Cell, slots: Slots, seeds: Sequence[int]
) -> dict[str, Any]:
    """Mean ± std over seeds of one task's success at ``cell``."""
    values, notes = [], {}
    for seed in seeds:
        outcome = _outcome(slots[task, seed], cell)
        if isinstance(outcome, str):
            notes.setdefault(outcome, []).append(f"seed{seed}")
        else:
            values.append(outcome)
    mean, std = mean_std(values)
    return {
        "env": group.env,
        "algo": group.algo,
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


def _grid_problems(slots: Slots, cells: Sequence[Cell], root: Any) -> list[str]:
    lines = []
    for run in slots.values():
        if run is not None and run.status == "finished":
            absent = [f"k={k}, N={n}" for k, n in cells if (k, n) not in run.grid]
            if absent:
                where = relative_dir(run.run_dir, root)
                lines.append(f"not in grid: `{where}` has no {'; '.join(absent)}")
    return lines


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else "no error message"
