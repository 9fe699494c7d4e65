"""Offline-to-online fine-tuning from a checkpoint: success before and after, speed, exact resume.

    python benchmarks/online_finetune.py --init-from runs/demo/<date> --online-steps 10000
    python benchmarks/online_finetune.py --init-from runs/demo/<date> --resume-check 1200

The first form fine-tunes ``--init-from`` (a finished ``sorl-train`` run dir) for
``--online-steps`` steps with the demo recipe and reports the success before (the grid
evaluated before the first online step) and after, the online transitions, episodes, env
steps per second and updates per second (``results.json``'s ``online`` entry).

``--resume-check S`` runs two fine-tuning runs of ``S`` steps from the same checkpoint: one
straight through, one killed with SIGKILL (a real crash: no clean-up runs) once its first
online checkpoint is on disk, then rerun with the same command. It compares the two final
checkpoints (every weight and optimiser tensor, the online transitions) and the logged
losses, and says whether they are identical. Results go to
``benchmarks/results/online_finetune_cpu.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, print_table, result_path, write_report  # noqa: E402

from sorl_torchrl.checkpoint import load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def train_command(init_from: Path, run_dir: Path, steps: int, extra: list[str]) -> list[str]:
    """The ``sorl-train`` command of a demo fine-tuning run."""
    return [
        sys.executable,
        "-m",
        "sorl_torchrl.recipes.train",
        "+experiment=demo",
        f"init_from={init_from}",
        f"online_steps={steps}",
        f"run_dir={run_dir}",
        "progress=false",
        *extra,
    ]


def run_to_end(command: list[str], log: Path) -> float:
    """Run a command to completion (output to ``log``); returns its wall time."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def run_and_kill(command: list[str], run_dir: Path, log: Path) -> int:
    """Start a run and SIGKILL it once its first online checkpoint exists; returns that step."""
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        checkpoint = run_dir / "checkpoint.pt"
        while process.poll() is None:
            time.sleep(2.0)
            try:
                state = load_checkpoint(checkpoint)
            except Exception:  # noqa: BLE001 - absent or being replaced: look again
                continue
            if state.get("online", {}).get("step", 0) > 0:
                time.sleep(5.0)  # let it run past the checkpoint, then crash it
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return int(state["online"]["step"])
    raise RuntimeError(f"the run ended before an online checkpoint was written (see {log})")


def logged_losses(run_dir: Path) -> list[tuple[str, ...]]:
    with open(run_dir / "logs" / "online.csv", newline="") as handle:
        return [(r["step"], r["loss_actor"], r["loss_qvalue"]) for r in csv.DictReader(handle)]


def tensors(tree, prefix: str = ""):
    """``(path, tensor)`` of every tensor in a nested checkpoint entry."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from tensors(value, f"{prefix}/{key}")
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from tensors(value, f"{prefix}/{i}")


def compare(a: Path, b: Path) -> dict:
    """Tensors and logged losses of two runs' final checkpoints and logs."""
    state_a, state_b = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    different, count = [], 0
    for entry in ("loss", "optimizers", "online"):
        left, right = dict(tensors(state_a[entry])), dict(tensors(state_b[entry]))
        if left.keys() != right.keys():
            different.append(f"{entry}: other entries")
            continue
        for key, value in left.items():
            count += 1
            if not torch.equal(value, right[key]):
                different.append(f"{entry}{key}")
    losses_a, losses_b = logged_losses(a), logged_losses(b)
    return {
        "tensors_compared": count,
        "tensors_different": different,
        "logged_rows": len(losses_a),
        "logged_losses_identical": losses_a == losses_b,
        "transitions": int(state_a["online"]["transitions"]["count"]),
    }


def summarize(run_dir: Path, wall: float) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    before, after = results["evaluations"][0], results["evaluations"][-1]
    return {
        "run_dir": str(run_dir),
        "wall_time_s": wall,
        "online": results["online"],
        "before": {"step": before["step"], "grid": before["grid"]},
        "after": {"step": after["step"], "grid": after["grid"]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init-from", type=Path, required=True, help="a finished demo run dir")
    parser.add_argument("--online-steps", type=int, default=0, help="fine-tune this many steps")
    parser.add_argument("--resume-check", type=int, default=0, help="steps of the resume check")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "online_finetune")
    parser.add_argument("overrides", nargs="*", help="more sorl-train overrides")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    rows = []
    if args.online_steps:
        run_dir = args.out / f"finetune_{args.online_steps}"
        command = train_command(args.init_from, run_dir, args.online_steps, args.overrides)
        wall = run_to_end(command, args.out / f"finetune_{args.online_steps}.log")
        report["finetune"] = summary = summarize(run_dir, wall)
        for when in ("before", "after"):
            for cell in summary[when]["grid"]:
                rows.append(
                    [
                        when,
                        str(summary[when]["step"]),
                        f"k={cell['inference_steps']} N={cell['num_candidates']}",
                        f"{100 * cell['success_rate']:.0f} %",
                    ]
                )
    if args.resume_check:
        checkpoint_every = ["checkpoint_interval=" + str(max(1, args.resume_check // 3))]
        straight, killed = args.out / "straight", args.out / "killed"
        command = train_command(
            args.init_from, straight, args.resume_check, checkpoint_every + args.overrides
        )
        run_to_end(command, args.out / "straight.log")
        command = train_command(
            args.init_from, killed, args.resume_check, checkpoint_every + args.overrides
        )
        killed_after = run_and_kill(command, killed, args.out / "killed.log")
        run_to_end(command, args.out / "killed_resumed.log")
        report["resume_check"] = {"killed_after_checkpoint_at": killed_after}
        report["resume_check"].update(compare(straight, killed))
    info = machine_info("cpu")
    table = print_table(["when", "update", "cell", "success"], rows) if rows else ""
    print(json.dumps({k: v for k, v in report.items() if k != "finetune"}, indent=2))
    if "finetune" in report:
        print(json.dumps(report["finetune"]["online"], indent=2))
    write_report(result_path("online_finetune", "cpu"), info, [report], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
