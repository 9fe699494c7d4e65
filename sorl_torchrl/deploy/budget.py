r"""Which ``(k, N)`` is best within a latency budget on this machine.

``sorl-budget`` measures one policy step (:meth:`VerifierSampler.select
<sorl_torchrl.VerifierSampler.select>`: noise, ``N`` candidates with ``k`` Euler steps, the
critic's scores, the argmax) for every ``(k, N)`` of a grid, eagerly and compiled, with the
first call and a warm-up excluded (:func:`~sorl_torchrl.deploy.latency.measure_latency`). It
joins each cell with its success in the run's final evaluation (the ``grid`` of the run's
``results.json``, or the rows that ``sorl-evaluate`` writes), prints the table, the Pareto
front (success against latency: no other cell is both faster and more successful) and, for
each budget, the most successful cell whose latency (p99 by default) fits, and writes JSON and
a PNG of the front with the budget lines. Without success data it ranks the cells by latency
alone and says so: the choice is then the cell that uses the most of the budget.

    sorl-budget runs/demo/.../checkpoint.pt --latency-ms 1 5 20
    sorl-budget checkpoint.pt --latency-ms 5 --batch 64 --device cuda --results results.json

Exit status: 0 when a cell meets every budget, 1 when some budget is met by none (the report
is still written), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from sorl_torchrl._cli import add_debug_option, console_command
from sorl_torchrl._io import atomic_write_text
from sorl_torchrl._validation import check_power_of_two
from sorl_torchrl.deploy.budget_plot import plot_budget
from sorl_torchrl.deploy.latency import machine_description, measure_latency, set_threads
from sorl_torchrl.deploy.load import TrainedNetworks, load_networks
from sorl_torchrl.recipes.run_record import RESULTS_NAME, record_identity, resume_differences
from sorl_torchrl.recipes.sweep.collect import Cell, parse_grid
from sorl_torchrl.scaling import format_success, markdown_table

__all__ = [
    "MODES",
    "STATISTICS",
    "build_parser",
    "choose_cell",
    "format_budget",
    "join_success",
    "main",
    "measure_grid",
    "pareto_front",
    "read_success",
]

#: How each measured mode runs the sampler (its ``compile=`` argument).
MODES: dict[str, bool | str] = {
    "eager": False,
    "compiled": "default",
    "cudagraphs": "reduce-overhead",
}
#: Which latency a budget is compared with.
STATISTICS = ("p99", "median")
#: The grid measured when neither the command line nor the run's evaluation gives one.
DEFAULT_STEPS, DEFAULT_CANDIDATES = (1, 2, 4, 8), (1, 4, 16)


def read_success(path: str | os.PathLike, config: dict[str, Any] | None = None) -> dict:
    """``{(k, N): {"success_rate", "num_episodes"}}`` from a run record or evaluation rows.

    Args:
        path: a run's ``results.json`` (its final ``grid``), or a JSON list of grid rows
            (``sorl-evaluate``'s ``scaling.json``).
        config: the checkpoint's run config: a run record of another run is refused.

    Raises:
        ValueError: the file cannot be read, holds no grid, or records another run.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "scaling.json"
        >>> _ = path.write_text(json.dumps([{"inference_steps": 2, "num_candidates": 4,
        ...                                  "success_rate": 0.5, "num_episodes": 20}]))
        >>> read_success(path)
        {(2, 4): {'success_rate': 0.5, 'num_episodes': 20}}
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({err}).") from err
    rows = record
    if isinstance(record, dict):
        if record.get("status") not in (None, "finished") or "grid" not in record:
            raise ValueError(
                f"{path} holds no final (k, N) grid (status {record.get('status')!r}): the "
                "run has not finished its evaluation."
            )
        rows = record["grid"]
        if config is not None and (record.get("run_key") or record.get("config")):
            diffs = resume_differences(
                record_identity(record), record_identity({"config": config}), f"{path}"
            )
            if diffs:
                raise ValueError(
                    f"{path} records another run than the checkpoint's (stored: the record, "
                    "now: the checkpoint):\n  " + "\n  ".join(diffs) + "\nPass the "
                    "--results of this checkpoint's run."
                )
    try:
        grid, episodes = parse_grid(rows)
    except ValueError as err:
        raise ValueError(f"{path}: {err}.") from err
    return {
        cell: {"success_rate": rate, "num_episodes": episodes.get(cell)}
        for cell, rate in grid.items()
    }


def measure_grid(
    networks: TrainedNetworks,
    cells: Iterable[Cell],
    *,
    batch: int = 1,
    modes: Sequence[str] = ("eager", "compiled"),
    repeats: int = 100,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """Latency of one policy step per cell and mode (see the module docs).

    Returns:
        One row per ``(mode, k, N)``: ``inference_steps``, ``num_candidates``, ``mode``,
        ``compiled`` (``False`` also when compilation fell back to eager), ``median_ms``,
        ``p99_ms``, ``first_call_s``, ``repeats``.
    """
    generator = torch.Generator().manual_seed(0)
    observation = torch.randn(batch, networks.actor.observation_dim, generator=generator)
    observation = observation.to(networks.device)
    rows = []
    for mode in modes:
        for k, n in cells:
            sampler = networks.sampler(k, n, compile=MODES[mode])
            latency = measure_latency(
                lambda s=sampler: s.select(observation),
                networks.device,
                repeats=repeats,
                warmup=warmup,
            )
            rows.append(
                {
                    "inference_steps": k,
                    "num_candidates": n,
                    "mode": mode,
                    "compiled": sampler.is_compiled,
                    **latency.as_dict(),
                }
            )
    return rows


def join_success(
    rows: Sequence[dict[str, Any]], success: dict | None, statistic: str = "p99"
) -> list[dict[str, Any]]:
    """One entry per ``(k, N)``: its fastest mode by ``statistic`` and its success (or ``None``).

    Examples:
        >>> rows = [{"inference_steps": 1, "num_candidates": 4, "mode": m, "median_ms": t,
        ...          "p99_ms": 2 * t} for m, t in (("eager", 3.0), ("compiled", 1.0))]
        >>> cell, = join_success(rows, {(1, 4): {"success_rate": 0.5, "num_episodes": 10}})
        >>> cell["mode"], cell["latency_ms"], cell["success_rate"]
        ('compiled', 2.0, 0.5)
    """
    key = f"{statistic}_ms"
    cells: dict[Cell, dict[str, Any]] = {}
    for row in rows:
        cell = (row["inference_steps"], row["num_candidates"])
        if cell not in cells or row[key] < cells[cell]["latency_ms"]:
            found = (success or {}).get(cell, {})
            cells[cell] = {
                "inference_steps": cell[0],
                "num_candidates": cell[1],
                "mode": row["mode"],
                "latency_ms": row[key],
                "median_ms": row["median_ms"],
                "p99_ms": row["p99_ms"],
                "success_rate": found.get("success_rate"),
                "num_episodes": found.get("num_episodes"),
            }
    return sorted(cells.values(), key=lambda c: (c["inference_steps"], c["num_candidates"]))


def pareto_front(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells no other cell beats on both latency and success, fastest first.

    Cells without success are left out.

    Examples:
        >>> cells = [{"latency_ms": t, "success_rate": s, "name": n}
        ...          for n, t, s in (("a", 1, 0.2), ("b", 2, 0.1), ("c", 3, 0.6), ("d", 3, 0.5))]
        >>> [c["name"] for c in pareto_front(cells)]
        ['a', 'c']
    """
    scored = [c for c in cells if c.get("success_rate") is not None]
    front, best = [], float("-inf")
    for cell in sorted(scored, key=lambda c: (c["latency_ms"], -c["success_rate"])):
        if cell["success_rate"] > best:
            front.append(cell)
            best = cell["success_rate"]
    return front


def choose_cell(
    cells: Sequence[dict[str, Any]], budget_ms: float, *, by_success: bool
) -> dict[str, Any] | None:
    """The best cell whose latency fits ``budget_ms``, ``None`` if none does.

    ``by_success``: the most successful (ties: the faster), among the cells with success;
    else the slowest that fits (the most steps and candidates the budget allows).

    Examples:
        >>> cells = [{"latency_ms": t, "success_rate": s} for t, s in ((1, 0.2), (4, 0.6))]
        >>> choose_cell(cells, 5, by_success=True)["latency_ms"]
        4
        >>> choose_cell(cells, 2, by_success=True)["latency_ms"], choose_cell(cells, 0.5,
        ...     by_success=False)
        (1, None)
    """
    fits = [c for c in cells if c["latency_ms"] <= budget_ms]
    if by_success:
        fits = [c for c in fits if c.get("success_rate") is not None]
        return max(fits, key=lambda c: (c["success_rate"], -c["latency_ms"]), default=None)
    return max(fits, key=lambda c: c["latency_ms"], default=None)


def _name(cell: dict[str, Any]) -> str:
    return f"k={cell['inference_steps']}, N={cell['num_candidates']} ({cell['mode']})"


def format_budget(report: dict[str, Any]) -> str:
    """The table, the front and the choice per budget, as text (Markdown tables)."""
    modes, stat = report["modes"], report["statistic"]
    by_mode = {
        (r["mode"], r["inference_steps"], r["num_candidates"]): r for r in report["measurements"]
    }
    front = {(c["inference_steps"], c["num_candidates"]) for c in report["front"]}
    header = ["k", "N", "success (%)"]
    header += [f"{mode} {s} ms" for mode in modes for s in ("median", "p99")] + ["front"]
    body, fell_back = [], False
    for cell in report["cells"]:
        k, n = cell["inference_steps"], cell["num_candidates"]
        row = [str(k), str(n), format_success(cell["success_rate"])]
        for mode in modes:
            measured = by_mode[mode, k, n]
            mark = "*" if MODES[mode] and not measured["compiled"] else ""
            fell_back |= bool(mark)
            row += [f"{measured['median_ms']:.3f}{mark}", f"{measured['p99_ms']:.3f}{mark}"]
        body.append(row + ["yes" if (k, n) in front else ""])
    machine = report["machine"]
    lines = [
        f"Latency of one policy step, batch {report['batch']}, on {machine['device']} "
        f"({machine.get('gpu', machine['cpu'])}, {machine['torch_threads']} torch threads), "
        f"{report['repeats']} calls per cell after warm-up:",
        markdown_table(header, body),
    ]
    if fell_back:
        lines.append("* compilation failed for this cell; it ran eagerly.")
    lines.append(report["success_note"])
    if report["front"]:
        points = [
            f"{_name(c)} {c['latency_ms']:.3f} ms -> {format_success(c['success_rate'])} %"
            for c in report["front"]
        ]
        lines.append(f"Pareto front (success vs {stat} latency):\n  " + "\n  ".join(points))
    for entry in report["budgets"]:
        budget = f"Budget {entry['latency_ms']:g} ms ({stat})"
        choice, fastest = entry["choice"], entry["fastest"]
        if choice is None:
            lines.append(
                f"{budget}: no (k, N) meets it on this machine. The fastest cell is "
                f"{_name(fastest)} at {fastest['latency_ms']:.3f} ms."
            )
        elif report["ranked_by"] == "success":
            lines.append(
                f"{budget}: {_name(choice)}, {format_success(choice['success_rate'])} % success "
                f"at {choice['latency_ms']:.3f} ms."
            )
        else:
            lines.append(f"{budget}: {_name(choice)} at {choice['latency_ms']:.3f} ms.")
    return "\n".join(lines)


def _grid(args: argparse.Namespace, success: dict | None) -> list[Cell]:
    steps = args.inference_steps or sorted({k for k, _ in success or {}}) or DEFAULT_STEPS
    cands = args.num_candidates or sorted({n for _, n in success or {}}) or DEFAULT_CANDIDATES
    for k in steps:
        check_power_of_two(k)
    for n in cands:
        if n < 1:
            raise ValueError(f"--num-candidates must be positive ints, got {n}.")
    return [(k, n) for k in steps for n in cands]


def _success(args: argparse.Namespace, networks: TrainedNetworks) -> tuple[dict | None, str]:
    """The success grid and a sentence saying where it came from (or why there is none)."""
    path = args.results or args.checkpoint.parent / RESULTS_NAME
    if args.results is None and not path.is_file():
        return None, f"No success data ({path} does not exist): cells ranked by latency alone."
    try:
        success = read_success(path, networks.config)
    except ValueError as err:
        if args.results is not None:
            raise
        return None, f"No success data ({err}): cells ranked by latency alone."
    return success, f"Success: the final evaluation in {path}."


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-budget``."""
    parser = argparse.ArgumentParser(
        prog="sorl-budget",
        description="Choose (k, N) for a latency budget on this machine.",
        epilog="exit status: 0 every budget met; 1 a budget met by no cell (the report is "
        "still written) or an unexpected error; 2 bad input. --debug adds a traceback.",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint.pt written by sorl-train")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        required=True,
        metavar="MS",
        help="one or more latency budgets per step, in milliseconds",
    )
    parser.add_argument("--batch", type=int, default=1, help="observations per step (default 1)")
    parser.add_argument("--device", default="cpu", help="where to measure (default: cpu)")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="the success per (k, N): a run's results.json or sorl-evaluate's scaling.json "
        "(default: the results.json next to the checkpoint, if any)",
    )
    parser.add_argument(
        "--inference-steps",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="the k of the grid, powers of two (default: the evaluated ones, else 1 2 4 8)",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="the N of the grid (default: the evaluated ones, else 1 4 16)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODES),
        default=None,
        help="how the step runs: eager, compiled, cudagraphs (default: eager compiled, and "
        "cudagraphs on CUDA)",
    )
    parser.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="p99",
        help="the latency a budget is compared with (default: p99)",
    )
    parser.add_argument(
        "--repeats", type=int, default=100, help="timed calls per cell (default: 100)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed calls after the first (default: 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default: <checkpoint dir>/budget)"
    )
    return add_debug_option(parser)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``sorl-budget``."""
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure, join, choose; write ``<out>/budget_<device>_batch<B>.{json,png}``; the report."""
    start = time.perf_counter()
    if args.batch < 1:
        raise ValueError(f"--batch must be a positive int, got {args.batch}.")
    if any(budget <= 0 for budget in args.latency_ms):
        raise ValueError(f"--latency-ms budgets must be positive, got {args.latency_ms}.")
    if args.threads is not None:
        set_threads(args.threads)
    networks = load_networks(args.checkpoint, device=args.device)
    cuda = networks.device.type == "cuda"
    modes = args.modes or [m for m in MODES if m != "cudagraphs" or cuda]
    if "cudagraphs" in modes and not cuda:
        raise ValueError("--modes cudagraphs needs a CUDA device (--device cuda).")
    success, note = _success(args, networks)
    cells = _grid(args, success)
    rows = measure_grid(
        networks, cells, batch=args.batch, modes=modes, repeats=args.repeats, warmup=args.warmup
    )
    joined = join_success(rows, success, args.statistic)
    by_success = any(c["success_rate"] is not None for c in joined)
    unevaluated = [c for c in joined if c["success_rate"] is None]
    if by_success and unevaluated:
        names = ", ".join(f"k={c['inference_steps']} N={c['num_candidates']}" for c in unevaluated)
        note += f" Not evaluated, so never chosen: {names}."
    fastest = min(joined, key=lambda c: c["latency_ms"])
    report = {
        "checkpoint": str(networks.path),
        "checkpoint_step": networks.step,
        "machine": machine_description(networks.device),
        "batch": args.batch,
        "modes": modes,
        "statistic": args.statistic,
        "repeats": args.repeats,
        "ranked_by": "success" if by_success else "latency",
        "success_note": note,
        "measurements": rows,
        "cells": joined,
        "front": pareto_front(joined),
        "budgets": [
            {
                "latency_ms": budget,
                "choice": choose_cell(joined, budget, by_success=by_success),
                "fastest": fastest,
            }
            for budget in args.latency_ms
        ],
    }
    report["wall_time_s"] = time.perf_counter() - start
    out = args.out or networks.path.parent / "budget"
    stem = f"budget_{networks.device.type}_batch{args.batch}"
    report["files"] = {"json": str(out / f"{stem}.json"), "png": str(out / f"{stem}.png")}
    plot_budget(report, out / f"{stem}.png")
    atomic_write_text(out / f"{stem}.json", json.dumps(report, indent=2))
    return report


@console_command("sorl-budget")
def main(argv: list[str] | None = None) -> int:
    """``sorl-budget``: 0 when every budget is met, 1 when one is not, 2 for bad input."""
    report = run(parse_args(argv))
    print(format_budget(report))
    files = report["files"]
    print(f"Wrote {files['json']} and {files['png']} ({report['wall_time_s']:.1f} s).")
    return 0 if all(entry["choice"] is not None for entry in report["budgets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
