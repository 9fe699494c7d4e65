"""torch.profiler table of the SORL update step (CPU by default), top entries by self time.

The update step is built as in ``train_throughput.py`` (same sizes, modes and batch).
``--out`` also writes the printed table to a file, by default none; the current one is
``benchmarks/results/profile_update_cpu.txt``.

Usage::

    python benchmarks/profile_update.py --mode eager
    python benchmarks/profile_update.py --mode compile --kernel-names  # inductor kernels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import SIZES, max_rss_mb  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from train_throughput import MODES, build, make_batch  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="eager", choices=MODES)
    parser.add_argument("--size", default="paper", choices=list(SIZES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--kernel-names",
        action="store_true",
        help="list inductor's generated CPU kernels by name (compiled modes)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.kernel_names:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    update = build(args.size, args.mode, args.device)
    batch = make_batch(args.device)
    # Warm-up (and compilation, for the compiled modes): until both losses have run every
    # step count k, so that no compilation falls inside the profile.
    choices, seen = set(update.loss.bptt_step_choices), set()
    for i in range(200):
        info = update(batch)
        seen.add(("critic", int(info["critic_bptt_steps"])))
        seen.add(("actor", int(info["actor_bptt_steps"])))
        if i >= 11 and len(seen) == 2 * len(choices):
            break
    activities = [ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    torch.manual_seed(1000)
    with profile(activities=activities, profile_memory=True) as prof:
        for _ in range(args.updates):
            update(batch)
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    text = (
        f"# {args.size} {SIZES[args.size]}, mode {args.mode}, {args.updates} updates, "
        f"threads {args.threads}; peak RSS {max_rss_mb():.0f} MiB\n"
        + prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=36)
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
