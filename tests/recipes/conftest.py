from __future__ import annotations

from pathlib import Path

import pytest

from sorl_torchrl.data import generate_dataset


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
