"""Latency of the verifier (best-of-N with the Q ensemble) per batched environment step.

For every number of candidates ``N`` in {1, 4, 16, 64} and Euler steps ``k`` in
{1, 2, 4, 8}, times one ``VerifierSampler.select`` call (sample ``N`` candidates per
observation with ``k`` steps, score them with the critic, keep the best) for 1 and for 64
parallel observations. ``N = 1`` skips the critic. Networks: the paper's 4 x 512 by
default (``--size demo`` for 2 x 256); observation 28, action 5.

Usage::

    python benchmarks/inference_latency.py                  # CPU, 1 thread
    python benchmarks/inference_latency.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
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
    summary,
    time_calls,
    write_report,
)

from sorl_torchrl import QEnsemble, ShortcutActor, VerifierSampler  # noqa: E402

CANDIDATES = (1, 4, 16, 64)
STEPS = (1, 2, 4, 8)
BATCHES = (1, 64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="paper", choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="calls per repeat")
    parser.add_argument("--json", default="benchmarks/inference_latency.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    info = machine_info(device)
    info["threads"] = args.threads
    torch.manual_seed(0)
    cells = SIZES[args.size]
    actor = ShortcutActor(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    critic = QEnsemble(OBSERVATION_DIM, ACTION_DIM, num_cells=cells).to(device)
    policy = VerifierSampler(actor, critic).eval()
    results, rows = [], []
    for batch in BATCHES:
        observation = torch.randn(batch, OBSERVATION_DIM, device=device)
        for n in CANDIDATES:
            for k in STEPS:

                def call(_: int, obs=observation, n: int = n, k: int = k) -> None:
                    policy.select(obs, num_candidates=n, inference_steps=k)

                for i in range(3):  # warm-up
                    call(i)
                wall, cpu = time_calls(call, device, args.repeats, args.calls)
                res = {"batch": batch, "num_candidates": n, "inference_steps": k}
                res.update(summary(wall, cpu))
                results.append(res)
                rows.append(
                    [
                        str(batch),
                        str(n),
                        str(k),
                        f"{res['ms_median']:.3f}",
                        f"{res['ms_min']:.3f}",
                        f"{res['cpu_ms_median']:.3f}",
                        f"{res['ms_median'] / batch:.3f}",
                    ]
                )
    info["load_average_end"] = os.getloadavg()
    info["peak_rss_mb"] = max_rss_mb()
    print(
        f"# {info.get('gpu', info['cpu'])}, torch {info['torch']}, device {device}, "
        f"threads {args.threads}, networks {args.size} {cells}"
    )
    print(f"# load average start {info['load_average_start']}, end {info['load_average_end']}")
    headers = ["observations", "N", "k", "ms/step (median)", "min", "CPU ms", "ms/observation"]
    table = print_table(headers, rows)
    write_report(args.json, info, results, table)


if __name__ == "__main__":
    main()
