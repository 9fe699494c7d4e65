"""Tiny datasets, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from sorl_torchrl.data import generate_dataset

# Small but with full structure: several train episodes, one val episode.
TINY = {
    "cube-single-play-v0": dict(num_episodes=3, num_val_episodes=1, episode_length=120),
    "scene-play-v0": dict(num_episodes=2, num_val_episodes=1, episode_length=150),
    "puzzle-3x3-play-v0": dict(num_episodes=2, num_val_episodes=1, episode_length=150),
    "pointmaze-medium-navigate-v0": dict(num_episodes=4, num_val_episodes=1, episode_length=1001),
}


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir with a tiny version of every dataset in ``TINY`` (seed 0)."""
    root = tmp_path_factory.mktemp("ogbench-data")
    for name, sizes in TINY.items():
        generate_dataset(name, out_dir=root, seed=0, progress=False, **sizes)
    return root
