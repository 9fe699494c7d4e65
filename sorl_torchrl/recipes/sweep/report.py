"""A sweep's report: Markdown tables, CSV files and one test-time-scaling plot per variant.

Every table has the algorithm as a column (``algo``; runs of different algorithms are never
averaged together), and a sweep of several algorithms gets a table per ``(k, N)`` that puts
them side by side for each environment, with their run counts. An algorithm without
inference steps shows its ``(1, N)`` in a ``(k, N)`` column (marked ``at k=1``).

The tables' cells and the (k, N) grids are formatted, and the plots drawn, by
:mod:`sorl_torchrl.scaling`, the same code that formats and draws a single run's grid. A
plot shades each point's uncertainty: ± std over seeds where a cell averages several seeds,
the Wilson 95 % interval over its episodes where it has one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sorl_torchrl._io import atomic_write_text
from sorl_torchrl.recipes.sweep.collect import Cell, SweepRun, relative_dir
from sorl_torchrl.recipes.sweep.stats import (
    ENV_FIELDS,
    TASK_FIELDS,
    aggregate,
    evaluated_cell,
    names_algorithms,
)
from sorl_torchrl.recipes.sweep.variants import NO_VARIANT, variant_labels
from sorl_torchrl.scaling import (
    format_scaling_table,
    format_success,
    markdown_table,
    plot_scaling,
)

#: Columns of ``runs.csv``.
RUN_FIELDS = (
    "run_dir",
    "env",
    "algo",
    "variant",
    "task",
    "seed",
    "status",
    "wall_time_s",
    "updates_per_second",
    "error",
)


def format_env_table(rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> str:
    """The environment table in Markdown (``mean ± std (n/expected runs)``) with its notes."""
    return _cell_table(
        rows,
        ("env", "algo", "variant"),
        cells,
        lambda r: f"{_pm(r)} ({r['n_runs']}/{r['expected_runs']})",
    )


def format_task_table(rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> str:
    """The per-task table in Markdown (``mean ± std (n/expected seeds)``) with its notes."""
    return _cell_table(
        rows,
        ("env", "algo", "variant", "task"),
        cells,
        lambda r: f"{_pm(r)} ({r['n_seeds']}/{r['expected_seeds']} seeds)",
    )


def format_algorithm_table(rows: Sequence[dict[str, Any]], cell: Cell) -> str:
    """The algorithms side by side at ``cell``: one line per env, one column per algorithm.

    A column is an algorithm (with its variant where it has several); a cell is
    ``mean ± std (n/expected runs)``, ``†`` when flagged (the environment table's notes say
    why), ``-`` where the algorithm has no runs of the env.

    Examples:
        >>> rows = [{"env": "scene-play", "algo": a, "variant": "-", "k": 1, "N": 1,
        ...          "mean": m, "std": 0.0, "n_runs": 5, "expected_runs": 5, "flags": ""}
        ...         for a, m in (("sorl", 57.0), ("fql", 56.0))]
        >>> print(format_algorithm_table(rows, (8, 1)))
        | env | sorl | fql |
        |---|---|---|
        | scene-play | - | 56.0 ± 0.0 (5/5) at k=1 |
    """
    columns = list(dict.fromkeys((r["algo"], r["variant"]) for r in rows))
    by_key = {(r["env"], r["algo"], r["variant"], r["k"], r["N"]): r for r in rows}
    body = []
    for env in dict.fromkeys(r["env"] for r in rows):
        texts = []
        for algo, variant in columns:
            row = by_key.get((env, algo, variant, *evaluated_cell(algo, cell)))
            texts.append("-" if row is None else _count_text(row, cell))
        body.append([env, *texts])
    header = [algo if variant == NO_VARIANT else f"{algo} [{variant}]" for algo, variant in columns]
    return markdown_table(["env", *header], body)


def scaling_rows(env_rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Environment rows with a value as grid rows of :mod:`sorl_torchrl.scaling`.

    A cell that averages two seeds or more gets ``success_std`` (its band is ± std over
    seeds); one with a single seed gets ``num_episodes`` (its band is a Wilson interval).

    Examples:
        >>> row = {"k": 2, "N": 4, "mean": 45.0, "std": 5.0, "n_seeds": 2, "num_episodes": 40}
        >>> scaling_rows([row])
        [{'inference_steps': 2, 'num_candidates': 4, 'success_rate': 0.45, 'success_std': 0.05}]
    """
    out = []
    for row in env_rows:
        if not row["n_seeds"]:
            continue
        point = {"inference_steps": row["k"], "num_candidates": row["N"]}
        point["success_rate"] = row["mean"] / 100
        if row["n_seeds"] > 1:
            point["success_std"] = row["std"] / 100
        elif row.get("num_episodes"):
            point["num_episodes"] = row["num_episodes"]
        out.append(point)
    return out


