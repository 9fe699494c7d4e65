"""The steps of the GPU check (``benchmarks/gpu_check.sh`` runs this after installing wheels).

Each step is a command in its own process, bounded by a timeout: its own cap, and never past
the check's ``--budget`` (seconds from the start); a step that no longer fits is skipped.
Correctness comes first, then the figures:

1. ``environment``: torch, CUDA and the GPU as torch sees them;
2. ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py``;
3. ``train``: a short paper-size ``sorl-train`` run (4 x 512 networks) on a small dataset
   regenerated with OGBench's oracles, eager, with its final (k, N) evaluation;
4. ``train_resume``: the same run continued from its checkpoint for a few more updates (in
   the run dir of ``train``: the two run in one invocation);
5. ``throughput_<size>_<mode>``: ``train_throughput.py`` for each size (paper, demo) and
   mode (eager, compile, cudagraphs), one process each;
6. ``latency_<mode>``: ``inference_latency.py`` at paper size, eager and cudagraphs.

Every step's command, exit status, time, output tail and parsed figures go into
``<out>/gpu_check.json``, rewritten after each step (a check stopped early keeps what it
finished); the whole output goes to ``<out>/gpu_check.log``. ``--dry-run`` runs every step
on the CPU at tiny sizes (the CUDA tests then skip), to prove the commands before a GPU
machine is spent on them; ``--only`` reruns chosen steps.

Usage::

    python benchmarks/gpu_check.py --out build/gpu_check --budget 420
    python benchmarks/gpu_check.py --out build/gpu_check --dry-run
    python benchmarks/gpu_check.py --out build/gpu_check --only throughput_paper_compile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TAIL_LINES = 30
# The markers the CUDA tests use, registered here too (pytest runs with --strict-markers).
MARKERS = "cuda: needs a CUDA GPU\nslow: long-running test"


@dataclasses.dataclass
class Step:
    """One command of the check: its name, argv, time cap, and how to read its result."""

    name: str
    argv: list[str]
    cap_s: float
    parse: str = "none"  # none | junit | train | report
    result_file: Path | None = None


def environment_code() -> str:
    return (
        "import json, torch\n"
        "info = {'torch': torch.__version__, 'cuda': torch.version.cuda,\n"
        "        'cuda_available': torch.cuda.is_available()}\n"
        "if torch.cuda.is_available():\n"
        "    p = torch.cuda.get_device_properties(0)\n"
        "    info.update(gpu=p.name, memory_gib=round(p.total_memory / 2**30, 1),\n"
        "                capability=list(torch.cuda.get_device_capability()),\n"
        "                multiprocessors=p.multi_processor_count)\n"
        "from importlib.metadata import version\n"
        "for name in ('torchrl', 'tensordict', 'hydra-core', 'ogbench', 'mujoco', 'gymnasium'):\n"
        "    info[name] = version(name)\n"
        "print(json.dumps(info))\n"
    )


def train_argv(work: Path, device: str, dry_run: bool, updates: int, resume: bool) -> list[str]:
    """A short paper-size training run (eager) on a freshly generated small dataset."""
    argv = [PY, "-m", "sorl_torchrl.recipes.train", "+experiment=paper", f"device={device}"]
    argv += [
        f"num_updates={updates}",
        "data.source=regenerated",
        "data.download_if_missing=false",
        f"data.root={work / 'data'}",
        "data.generate_if_missing=true",
        f"data.num_episodes={2 if dry_run else 20}",
        f"data.workers={1 if dry_run else 8}",
        "compile=false",
        f"log_interval={10 if dry_run else 500}",
        f"val_interval={10 if dry_run else 1000}",
        "val_batches=2",
        f"checkpoint_interval={10 if dry_run else 1000}",
        f"eval.num_episodes={1 if dry_run else 5}",
        "progress=false",
        f"hydra.run.dir={work / 'run'}",
        "resume=true" if resume else "resume=auto",
    ]
    if dry_run:
        argv += ["eval.inference_steps=[1]", "eval.num_candidates=[1]", "eval.max_episode_steps=5"]
    return argv


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    device = "cpu" if args.dry_run else "cuda"
    steps = [
        Step("environment", [PY, "-c", environment_code()], 60, "report"),
        Step(
            "cuda_tests",
            [PY, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-rA"]
            + ["-p", "no:cacheprovider", f"--junitxml={work / 'junit.xml'}"]
            + ["-o", f"markers={MARKERS}"],
            180,
            "junit",
            work / "junit.xml",
        ),
    ]
    updates, more = (20, 30) if args.dry_run else (2000, 2500)
    steps += [
        Step("train", train_argv(work, device, args.dry_run, updates, False), 150, "train"),
        Step("train_resume", train_argv(work, device, args.dry_run, more, True), 60, "train"),
    ]
    sizes = ["demo"] if args.dry_run else ["paper", "demo"]
    modes = ["eager"] if args.dry_run else ["eager", "compile", "cudagraphs"]
    repeats = ["--repeats", "1", "--updates", "2"] if args.dry_run else ["--repeats", "5"]
    repeats += [] if args.dry_run else ["--updates", "20"]
    throughput = [
        Step(
            f"throughput_{size}_{mode}",
            [PY, "benchmarks/train_throughput.py", "--device", device, "--sizes", size]
            + ["--modes", mode, "--json", str(work / f"throughput_{size}_{mode}.json")]
            + repeats,
            40 if mode == "eager" else 90,
            "report",
            work / f"throughput_{size}_{mode}.json",
        )
        for size in sizes
        for mode in modes
    ]
    calls = ["--repeats", "1", "--calls", "1"] if args.dry_run else ["--repeats", "3"]
    latency = [
        Step(
            f"latency_{mode}",
            [PY, "benchmarks/inference_latency.py", "--device", device, "--modes", mode]
            + ["--size", "demo" if args.dry_run else "paper"]
            + ["--json", str(work / f"latency_{mode}.json")]
            + calls,
            40 if mode == "eager" else 120,
            "report",
            work / f"latency_{mode}.json",
        )
        for mode in (["eager"] if args.dry_run else ["eager", "cudagraphs"])
    ]
    # The paper size first, then the verifier eagerly, the demo size, the CUDA-graph verifier.
    paper = [s for s in throughput if "_paper_" in s.name]
    demo = [s for s in throughput if "_demo_" in s.name]
    steps += paper + latency[:1] + demo + latency[1:]
    if args.only:
        unknown = set(args.only) - {s.name for s in steps}
        if unknown:
            raise SystemExit(f"unknown steps {sorted(unknown)}; known: {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in args.only]
    return steps


def parse_junit(path: Path) -> dict:
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, message = tag, (found.get("message") or "")[:500]
        cases.append({"name": case.get("name"), "outcome": outcome, "message": message})
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {**counts, "cases": cases}


def parse_train(work: Path) -> dict:
    """What the run dir's ``results.json`` says: status, steps, speed and the (k, N) grid."""
    record = json.loads((work / "run" / "results.json").read_text())
    keep = (
        "status",
        "num_updates",
        "resumed_from_update",
        "last_checkpoint_update",
        "wall_time_s",
        "train_time_s",
        "updates_per_second",
        "compile_mode",
        "compile_time_s",
        "torch_threads",
        "runtime",
        "final_metrics",
        "grid",
        "segments",
    )
    out = {key: record[key] for key in keep if key in record}
    dataset = record.get("dataset") or {}
    out["dataset"] = {k: dataset.get(k) for k in ("name", "source", "transitions")}
    return out


