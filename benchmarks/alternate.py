"""A/B runs: several named benchmark commands in turn, for several rounds, in fresh processes.

Each ``--run NAME=COMMAND`` is a shell command that writes a JSON report to the path put in
place of ``{out}``. Round after round, every command runs once (in the order given, or
rotated each round with ``--rotate``), so slow drifts of the machine hit every command alike.
The reports are read, whatever wrote them, as long as they hold a list of results (a
``results`` list, or the list itself) whose entries give ``size``, ``mode`` and
``ms_median``: ``train_throughput.py`` of this or an earlier commit, or a timing script of
another implementation.

The table gives, per round and per (size, mode, threads), each command's ms per update and
its time relative to each ``--baseline`` (``new/old`` = 0.95 means 5 % less time than
``old``). A baseline that reports a single mode at a size is compared with every mode at that
size (e.g. a JAX update jitted whole against eager and compiled updates). A summary gives the
median over rounds and the range of each ratio. The combined JSON (``--json``) holds the
commands, each round's parsed reports, the summary and the printed tables.

Usage (single quotes keep ``$OLD`` for the command's own shell, so the JSON records the
command without local paths)::

    export OLD=/path/to/a/checkout/of/the/previous/commit
    python benchmarks/alternate.py --rounds 3 --baseline old \\
        --run old='PYTHONPATH=$OLD python $OLD/benchmarks/train_throughput.py --json {out}' \\
        --run new='python benchmarks/train_throughput.py --json {out}' \\
        --json benchmarks/results/train_throughput_ab_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, print_table  # noqa: E402

Key = tuple[str, str, str]  # (size, mode, threads)


def parse_run(text: str) -> tuple[str, str]:
    """``NAME=COMMAND`` -> (name, command); the command must contain ``{out}``."""
    name, sep, command = text.partition("=")
    if not sep or not name.strip() or "{out}" not in command:
        raise argparse.ArgumentTypeError(f"expected NAME=COMMAND with {{out}} in it: {text!r}")
    return name.strip(), command.strip()


def result_entries(report: dict | list) -> list[dict]:
    """The result entries of a report: its ``results`` list, or the report if it is a list."""
    entries = report.get("results", []) if isinstance(report, dict) else report
    return [e for e in entries if isinstance(e, dict) and "size" in e and "mode" in e]


def entry_key(entry: dict) -> Key:
    mode = str(entry["mode"])
    precision = entry.get("matmul_precision", "highest")
    if precision != "highest":
        mode += f"@{precision}"
    return str(entry["size"]), mode, str(entry.get("threads", ""))


def timings(report: dict | list) -> dict[Key, dict]:
    """(size, mode, threads) -> ``{"ms": median ms or None, "fell_back", "error"}``."""
    out = {}
    for entry in result_entries(report):
        ok = "error" not in entry and "ms_median" in entry
        out[entry_key(entry)] = {
            "ms": float(entry["ms_median"]) if ok else None,
            "fell_back": bool(entry.get("fell_back", False)),
            "error": entry.get("error") if not ok else None,
        }
    return out


def baseline_ms(times: dict[Key, dict], key: Key) -> float | None:
    """The baseline's ms for ``key``, or its only mode at that size and thread count."""
    if key in times:
        return times[key]["ms"]
    same = [t for (size, _, threads), t in times.items() if (size, threads) == (key[0], key[2])]
    return same[0]["ms"] if len(same) == 1 else None


def run_command(name: str, command: str, out: Path, log: Path, timeout: float) -> dict:
    """Run one command in a fresh shell; return its parsed report (or the error).

    The record keeps the command as given (with ``{out}``), not the local paths.
    """
    shell_command = command.replace("{out}", shlex.quote(str(out)))
    out.unlink(missing_ok=True)
    record: dict = {"command": command, "load_average_start": os.getloadavg()}
    print(f"[alternate] {name}: {shell_command}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            proc = subprocess.run(
                shell_command, shell=True, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout
            )
            record["returncode"] = proc.returncode
        except subprocess.TimeoutExpired:
            record["returncode"] = None
            record["error"] = f"timeout after {timeout:.0f} s"
    record["wall_s"] = time.perf_counter() - start
    record["load_average_end"] = os.getloadavg()
    try:
        record["report"] = json.loads(out.read_text())
    except (OSError, ValueError) as err:
        why = "no report" if isinstance(err, OSError) else f"unreadable report ({err})"
        tail = log.read_text().strip().splitlines()[-3:]
        record.setdefault("error", f"{why}: " + " | ".join(tail))
    if record["returncode"] not in (0, None) and "report" not in record:
        record["error"] = f"exit {record['returncode']}: " + record["error"]
    return record


def row_keys(reports: Iterable[dict | list]) -> list[Key]:
    """Every (size, mode, threads) in the order first seen, grouped by size and threads."""
    keys: dict[Key, None] = {}
    for report in reports:
        keys.update(dict.fromkeys(timings(report)))
    groups = list(dict.fromkeys((size, threads) for size, _, threads in keys))
    return sorted(keys, key=lambda k: groups.index((k[0], k[2])))


def ratio_columns(names: list[str], baselines: list[str]) -> list[tuple[str, str]]:
    return [(name, base) for base in baselines for name in names if name != base]