def format_report(
    sweep_dir: str | os.PathLike,
    runs: Sequence[SweepRun],
    tables: tuple[Sequence[dict[str, Any]], Sequence[dict[str, Any]]],
    grid_rows: Sequence[dict[str, Any]],
    problems: Sequence[str],
    cells: Sequence[Cell],
) -> str:
    """The whole Markdown report (``results.md``).

    Args:
        sweep_dir: the sweep dir (named in the summary line).
        runs: every run dir read.
        tables: environment and per-task rows at ``cells`` (from :func:`aggregate`).
        grid_rows: environment rows at every ``(k, N)`` the runs evaluated.
        problems: the problem lines.
        cells: the table columns.
    """
    counts = {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "incomplete")}
    named = names_algorithms(run.algo for run in runs)
    parts = [
        "# SORL results",
        f"Sweep `{sweep_dir}`: {len(runs)} run dirs, {counts['finished']} finished, "
        f"{counts['failed']} failed, {counts['incomplete']} incomplete.",
    ]
    if len({row["algo"] for row in tables[0]}) > 1:
        parts += [
            "## Algorithms side by side",
            "Success (%) of each algorithm, as in the environment table; `(n/expected)` counts "
            "the finished runs averaged, `at k=1` marks an algorithm without inference steps "
            "(its `(1, N)`), `†` a flagged cell (see the environment table).",
        ]
        for cell in cells:
            parts += [f"### {_cell_name(cell)}", format_algorithm_table(tables[0], cell)]
    parts += [
        "## Environments",
        "Success (%): for each seed the mean over the env's tasks, then mean ± population std "
        "over seeds; `(n/expected)` counts the finished runs averaged.",
        format_env_table(tables[0], cells),
        "## Per task",
        "Success (%): mean ± population std over seeds; `(n/expected seeds)`.",
        format_task_table(tables[1], cells),
    ]
    grids = _by_group(grid_rows)
    if grids:
        parts += [
            "## Test-time scaling",
            "Success (%) at every evaluated (k, N), `k` rows x `N` columns: mean ± population "
            "std over seeds, as for the environments (the mean alone where a cell has one seed).",
        ]
        for (env, algo, variant), rows in grids.items():
            title = _shown(env, algo, variant, named)
            parts += [f"### {title}", format_scaling_table(scaling_rows(rows))]
    parts += [
        "## Problems",
        "\n".join(f"- {line}" for line in problems)
        if problems
        else "No problems: every expected run finished and has every reported (k, N).",
    ]
    return "\n\n".join(parts) + "\n"


