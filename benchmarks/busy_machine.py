"""Training and evaluation speed on a busy CPU: torch thread counts and the OpenMP wait policy.

Each setting (``--settings``: a torch thread count and an OpenMP wait policy) gets a fresh
worker process per round (the OpenMP runtime reads its wait policy when torch is imported).
The worker builds the demo's networks once, then measures under each load in turn:
``quiet`` (nothing added) and ``hog`` (``--hogs`` busy pure-Python processes, started just
before and killed just after the measurement by this script):

- the demo update: ``SORLUpdateStep`` on the demo's networks (actor and critic 2 x 256,
  2 critics with layer norm, ``q_loss_coef=30``, lr 5e-4; eager), a fixed batch of 256
  random cube-single transitions (observation 28, action 5): updates per second over
  ``--updates`` updates after ``--warmup`` untimed ones;
- evaluation stepping: a ``cube-single-play-singletask-task2-v0`` env stepped by a
  ``VerifierSampler`` (``k = 4`` Euler steps, ``N = 4`` candidates) on the same networks:
  env steps per second over ``--env-steps`` steps after 10 untimed ones.

A timed loop also stops after ``--max-seconds`` (a collapsed setting can run at one update
per second), and its rate is taken over what it completed. The order of the settings and
of the two loads rotates from round to round, so slow drifts of the machine hit every cell
alike. The table gives each rate's median over the rounds, and two ratios taken within each
round (median, and range over the rounds): "busy time / quiet", how many times longer the
same work takes next to the hogs, and "quiet vs default", the quiet speed over that of
torch's default on 2 CPUs (2 threads, no policy set). Measure on a machine with nothing else
running: the ``quiet`` column is quiet only then.

Settings are ``THREADS/POLICY``: ``THREADS`` a count, or ``auto`` for the package's default
(``sorl_torchrl._threads.default_threads``, read in the worker under each load); ``POLICY``
an ``OMP_WAIT_POLICY`` value, ``unset`` (no such variable in the worker's environment), or
``spin=N`` (``GOMP_SPINCOUNT=N``: spin that many times, then sleep).

The JSON (``--json``, default ``benchmarks/results/busy_machine_cpu.json``) holds the machine,
every measurement (with load averages) and the Markdown table, which is printed ready to
paste into ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/busy_machine.py              # about 7 minutes on 2 CPUs
    python benchmarks/busy_machine.py --rounds 1 --updates 20 --env-steps 20   # a dry run
    python benchmarks/busy_machine.py --settings 2/PASSIVE 2/spin=10000 auto/PASSIVE
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import cpu_model, result_path  # noqa: E402

LOADS = ("quiet", "hog")
# Variables that change how the OpenMP runtime waits or how many threads it starts; the
# workers get none of them from this process, only those their setting names.
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEMO_NETWORK = {
    "actor_cells": [256, 256],
    "critic_cells": [256, 256],
    "num_critics": 2,
    "critic_layer_norm": True,
    "condition_on_steps": True,
    "step_feature": "steps",
}
ENV_ID = "cube-single-play-singletask-task2-v0"
REFERENCE = ("2", "unset")  # torch's default on 2 CPUs: 2 threads, no policy set
# The thread counts and wait policies side by side; auto is the package's default.
DEFAULT_SETTINGS = ("1/unset", "1/PASSIVE", "2/unset", "2/PASSIVE", "auto/unset")


# ---------------------------------------------------------------------------- the worker
def build(seed: int = 0):
    """The demo's actor, critic and update step (eager)."""
    import torch

    from sorl_torchrl import SORLUpdateStep
    from sorl_torchrl.deploy.build import build_sorl_modules

    torch.manual_seed(seed)
    config = {
        "sizes": {"observation_dim": 28, "action_dim": 5},
        "network": DEMO_NETWORK,
        "loss": {"q_loss_coef": 30.0},
    }
    actor, critic, loss = build_sorl_modules(config, validate_inputs=False)
    return actor, critic, SORLUpdateStep(loss, lr=5e-4)