def round_rows(
    round_index: int, runs: dict[str, dict], names: list[str], baselines: list[str]
) -> list[dict]:
    """One row per (size, mode, threads) of a round: each command's ms and the ratios."""
    times = {name: timings(runs[name].get("report", [])) for name in names}
    rows = []
    for key in row_keys(runs[name].get("report", []) for name in names):
        row: dict = {"round": round_index, "size": key[0], "mode": key[1], "threads": key[2]}
        for name in names:
            cell = times[name].get(key)
            row[name] = cell["ms"] if cell else None
            if cell and cell["fell_back"]:
                row[f"{name} fell back"] = True
            if cell and cell["error"]:
                row[f"{name} error"] = cell["error"]
        for name, base in ratio_columns(names, baselines):
            mine, theirs = row[name], baseline_ms(times[base], key)
            row[f"{name}/{base}"] = mine / theirs if mine and theirs else None
        rows.append(row)
    return rows


def summarise(rows: list[dict], names: list[str], baselines: list[str]) -> list[dict]:
    """Median ms over rounds per (size, mode, threads) and each ratio's median and range."""
    grouped: dict[Key, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["size"], row["mode"], row["threads"]), []).append(row)
    summary = []
    for (size, mode, threads), group in grouped.items():
        out: dict = {"size": size, "mode": mode, "threads": threads, "rounds": len(group)}
        columns = names + [f"{n}/{b}" for n, b in ratio_columns(names, baselines)]
        for name in names:
            for flag in ("fell back", "error"):
                if any(r.get(f"{name} {flag}") for r in group):
                    out[f"{name} {flag}"] = True
        for column in columns:
            values = [r[column] for r in group if r.get(column) is not None]
            out[column] = statistics.median(values) if values else None
            if "/" in column and values:
                out[f"{column} range"] = [min(values), max(values)]
        summary.append(out)
    return summary


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def format_table(
    rows: list[dict], names: list[str], baselines: list[str], ranges: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Headers and text rows; columns that are empty in every row are left out."""
    ratios = [f"{n}/{b}" for n, b in ratio_columns(names, baselines)]
    columns = [
        c for c in names + ratios if any(r.get(c) is not None or r.get(f"{c} error") for r in rows)
    ]
    lead = ["round"] if "round" in rows[0] else ["rounds"]
    headers = lead + ["size", "mode", "threads"]
    headers += [f"{c} ms" if c in names else c for c in columns]
    text_rows = []
    for r in rows:
        cells = [str(r[lead[0]]), r["size"], r["mode"], r["threads"]]
        for c in columns:
            if c in names:
                note = " (fell back)" if r.get(f"{c} fell back") else ""
                cells.append("error" if r.get(f"{c} error") else _fmt(r.get(c), 1) + note)
            elif ranges and r.get(f"{c} range"):
                low, high = r[f"{c} range"]
                cells.append(f"{_fmt(r[c], 2)} ({low:.2f}-{high:.2f})")
            else:
                cells.append(_fmt(r.get(c), 2))
        text_rows.append(cells)
    return headers, text_rows


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run",
        action="append",
        type=parse_run,
        required=True,
        metavar="NAME=COMMAND",
        help="a shell command writing its JSON report to {out}; give one --run per command",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", nargs="+", default=[], help="names to compare against")
    parser.add_argument("--rotate", action="store_true", help="start each round one later")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per command")
    parser.add_argument("--workdir", type=Path, help="per-run reports and logs (default: temp)")
    parser.add_argument("--json", type=Path, help="the combined report")
    args = parser.parse_args(argv)
    commands = dict(args.run)
    names = list(commands)
    if len(names) != len(args.run):
        parser.error("every --run needs its own name")
    unknown = [b for b in args.baseline if b not in commands]
    if unknown:
        parser.error(f"--baseline names no --run: {unknown}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alternate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[alternate] reports and logs in {workdir}", file=sys.stderr, flush=True)

    info = machine()
    rounds, rows = [], []
    for index in range(1, args.rounds + 1):
        shift = (index - 1) % len(names) if args.rotate else 0
        order = names[shift:] + names[:shift]
        runs = {}
        for name in order:
            stem = workdir / f"round{index}-{name}"
            out, log = stem.with_suffix(".json"), stem.with_suffix(".log")
            runs[name] = run_command(name, commands[name], out, log, args.timeout)
            if "error" in runs[name]:
                print(f"[alternate] {name}: {runs[name]['error']}", file=sys.stderr, flush=True)
        rounds.append({"round": index, "order": order, "runs": runs})
        rows += round_rows(index, runs, names, args.baseline)
    info["load_average_end"] = os.getloadavg()

    failed = [(r["round"], n) for r in rounds for n, run in r["runs"].items() if "error" in run]
    for index, name in failed:
        print(f"[alternate] round {index}, {name}: {rounds[index - 1]['runs'][name]['error']}")
    if not rows:
        sys.exit("no command wrote a readable report")
    summary = summarise(rows, names, args.baseline)
    print(f"# {info['cpu']}, {info['logical_cpus']} CPUs; ms per update, ratios = time / baseline")
    per_round = print_table(*format_table(rows, names, args.baseline))
    print(f"\n# median over {args.rounds} rounds (ratios: median, min-max)")
    overall = print_table(*format_table(summary, names, args.baseline, ranges=True))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "alternate",
            "commands": commands,
            "baselines": args.baseline,
            "rounds_requested": args.rounds,
            "machine": info,
            "rounds": rounds,
            "rows": rows,
            "summary": summary,
            "table": per_round,
            "summary_table": overall,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