def parse_report(step: Step, stdout: str) -> dict | None:
    if step.result_file is None:
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    report = json.loads(step.result_file.read_text())
    return {"results": report.get("results"), "table": report.get("table")}


def run_step(step: Step, timeout: float, log, work: Path) -> dict:
    entry: dict = {"name": step.name, "argv": step.argv, "timeout_s": round(timeout, 1)}
    log.write(f"\n===== {step.name} (timeout {timeout:.0f} s)\n$ {' '.join(step.argv)}\n")
    log.flush()
    start = time.perf_counter()
    # A session of its own, so that a timeout ends the step's workers too (data generation,
    # inductor's compile pool), not only its main process.
    proc = subprocess.Popen(
        step.argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        entry["returncode"] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        entry["returncode"], entry["timed_out"] = None, True
    entry["wall_s"] = round(time.perf_counter() - start, 1)
    log.write(output)
    log.flush()
    entry["tail"] = output.strip().splitlines()[-TAIL_LINES:]
    try:
        if step.parse == "junit" and step.result_file and step.result_file.exists():
            entry["result"] = parse_junit(step.result_file)
        elif step.parse == "train" and (work / "run" / "results.json").exists():
            entry["result"] = parse_train(work)
        elif step.parse == "report" and entry["returncode"] == 0:
            entry["result"] = parse_report(step, output)
    except (OSError, ValueError, KeyError, AttributeError, ElementTree.ParseError) as err:
        entry["parse_error"] = f"{type(err).__name__}: {err}"
    entry["ok"] = entry["returncode"] == 0
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON and log go")
    parser.add_argument(
        "--budget", type=float, default=420.0, help="seconds for all steps (default 420)"
    )
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny")
    parser.add_argument("--only", nargs="+", help="run only these steps")
    args = parser.parse_args(argv)
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    steps = plan(args, work)
    report: dict = {
        "dry_run": args.dry_run,
        "budget_s": args.budget,
        "work_dir": str(work),
        "environment": {k: os.environ.get(k) for k in ("MUJOCO_GL", "PYTHONPATH")},
        "steps": [],
    }
    target = args.out / "gpu_check.json"
    with (args.out / "gpu_check.log").open("a") as log:
        for step in steps:
            left = args.budget - (time.monotonic() - start)
            if left < min(step.cap_s, 20):
                entry = {"name": step.name, "argv": step.argv, "skipped": "no time left"}
            else:
                entry = run_step(step, min(step.cap_s, left), log, work)
            report["steps"].append(entry)
            report["elapsed_s"] = round(time.monotonic() - start, 1)
            target.write_text(json.dumps(report, indent=2, default=str))
            status = entry.get("skipped") or (
                "ok" if entry["ok"] else f"FAILED ({entry['returncode']})"
            )
            print(f"[gpu_check] {step.name}: {status} {entry.get('wall_s', '')}", flush=True)
    failed = [s["name"] for s in report["steps"] if not s.get("ok") and not s.get("skipped")]
    print(f"[gpu_check] wrote {target}; failed: {failed or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