def timed_loop(step, count: int, max_seconds: float) -> dict:
    """Run ``step()`` up to ``count`` times or until ``max_seconds`` passed; its rate."""
    done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while done < count and time.perf_counter() - wall0 < max_seconds:
        step()
        done += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"count": done, "wall_s": wall, "cpu_s": cpu, "per_s": done / wall}


def make_batch(size: int = 256, seed: int = 0):
    """A fixed batch of random cube-single transitions (observation 28, action 5)."""
    import torch
    from tensordict import TensorDict

    gen = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(size, 28, generator=gen),
            "action": torch.rand(size, 5, generator=gen) * 2 - 1,
            "next": {
                "observation": torch.randn(size, 28, generator=gen),
                "reward": -torch.rand(size, 1, generator=gen),
                "terminated": torch.rand(size, 1, generator=gen) < 0.1,
            },
        },
        batch_size=[size],
    )


def measure_updates(update, config: dict) -> dict:
    batch = make_batch()
    for _ in range(config["warmup"]):
        update(batch)
    return timed_loop(lambda: update(batch), config["updates"], config["max_seconds"])


def measure_env_steps(actor, critic, config: dict) -> dict:
    import torch
    from torchrl.envs import ExplorationType, set_exploration_type

    from sorl_torchrl import VerifierSampler, make_ogbench_env

    env = make_ogbench_env(ENV_ID)
    env.set_seed(0)
    policy = VerifierSampler(
        actor, critic, num_candidates=config["candidates"], inference_steps=config["steps"]
    ).eval()
    state = {"td": env.reset()}

    def step() -> None:
        _, state["td"] = env.step_and_maybe_reset(policy(state["td"]))

    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(10):
            step()
        result = timed_loop(step, config["env_steps"], config["max_seconds"])
    env.close()
    return result