def write_plots(grid_rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One ``scaling_<env>[_<algo>][_<variant>].png`` per group with a value; their paths.

    The algorithm is in the name (and the title) unless every run is SORL's. An env with
    several algorithms also gets ``scaling_<env>_algorithms.png``, their grids overlaid
    (one colour per algorithm and variant, labelled ``<algo>[ [variant]], N=<n>``).
    """
    paths = []
    named = names_algorithms(row["algo"] for row in grid_rows)
    overlays: dict[str, list[dict[str, Any]]] = {}
    for (env, algo, variant), rows in _by_group(grid_rows).items():
        points = scaling_rows(rows)
        if not points:
            continue
        n_runs, expected = max(r["n_runs"] for r in rows), rows[0]["expected_runs"]
        unit = "run" if expected == 1 else "runs"
        count = f"{n_runs} {unit}" if n_runs == expected else f"{n_runs} of {expected} {unit}"
        stem = _slug(env) + (f"_{_slug(algo)}" if named else "")
        stem += "" if variant == NO_VARIANT else f"_{_slug(variant)}"
        title = f"{_shown(env, algo, variant, named)}: {count}, {_band_note(points)}"
        paths.append(plot_scaling(points, out_dir / f"scaling_{stem}.png", title=title))
        label = algo if variant == NO_VARIANT else f"{algo} [{variant}]"
        overlays.setdefault(env, []).extend({**point, "algo": label} for point in points)
    for env, points in overlays.items():
        if len({point["algo"] for point in points}) > 1:
            path = out_dir / f"scaling_{_slug(env)}_algorithms.png"
            title = f"{env}: algorithms, {_band_note(points)}"
            paths.append(plot_scaling(points, path, title=title, series="algo"))
    return paths


def write_outputs(
    sweep_dir: Path,
    out_dir: Path,
    runs: Sequence[SweepRun],
    cells: Sequence[Cell],
    tasks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    plots: bool = True,
) -> tuple[list[dict[str, Any]], list[str], list[Path]]:
    """Write the report, CSV files and plots; returns env rows, problems and written paths.

    Writes ``results.md``, ``results_env.csv``, ``results_task.csv``, ``runs.csv`` and (with
    ``plots``) the scaling plots into ``out_dir``, each file atomically.
    """
    env_rows, task_rows, problems = aggregate(runs, cells, tasks, seeds, root=sweep_dir)
    all_cells = sorted({cell for run in runs if run.status == "finished" for cell in run.grid})
    grid_rows = aggregate(runs, all_cells, tasks, seeds)[0] if all_cells else []
    report = format_report(sweep_dir, runs, (env_rows, task_rows), grid_rows, problems, cells)
    files = {
        "results.md": report,
        "results_env.csv": _csv_text(env_rows, ENV_FIELDS),
        "results_task.csv": _csv_text(task_rows, TASK_FIELDS),
        "runs.csv": _csv_text(_run_rows(runs, sweep_dir), RUN_FIELDS),
    }
    paths = []
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
        paths.append(out_dir / name)
    if plots:
        paths += write_plots(grid_rows, out_dir)
    return env_rows, problems, paths


def _pm(row: dict[str, Any]) -> str:
    """``mean ± std`` of a row in %."""
    return format_success(row["mean"] / 100, row["std"] / 100)


def _cell_name(cell: Cell) -> str:
    return f"k={cell[0]}, N={cell[1]}"


def _count_text(row: dict[str, Any], cell: Cell) -> str:
    """``mean ± std (n/expected)`` and the :func:`_marks` of the row in ``cell``'s column."""
    return f"{_pm(row)} ({row['n_runs']}/{row['expected_runs']})" + _marks(row, cell)


def _marks(row: dict[str, Any], cell: Cell) -> str:
    """`` at k=1`` when the row shows another grid point than ``cell``; `` †`` if flagged."""
    moved = "" if (row["k"], row["N"]) == tuple(cell) else f" at k={row['k']}"
    return moved + (" †" if row["flags"] else "")


def _cell_table(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    cells: Sequence[Cell],
    text: Callable[[dict[str, Any]], str],
) -> str:
    """A table with one line per distinct ``keys`` and one column per cell, and its notes.

    ``text(row)`` formats a cell; flagged cells get ``†`` and a note listing the flags. A
    line of an algorithm without inference steps shows its ``(1, N)`` in a ``(k, N)``
    column, marked ``at k=1``.
    """
    lines: dict[tuple, dict[Cell, dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(tuple(row[key] for key in keys), {})[row["k"], row["N"]] = row
    body, notes = [], []
    for line_key, by_cell in lines.items():
        shown = [f"`{v}`" if k == "variant" else str(v) for k, v in zip(keys, line_key)]
        algo = next(iter(by_cell.values()))["algo"]
        texts, flagged = [], {}
        for cell in cells:
            row = by_cell[evaluated_cell(algo, cell)]
            texts.append(text(row) + _marks(row, cell))
            if row["flags"]:
                flagged.setdefault(row["flags"], []).append(_cell_name(cell))
        body.append([*shown, *texts])
        where = ", ".join(f"task {v}" if k == "task" else v for k, v in zip(keys, shown))
        notes += [f"- {where} ({'; '.join(names)}): {flags}" for flags, names in flagged.items()]
    table = markdown_table([*keys, *map(_cell_name, cells)], body)
    return table + (("\n\n† flagged cells:\n" + "\n".join(notes)) if notes else "")


def _band_note(points: Sequence[dict[str, Any]]) -> str:
    """What a plot's bands show, for its title.

    Examples:
        >>> _band_note([{"success_std": 0.1}, {"num_episodes": 10}])
        'mean ± std over seeds (Wilson 95 % over episodes where one seed)'
    """
    over_seeds = any("success_std" in p for p in points)
    wilson = any("num_episodes" in p for p in points)
    if over_seeds:
        return "mean ± std over seeds" + (
            " (Wilson 95 % over episodes where one seed)" if wilson else ""
        )
    return "one seed" + (", Wilson 95 % over episodes" if wilson else "")


def _by_group(
    rows: Iterable[dict[str, Any]],
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["env"], row["algo"], row["variant"]), []).append(row)
    return groups


def _shown(env: str, algo: str, variant: str, named: bool) -> str:
    """``env[ · algo][ [variant]]``: the algorithm named unless every run is SORL's."""
    shown = f"{env} · {algo}" if named else env
    return shown if variant == NO_VARIANT else f"{shown} [{variant}]"


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


def _run_rows(runs: Sequence[SweepRun], root: Any) -> list[dict[str, Any]]:
    return [
        {
            "run_dir": relative_dir(run.run_dir, root),
            "env": run.env,
            "algo": run.algo,
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
