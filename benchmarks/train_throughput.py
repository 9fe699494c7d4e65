"""Milliseconds per update of the SORL update step (``SORLUpdateStep``) in each execution mode.

Sizes: ``paper`` (actor and critic 4 x 512) and ``demo`` (2 x 256); batch 256, observation
28, action 5 (cube-single shapes). Modes:

- ``eager``: ``SORLUpdateStep(loss)``.
- ``compile``: ``SORLUpdateStep(loss, compile=True)`` (``torch.compile`` mode ``default``).
- ``compile-max-autotune``: the same with ``mode="max-autotune-no-cudagraphs"``.
- ``cudagraphs`` (GPU only): ``compile="reduce-overhead"`` (CUDA graphs via inductor).

Each configuration runs in its own interpreter. Compilation (``SORLUpdateStep.precompile``:
every graph of every ``k``; with ``--cold-cache`` into an empty inductor cache, as on a new
machine) and three warm-up updates are excluded and reported separately, with the
break-even: the updates after which compiling has saved more than it cost; each repeat runs
``--updates`` updates from a fixed seed, so every mode does the same work, and the table
gives the median (and minimum) over ``--repeats`` repeats of ms per update. A compiled mode
that fell back to eager is marked ``(fell back)``.

The JSON (``--json``, by default ``benchmarks/results/train_throughput_{cpu,gpu}.json``)
holds the machine, every configuration's raw timings and the printed table;
``benchmarks/alternate.py`` reads it.

Usage::

    python benchmarks/train_throughput.py                      # CPU, 1 thread, every CPU mode
    python benchmarks/train_throughput.py --threads 2 --modes eager compile
    python benchmarks/train_throughput.py --device cuda        # adds the cudagraphs mode
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    ACTION_DIM,
    BATCH_SIZE,
    OBSERVATION_DIM,
    SIZES,
    machine_info,
    max_rss_mb,
    print_table,
    result_path,
    run_workers,
    summary,
    time_calls,
    write_report,
)

if TYPE_CHECKING:
    from tensordict import TensorDict

    from sorl_torchrl import SORLUpdateStep

MODES = ("eager", "compile", "compile-max-autotune", "cudagraphs")
COMPILE_MODES: dict[str, bool | str] = {
    "eager": False,
    "compile": "default",
    "compile-max-autotune": "max-autotune-no-cudagraphs",
    "cudagraphs": "reduce-overhead",
}


def make_batch(device: str, seed: int = 0) -> TensorDict:
    from tensordict import TensorDict

    gen = torch.Generator().manual_seed(seed)
    b, o, a = BATCH_SIZE, OBSERVATION_DIM, ACTION_DIM
    return TensorDict(
        {
            "observation": torch.randn(b, o, generator=gen),
            "action": torch.rand(b, a, generator=gen) * 2 - 1,
            "next": {
                "observation": torch.randn(b, o, generator=gen),
                "reward": -torch.rand(b, 1, generator=gen),
                "terminated": torch.rand(b, 1, generator=gen) < 0.1,
            },
        },
        batch_size=[b],
    ).to(device)


def build(size: str, mode: str, device: str) -> SORLUpdateStep:
    from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep

    torch.manual_seed(0)
    cells = SIZES[size]
    actor = ShortcutActor(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    critic = QEnsemble(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    loss = ShortcutLoss(actor, critic, q_loss_coef=10.0, validate_inputs=False)
    return SORLUpdateStep(loss, compile=COMPILE_MODES[mode])


def fell_back(update: SORLUpdateStep) -> bool:
    """Whether a compiled update step runs eagerly because compilation failed."""
    compiled = getattr(update, "is_compiled", None)
    if compiled is None:  # update steps that compiled the loss bodies instead
        compiled = len(update.loss.compiled_terms) >= 2
    return bool(update.compile_mode) and not compiled


def worker(config: dict) -> dict:
    device = config["device"]
    torch.set_num_threads(config["threads"])
    # "highest": float32 GEMMs; "high": TF32 where supported; "medium": bfloat16 GEMMs
    # (oneDNN on CPUs with AVX-512 BF16 / AMX, tensor cores on GPUs).
    torch.set_float32_matmul_precision(config.get("matmul_precision", "highest"))
    if device == "cpu" and (os.cpu_count() or 1) <= 4:
        # Inductor's pool of compile workers would compete with the timed process for the
        # few cores; compile in-process.
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = 1
    if config.get("cold_cache"):
        # A fresh inductor cache: the compile time of a first run on a new machine.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    rss_start = max_rss_mb()
    update = build(config["size"], config["mode"], device)
    batch = make_batch(device)
    start = time.perf_counter()
    compile_s = update.precompile(batch)  # every graph of every k (0 when eager)
    warmup = 3
    for _ in range(warmup):
        update(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - start

    def one(i: int) -> None:
        if i % config["updates"] == 0:
            torch.manual_seed(1000 + i)  # every mode sees the same k sequence
        update(batch)

    wall, cpu = time_calls(one, device, config["repeats"], config["updates"])
    out = summary(wall, cpu)
    out.update(
        compile_s=compile_s,
        warmup_s=warmup_s,
        warmup_updates=warmup,
        fell_back=fell_back(update),
        peak_rss_mb=max_rss_mb(),
        rss_start_mb=rss_start,
    )
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=None, choices=MODES)
    parser.add_argument("--threads", nargs="+", type=int, default=[1])
    parser.add_argument(
        "--matmul-precision",
        nargs="+",
        default=["highest"],
        choices=["highest", "high", "medium"],
        help="torch.set_float32_matmul_precision; 'vs eager' compares with eager at 'highest'",
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="compile with an empty inductor cache (a first run), not the machine's cache",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--updates", type=int, default=10, help="updates per repeat")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per config")
    parser.add_argument(
        "--json", help="default: benchmarks/results/train_throughput_{cpu,gpu}.json"
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    modes = args.modes or [m for m in MODES if m != "cudagraphs" or args.device.startswith("cuda")]
    configs = [
        dict(
            size=size,
            mode=mode,
            threads=threads,
            device=args.device,
            repeats=args.repeats,
            updates=args.updates,
            matmul_precision=precision,
            cold_cache=args.cold_cache,
        )
        for size in args.sizes
        for threads in args.threads
        for precision in args.matmul_precision
        for mode in modes
    ]
    info = machine_info(args.device)
    results = run_workers(__file__, configs, args.timeout)
    info["load_average_end"] = os.getloadavg()
    rows = []
    for r in results:
        base = next(
            (
                x
                for x in results
                if x["size"] == r["size"]
                and x["threads"] == r["threads"]
                and x["mode"] == "eager"
                and x["matmul_precision"] == "highest"
                and "error" not in x
            ),
            None,
        )
        if "error" in r:
            rows.append([r["size"], r["mode"], str(r["threads"]), "error: " + r["error"][:60]])
            rows[-1] += [""] * 8
            continue
        speedup = f"{base['ms_median'] / r['ms_median']:.2f}x" if base else ""
        saved_ms = base["ms_median"] - r["ms_median"] if base else 0.0
        if r["compile_s"] == 0:
            break_even = ""
        elif saved_ms > 0:  # updates after which compiling has paid for itself
            break_even = f"{1000 * r['compile_s'] / saved_ms:,.0f}"
        else:
            break_even = "never"
        precision = "" if r["matmul_precision"] == "highest" else f" @{r['matmul_precision']}"
        rows.append(
            [
                r["size"],
                r["mode"] + precision + (" (fell back)" if r["fell_back"] else ""),
                str(r["threads"]),
                f"{r['ms_median']:.1f}",
                f"{r['ms_min']:.1f}",
                f"{r['cpu_ms_median']:.1f}",
                f"{1000 / r['ms_median']:.1f}",
                speedup,
                f"{r['compile_s']:.1f}",
                break_even,
                f"{r['warmup_s']:.1f}",
                f"{r.get('peak_gpu_mb', r['peak_rss_mb']):.0f}",
            ]
        )
    headers = [
        "size",
        "mode",
        "threads",
        "ms/update (median)",
        "min",
        "CPU ms",
        "updates/s",
        "vs eager",
        "compile s",
        "break-even updates",
        "warm-up s",
        "peak MiB" + (" (GPU)" if args.device.startswith("cuda") else " (RSS)"),
    ]
    print(f"# {info.get('gpu', info['cpu'])}, torch {info['torch']}, device {args.device}")
    print(f"# load average start {info['load_average_start']}, end {info['load_average_end']}")
    table = print_table(headers, rows)
    write_report(args.json or result_path("train_throughput", args.device), info, results, table)


if __name__ == "__main__":
    main()
