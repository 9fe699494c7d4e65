"""Throughput of the data and env side: generation, replay-buffer sampling, evaluation.

Usage:
    python benchmarks/data_throughput.py [--episodes 4] [--workers 1] [--root DIR]
        [--json benchmarks/results/data_throughput_cpu.json]

Generation: env steps/s of `generate_dataset` for a few families (official episode length).
Sampling: batches/s at batch 256 from the cube-single-play replay buffer (the dataset in
--root if present there, else a small generated one).
Evaluation: env steps/s of `evaluate_policy` (random policy; 1 env and a SerialEnv of 4) and
the success rate of the scripted cube oracle vs random actions on cube-single.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import cpu_model, result_path  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torchrl.envs.utils import RandomPolicy  # noqa: E402

from sorl_torchrl.data import OGBenchExperienceReplay, generate_dataset  # noqa: E402
from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env  # noqa: E402

GENERATION = [
    "cube-single-play-v0",
    "scene-play-v0",
    "puzzle-3x3-play-v0",
    "pointmaze-medium-navigate-v0",
]
SINGLETASK = "cube-single-play-singletask-v0"


def bench_generation(episodes: int, workers: int, tmp: Path) -> list[dict]:
    rows = []
    for name in GENERATION:
        result = generate_dataset(
            name,
            out_dir=tmp / "gen",
            num_episodes=episodes,
            num_val_episodes=1,
            workers=workers,
            seed=0,
            progress=False,
            overwrite=True,
        )
        rows.append(
            {
                "dataset": name,
                "episodes": episodes + 1,
                "workers": workers,
                "env_steps": result.steps_collected,
                "wall_time_s": result.wall_time_s,
                "env_steps_per_s": result.steps_per_second,
            }
        )
    return rows


def bench_sampling(root: Path, seconds: float = 5.0, batch_size: int = 256) -> list[dict]:
    """Batches/s with torch's default thread count and with one thread.

    Gathering 256 random rows is too small a job to gain from intra-op threads; on a busy
    machine the threads' synchronisation can cost more than the gather itself.
    """
    data = OGBenchExperienceReplay(SINGLETASK, batch_size=batch_size, root=root)
    default_threads = torch.get_num_threads()
    rows = []
    for threads in dict.fromkeys([default_threads, 1]):
        torch.set_num_threads(threads)
        data.sample()  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            data.sample()
            count += 1
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "dataset_transitions": len(data),
                "batch_size": batch_size,
                "torch_threads": threads,
                "batches_per_s": count / elapsed,
                "transitions_per_s": count * batch_size / elapsed,
            }
        )
    torch.set_num_threads(default_threads)
    return rows


def bench_evaluation(episodes: int) -> list[dict]:
    rows = []
    for num_envs in (1, 4):
        env = make_ogbench_env(SINGLETASK, num_envs=num_envs)
        result = evaluate_policy(
            RandomPolicy(env.action_spec), env, num_episodes=max(episodes, num_envs), seed=0
        )
        env.close()
        rows.append(
            {
                "policy": "random",
                "num_envs": num_envs,
                "episodes": result.num_episodes,
                "success_rate": result.success_rate,
                "env_steps": result.env_steps,
                "env_steps_per_s": result.env_steps_per_second,
            }
        )
    env = make_ogbench_env(SINGLETASK)
    result = evaluate_policy(CubeOraclePolicy(env), env, num_episodes=max(episodes, 10), seed=0)
    env.close()
    rows.append(
        {
            "policy": "cube oracle",
            "num_envs": 1,
            "episodes": result.num_episodes,
            "success_rate": result.success_rate,
            "env_steps": result.env_steps,
            "env_steps_per_s": result.env_steps_per_second,
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4, help="train episodes per dataset")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=8)
    parser.add_argument("--root", type=Path, default=None, help="dir with cube-single-play-v0")
    parser.add_argument("--json", type=Path, default=result_path("data_throughput", "cpu"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        generation = bench_generation(args.episodes, args.workers, tmp)
        root = args.root
        if root is None or not (root / "cube-single-play-v0.npz").exists():
            root = tmp / "gen"  # the small cube-single dataset made above
        sampling = bench_sampling(root)
        evaluation = bench_evaluation(args.eval_episodes)

    console = Console()
    table = Table(title="Generation (official episode length)")
    for column in ("dataset", "episodes", "workers", "env steps", "wall s", "env steps/s"):
        table.add_column(column)
    for r in generation:
        table.add_row(
            r["dataset"],
            str(r["episodes"]),
            str(r["workers"]),
            str(r["env_steps"]),
            f"{r['wall_time_s']:.1f}",
            f"{r['env_steps_per_s']:.0f}",
        )
    console.print(table)
    for r in sampling:
        console.print(
            f"Replay buffer ({r['dataset_transitions']} transitions, {r['torch_threads']} torch "
            f"threads): {r['batches_per_s']:.0f} batches/s at batch {r['batch_size']}"
        )
    table = Table(title=f"Evaluation on {SINGLETASK}")
    for column in ("policy", "envs", "episodes", "success", "env steps/s"):
        table.add_column(column)
    for r in evaluation:
        table.add_row(
            r["policy"],
            str(r["num_envs"]),
            str(r["episodes"]),
            f"{r['success_rate']:.2f}",
            f"{r['env_steps_per_s']:.0f}",
        )
    console.print(table)

    record = {
        "machine": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "generation": generation,
        "sampling": sampling,
        "evaluation": evaluation,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
