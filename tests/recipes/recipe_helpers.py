"""Composing the recipe configs in tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = str(REPO / "sorl_torchrl" / "recipes" / "conf")


def run_train_command(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``python -m sorl_torchrl.recipes.train ARGS`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sorl_torchrl.recipes.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def compose_train(overrides: list[str], *, hydra: bool = False):
    """The composed ``train`` config; ``hydra=True`` keeps the ``hydra`` node (dir names)."""
    import sorl_torchrl.recipes.train  # noqa: F401  (registers the config's resolvers)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def sha256_token(root: Path, dataset: str = "cube-single-play-v0") -> str:
    """``sha256:<hex>`` of a dataset's training file, hashed here with hashlib."""
    return "sha256:" + hashlib.sha256((root / f"{dataset}.npz").read_bytes()).hexdigest()


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
        "compile=false",
    ]
