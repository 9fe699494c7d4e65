"""Shared helpers of the benchmarks: machine description, sizes, timing, tables, result paths.

torch is imported only by the helpers that need it, so ``alternate.py`` runs without it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Network sizes: the paper's 4 x 512 and the 2 x 256 demo size; cube-single shapes.
SIZES: dict[str, tuple[int, ...]] = {"paper": (512, 512, 512, 512), "demo": (256, 256)}
OBSERVATION_DIM, ACTION_DIM, BATCH_SIZE = 28, 5, 256


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_path(benchmark: str, device: str) -> Path:
    """The one current result file of ``benchmark`` on this kind of device (``cpu`` or ``gpu``)."""
    kind = "gpu" if device.startswith("cuda") else "cpu"
    return RESULTS_DIR / f"{benchmark}_{kind}.json"


def machine_info(device: str) -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_start": os.getloadavg(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def max_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_calls(
    fn: Callable[[int], None], device: str, repeats: int, calls: int
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU milliseconds per call, one figure per repeat.

    ``fn(repeat)`` runs one call; each repeat runs ``calls`` of them back to back.
    """
    wall, cpu = [], []
    for rep in range(repeats):
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(calls):
            fn(rep * calls + i)
        sync(device)
        wall.append(1e3 * (time.perf_counter() - w0) / calls)
        cpu.append(1e3 * (time.process_time() - c0) / calls)
    return wall, cpu


def summary(wall: list[float], cpu: list[float]) -> dict:
    return {
        "ms_median": statistics.median(wall),
        "ms_min": min(wall),
        "ms_max": max(wall),
        "cpu_ms_median": statistics.median(cpu),
        "repeats_ms": wall,
    }


def run_workers(script: str, configs: list[dict], timeout: float) -> list[dict]:
    """Run each config in a fresh interpreter (own threads, compile caches, peak memory)."""
    results = []
    for config in configs:
        label = " ".join(f"{k}={v}" for k, v in config.items())
        print(f"[bench] {label}", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(
                [sys.executable, script, "--worker", json.dumps(config)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            results.append({**config, "error": f"timeout after {timeout:.0f} s"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            results.append({**config, "error": " | ".join(tail)})
            continue
        results.append({**config, **json.loads(lines[-1])})
    return results


def print_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def write_report(path: str | Path, info: dict, results: list[dict], table: str) -> None:
    """Write the machine info, raw results and printed table as JSON; say where."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"machine": info, "results": results, "table": table}, indent=2))
    print(f"wrote {target}")
