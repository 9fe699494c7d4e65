"""Evaluate a checkpoint over the (k, N) test-time-compute grid.

    python -m sorl_torchrl.recipes.evaluate runs/cube-single-play-task2/seed0/checkpoint.pt \
        --inference-steps 1 2 4 8 --num-candidates 1 4 16 64 --episodes 50

Writes ``<out>/scaling.json``, ``.csv`` and ``.png`` (default ``<checkpoint dir>/evaluate``) and
prints the success table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sorl_torchrl.recipes.common import build_modules, check_compatible, dataset_id, load_weights
from sorl_torchrl.checkpoint import load_checkpoint
from sorl_torchrl.envs import make_ogbench_env
from sorl_torchrl.scaling import (
    evaluate_scaling_grid,
    format_scaling_table,
    plot_scaling,
    write_scaling_results,
)


def main(argv: list[str] | None = None) -> list[dict]:
    """Command-line entry point (``sorl-evaluate``); returns the grid rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--inference-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--num-candidates", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--max-episode-steps", type=int, default=None)
    parser.add_argument("--success-timing", choices=["pre", "post"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the verifier (one graph per k and N; pays off for many episodes)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    state = load_checkpoint(args.checkpoint, map_location=args.device)
    cfg = OmegaConf.create(state["config"])
    cfg.device = args.device
    check_compatible(state["model_config"], cfg, args.checkpoint)
    actor, critic, loss, _ = build_modules(cfg)
    load_weights(loss, state)
    timing = args.success_timing or cfg.env.success_timing
    env = make_ogbench_env(dataset_id(cfg), success_timing=timing, device=torch.device(args.device))
    rows = evaluate_scaling_grid(
        actor,
        critic,
        env,
        inference_steps=args.inference_steps,
        num_candidates=args.num_candidates,
        num_episodes=args.episodes,
        seed=args.seed,
        q_agg=cfg.loss.q_agg,
        max_episode_steps=args.max_episode_steps,
        compile=args.compile,
    )
    env.close()
    out = args.out or args.checkpoint.parent / "evaluate"
    write_scaling_results(rows, out)
    plot_scaling(rows, out / "scaling.png", title=f"{dataset_id(cfg)}, step {state['step']}")
    print(f"Success (%) of {args.checkpoint} (step {state['step']}):")
    print(format_scaling_table(rows))
    print(f"Results in {out}")
    return rows


if __name__ == "__main__":
    main()