def worker(config: dict) -> None:
    """Build once, then answer each request (a JSON line naming the load) with a measurement."""
    import torch

    from sorl_torchrl._threads import configure_threads

    if config["threads"] != "auto":
        torch.set_num_threads(int(config["threads"]))
    actor, critic, update = build()
    environment = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    print(json.dumps({"ready": True, "environment": environment}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        if config["threads"] == "auto":  # the package default, read under this load
            configure_threads(None, "cpu")
        out: dict = {"load": request["load"], "torch_threads": torch.get_num_threads()}
        if "update" in config["workloads"]:
            out["update"] = measure_updates(update, config)
        if "eval" in config["workloads"]:
            out["eval"] = measure_env_steps(actor, critic, config)
        print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- the driver
def parse_setting(text: str) -> tuple[str, str]:
    """``"THREADS/POLICY"`` -> ``(threads, policy)``; raises ``ValueError`` when malformed."""
    threads, sep, policy = text.partition("/")
    counts = threads.isdigit() and int(threads) >= 1
    spin = policy.startswith("spin=") and policy[5:].isdigit()
    if not sep or not (counts or threads == "auto") or not (policy.isalpha() or spin):
        raise ValueError(
            f"a setting is THREADS/POLICY, THREADS a count >= 1 or 'auto', POLICY an "
            f"OMP_WAIT_POLICY value, 'unset' or spin=N: got {text!r}"
        )
    return threads, policy


def policy_environment(policy: str) -> dict[str, str]:
    """The variables a wait-policy setting puts in a worker's environment."""
    if policy == "unset":
        return {}
    if policy.startswith("spin="):
        return {"GOMP_SPINCOUNT": policy.split("=", 1)[1]}
    return {"OMP_WAIT_POLICY": policy}


@contextlib.contextmanager
def hogs(count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` processes that each keep a CPU busy (a pure-Python loop), killed on exit."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        if procs:
            time.sleep(0.5)  # let the scheduler spread them
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


class Worker:
    """A worker process of one setting: started, asked for measurements, stopped."""

    def __init__(self, config: dict, log: Path, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        env.update(policy_environment(config["policy"]))
        self.log, self.timeout = log, timeout
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )

    def read(self) -> dict:
        """The worker's next JSON line; raises ``RuntimeError`` on exit or timeout."""
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                tail = self.log.read_text().strip().splitlines()[-3:]
                raise RuntimeError(f"exit {self.proc.returncode}: " + " | ".join(tail))
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"no answer within {self.timeout:.0f} s")

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def measure(args: argparse.Namespace, logs: Path) -> list[dict]:
    """Every round: every setting (one worker each) under both loads; the order rotated."""
    settings = args.settings
    base = {
        "updates": args.updates,
        "env_steps": args.env_steps,
        "warmup": args.warmup,
        "max_seconds": args.max_seconds,
        "steps": 4,
        "candidates": 4,
        "workloads": args.workloads,
    }
    timeout = 3 * args.max_seconds + args.warmup * 5 + 180
    runs = []
    for round_index in range(args.rounds):
        for index, (threads, policy) in enumerate(rotated(settings, round_index)):
            config = {**base, "threads": threads, "policy": policy}
            label = f"round {round_index + 1}: threads={threads} policy={policy}"
            worker_log = logs / f"worker_{round_index}_{threads}_{policy}.log"
            process = Worker(config, worker_log, timeout)
            try:
                process.read()  # built and ready
                for load in rotated(list(LOADS), round_index + index):
                    print(f"[busy_machine] {label} load={load}", file=sys.stderr, flush=True)
                    record = {"round": round_index, **config, "load": load}
                    record["load_average_start"] = os.getloadavg()
                    with hogs(args.hogs if load == "hog" else 0):
                        try:
                            record.update(process.ask({"load": load}))
                        except RuntimeError as err:
                            record["error"] = str(err)
                    record["load_average_end"] = os.getloadavg()
                    runs.append(record)
                    if "error" in record:
                        print(f"[busy_machine]   {record['error']}", file=sys.stderr)
                        break
            except RuntimeError as err:
                runs.append({"round": round_index, **config, "load": None, "error": str(err)})
                print(f"[busy_machine]   {err}", file=sys.stderr)
            finally:
                process.close()
    return runs


# ---------------------------------------------------------------------------- the table
def rate(run: dict, workload: str) -> float | None:
    part = run.get(workload)
    return part["per_s"] if part and part["count"] else None


def ratios(runs: list[dict], workload: str, setting: tuple[str, str]) -> dict:
    """Median rates and within-round ratios of one setting for one workload."""
    out: dict = {}
    mine = [r for r in runs if (r["threads"], r["policy"]) == setting]
    for load in LOADS:
        values = [v for r in mine if r["load"] == load and (v := rate(r, workload))]
        out[load] = statistics.median(values) if values else None
    slowdowns, versus = [], []
    for round_index in sorted({r["round"] for r in mine}):
        cell = {r["load"]: rate(r, workload) for r in mine if r["round"] == round_index}
        if cell.get("quiet") and cell.get("hog"):
            slowdowns.append(cell["quiet"] / cell["hog"])
        reference = [
            rate(r, workload)
            for r in runs
            if (r["threads"], r["policy"]) == REFERENCE
            and r["round"] == round_index
            and r["load"] == "quiet"
        ]
        if cell.get("quiet") and reference and reference[0]:
            versus.append(cell["quiet"] / reference[0])
    out["slowdown"] = slowdowns
    out["quiet_vs_reference"] = versus
    return out


def _median_range(values: list[float], digits: int = 2) -> str:
    if not values:
        return ""
    text = f"{statistics.median(values):.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return text


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def threads_used(runs: list[dict], setting: tuple[str, str]) -> dict[str, list[int]]:
    """The torch thread counts a setting ran with, per load (``auto`` may differ by load)."""
    return {
        load: sorted(
            {
                r["torch_threads"]
                for r in runs
                if (r["threads"], r["policy"]) == setting
                and r["load"] == load
                and "torch_threads" in r
            }
        )
        for load in LOADS
    }


def summarise(runs: list[dict], args: argparse.Namespace) -> tuple[list[dict], str]:
    settings = list(dict.fromkeys((r["threads"], r["policy"]) for r in runs))
    headers = ["threads", "OMP_WAIT_POLICY"]
    for name in args.workloads:
        unit = "updates/s" if name == "update" else "env steps/s"
        headers += [f"{unit} quiet", f"{unit} busy", "busy time / quiet", "quiet vs default"]
    summary, lines = [], []
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|---|---|" + "---:|---:|---|---|" * len(args.workloads))
    for setting in settings:
        threads, policy = setting
        used = threads_used(runs, setting)
        shown = threads
        if threads == "auto":
            counts = {load: "/".join(map(str, used[load])) or "?" for load in LOADS}
            shown = f"auto ({counts['quiet']} quiet, {counts['hog']} busy)"
        entry: dict = {"threads": threads, "policy": policy, "torch_threads": used}
        cells = [shown, policy]
        for name in args.workloads:
            result = ratios(runs, name, setting)
            entry[name] = result
            cells += [
                _rate(result["quiet"]),
                _rate(result["hog"]),
                _median_range(result["slowdown"]),
                _median_range(result["quiet_vs_reference"]),
            ]
        summary.append(entry)
        lines.append("| " + " | ".join(cells) + " |")
    return summary, "\n".join(lines)


def command_line(args: argparse.Namespace) -> str:
    parts = ["python benchmarks/busy_machine.py", f"--rounds {args.rounds}"]
    parts += [f"--updates {args.updates}", f"--env-steps {args.env_steps}"]
    parts += [f"--max-seconds {args.max_seconds:g}", f"--hogs {args.hogs}"]
    parts += ["--settings " + " ".join(f"{t}/{p}" for t, p in args.settings)]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=250, help="timed updates per cell")
    parser.add_argument("--env-steps", type=int, default=800, help="timed env steps per cell")
    parser.add_argument("--warmup", type=int, default=5, help="untimed updates first")
    parser.add_argument(
        "--max-seconds", type=float, default=5.0, help="cap of each timed loop (seconds)"
    )
    parser.add_argument("--hogs", type=int, default=2, help="busy processes under load 'hog'")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(DEFAULT_SETTINGS),
        metavar="THREADS/POLICY",
        help="torch threads (a count or 'auto') / wait policy (an OMP_WAIT_POLICY value, "
        "'unset', or spin=N for GOMP_SPINCOUNT=N); default: " + " ".join(DEFAULT_SETTINGS),
    )
    parser.add_argument(
        "--workloads", nargs="+", default=["update", "eval"], choices=["update", "eval"]
    )
    parser.add_argument("--json", help="default: benchmarks/results/busy_machine_cpu.json")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    try:
        args.settings = [parse_setting(text) for text in args.settings]
    except ValueError as err:
        parser.error(str(err))
    # A SIGTERM ends the run through the hogs' clean-up, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": version("torch"),
        "python": sys.version.split()[0],
        "load_average_start": os.getloadavg(),
        "command": command_line(args),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="busy_machine_") as logs:
        runs = measure(args, Path(logs))
    info["load_average_end"] = os.getloadavg()
    info["wall_s"] = time.perf_counter() - start
    summary, table = summarise(runs, args)
    print(f"\n{info['cpu']}, {info['logical_cpus']} logical CPUs, torch {info['torch']}")
    print(f"{info['command']}  ({info['wall_s'] / 60:.1f} min)")
    print(f"load average at start {info['load_average_start']}, end {info['load_average_end']}")
    print(
        f"busy: {args.hogs} busy processes beside the run; rates: median of {args.rounds} "
        f"rounds; ratios: median (range) of the rounds' own; 'quiet vs default': quiet speed "
        f"over that of {REFERENCE[0]} threads, policy {REFERENCE[1]}\n"
    )
    print(table)
    target = Path(args.json or result_path("busy_machine", "cpu"))
    target.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "results": runs, "summary": summary, "table": table}
    target.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
