"""Composing the recipe configs in tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONF_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "conf")


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=False)


def tiny_overrides(root: Path, run_dir: Path, updates: int) -> list[str]:
    return [
        "network=tiny",
        f"data.root={root}",
        f"run_dir={run_dir}",
        f"num_updates={updates}",
        "batch_size=32",
        "log_interval=10",
        "val_interval=20",
        "val_batches=1",
        "checkpoint_interval=0",
        "eval.interval=0",
        "eval.inference_steps=[1,2]",
        "eval.num_candidates=[1,2]",
        "eval.num_episodes=1",
        "eval.max_episode_steps=10",
        "progress=false",
        "threads=1",
    ]
