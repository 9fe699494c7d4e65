"""Latency of the verifier (best-of-N with the Q ensemble) per batched environment step.

For every number of candidates ``N`` in {1, 4, 16, 64} and Euler steps ``k`` in
{1, 2, 4, 8}, times one ``VerifierSampler.select`` call (sample ``N`` candidates per
observation with ``k`` steps, score them with the critic, keep the best) for 1 and for 64
parallel observations. ``N = 1`` skips the critic. Networks: the paper's 4 x 512 by
default (``--size demo`` for 2 x 256); observation 28, action 5.

Modes: ``eager``; ``compile`` (``VerifierSampler(compile=True)``: one graph per
observation count, ``N`` and ``k``); ``cudagraphs`` (GPU only, ``compile="reduce-overhead"``).
The first call of each cell (compilation included) is reported as warm-up and excluded,
with two more warm-up calls; the table gives the median (and minimum) over ``--repeats``
repeats of ``--calls`` calls.

Usage::

    python benchmarks/inference_latency.py                  # CPU, 1 thread, eager and compile
    python benchmarks/inference_latency.py --threads 2 --modes eager
    python benchmarks/inference_latency.py --device cuda    # adds the cudagraphs mode
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    ACTION_DIM,
    OBSERVATION_DIM,
    SIZES,
    machine_info,
    max_rss_mb,
    print_table,
    result_path,
    summary,
    time_calls,
    write_report,
)

from sorl_torchrl import QEnsemble, ShortcutActor, VerifierSampler  # noqa: E402

CANDIDATES = (1, 4, 16, 64)
STEPS = (1, 2, 4, 8)
BATCHES = (1, 64)
MODES = {"eager": False, "compile": "default", "cudagraphs": "reduce-overhead"}


def _cell(result: dict) -> tuple[int, int, int]:
    return result["batch"], result["num_candidates"], result["inference_steps"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="paper", choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="calls per repeat")
    parser.add_argument("--modes", nargs="+", default=None, choices=list(MODES))
    parser.add_argument(
        "--json", help="default: benchmarks/results/inference_latency_{cpu,gpu}.json"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    info = machine_info(device)
    info["threads"] = args.threads
    torch.manual_seed(0)
    cells = SIZES[args.size]
    actor = ShortcutActor(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    critic = QEnsemble(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    modes = args.modes or [m for m in MODES if m != "cudagraphs" or device.startswith("cuda")]
    results, rows = [], []
    for mode in modes:
        policy = VerifierSampler(actor, critic, compile=MODES[mode]).eval()
        for batch in BATCHES:
            observation = torch.randn(batch, OBSERVATION_DIM, device=device)
            for n in CANDIDATES:
                for k in STEPS:

                    def call(_: int, p=policy, obs=observation, n: int = n, k: int = k) -> None:
                        p.select(obs, num_candidates=n, inference_steps=k)

                    start = time.perf_counter()
                    time_calls(call, device, 1, 1)  # the first call (compilation), synced
                    warmup_s = time.perf_counter() - start
                    for i in range(2):
                        call(i)
                    wall, cpu = time_calls(call, device, args.repeats, args.calls)
                    res = {"mode": mode, "batch": batch, "num_candidates": n, "inference_steps": k}
                    res.update(summary(wall, cpu), warmup_s=warmup_s, compiled=policy.is_compiled)
                    results.append(res)
                    cell = (batch, n, k)
                    eager = next(
                        (r for r in results if r["mode"] == "eager" and _cell(r) == cell), None
                    )
                    speedup = f"{eager['ms_median'] / res['ms_median']:.2f}x" if eager else ""
                    fell_back = MODES[mode] and not policy.is_compiled
                    label = mode + (" (fell back)" if fell_back else "")
                    rows.append(
                        [
                            label,
                            str(batch),
                            str(n),
                            str(k),
                            f"{res['ms_median']:.3f}",
                            f"{res['ms_min']:.3f}",
                            f"{res['cpu_ms_median']:.3f}",
                            f"{res['ms_median'] / batch:.3f}",
                            speedup,
                            f"{warmup_s:.2f}",
                        ]
                    )
    info["load_average_end"] = os.getloadavg()
    info["peak_rss_mb"] = max_rss_mb()
    print(
        f"# {info.get('gpu', info['cpu'])}, torch {info['torch']}, device {device}, "
        f"threads {args.threads}, networks {args.size} {cells}"
    )
    print(f"# load average start {info['load_average_start']}, end {info['load_average_end']}")
    headers = [
        "mode",
        "observations",
        "N",
        "k",
        "ms/step (median)",
        "min",
        "CPU ms",
        "ms/observation",
        "vs eager",
        "warm-up s",
    ]
    table = print_table(headers, rows)
    write_report(args.json or result_path("inference_latency", device), info, results, table)


if __name__ == "__main__":
    main()
