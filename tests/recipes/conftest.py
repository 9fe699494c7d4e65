from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sorl_torchrl.data import generate_dataset

CONF_DIR = str(Path(__file__).resolve().parents[2] / "recipes" / "conf")


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=False)


@pytest.fixture(scope="session")
def tiny_cube_root(tmp_path_factory) -> Path:
    """A 3-episode cube-single-play dataset (120 rows per episode)."""
    root = tmp_path_factory.mktemp("ogbench")
    generate_dataset(
        "cube-single-play-v0",
        out_dir=root,
        num_episodes=3,
        num_val_episodes=1,
        episode_length=120,
        seed=0,
        progress=False,
    )
    return root


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
