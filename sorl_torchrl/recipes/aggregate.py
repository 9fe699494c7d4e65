"""Collect a sweep of SORL training runs into paper-style tables and test-time-scaling plots.

    sorl-results sweeps/paper                          # all envs, default (k, N) cells
    sorl-results sweeps/paper --cell 1,1 --cell 8,16   # choose the table columns
    sorl-results sweeps/paper --tasks 1 2 3 4 5 --seeds 1 2 3 4 5 6 7 8  # the expected runs
    sorl-results sweeps/paper --strict     # exit status 1 if any run is missing or unfinished
    python -m sorl_torchrl.recipes.aggregate sweeps/paper --out results/

Writes into ``--out`` (default ``<sweep_dir>/aggregate``): ``results.md``, ``results_env.csv``,
``results_task.csv``, ``runs.csv`` and one ``scaling_<env>[_<variant>].png`` per env and
variant. Reading the runs, the statistics and the report are :mod:`sorl_torchrl.recipes.sweep`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sorl_torchrl._cli import EXIT_STATUS_HELP, add_debug_option, console_command
from sorl_torchrl.recipes.sweep.collect import OUTPUT_DIRNAME, RUN_MARKERS, Cell, collect_runs
from sorl_torchrl.recipes.sweep.report import format_env_table, write_outputs
from sorl_torchrl.recipes.sweep.stats import default_cells


def parse_cell(text: str) -> Cell:
    """``"K,N"`` as a cell of positive ints (an argparse type).

    Examples:
        >>> parse_cell("8,16")
        (8, 16)
    """
    try:
        k, n = (int(part) for part in text.split(","))
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
        epilog=EXIT_STATUS_HELP,
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
    add_debug_option(parser)
    return parser


@console_command("sorl-results")
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``sorl-results``); returns the exit status.

    0 on success; 1 with ``--strict`` when a run is missing or unfinished; 2 (one message,
    no traceback) when the sweep dir does not exist or holds no run dirs, or on bad
    arguments (argparse exits with 2 itself).
    """
    args = build_parser().parse_args(argv)
    sweep_dir: Path = args.sweep_dir
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"sweep dir {sweep_dir} does not exist (or is not a directory): pass the dir that "
            "holds the run dirs, e.g. sweeps/paper."
        )
    runs = collect_runs(sweep_dir)
    if not runs:
        markers = ", ".join(RUN_MARKERS)
        raise FileNotFoundError(
            f"no run dirs under {sweep_dir} (none holds {markers}): pass the sweep dir that "
            "sorl-train -m wrote (hydra.sweep.dir)."
        )
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
