from __future__ import annotations

from pathlib import Path

import pytest

from sorl_torchrl.data import generate_dataset


def _tiny_cube(root: Path, seed: int) -> Path:
    generate_dataset(
        "cube-single-play-v0",
        out_dir=root,
        num_episodes=3,
        num_val_episodes=1,
        episode_length=120,
        seed=seed,
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_cube_root(tmp_path_factory) -> Path:
    """A 3-episode cube-single-play dataset (120 rows per episode)."""
    return _tiny_cube(tmp_path_factory.mktemp("ogbench"), seed=0)


@pytest.fixture(scope="session")
def other_cube_root(tmp_path_factory) -> Path:
    """The same kind of dataset as ``tiny_cube_root``, generated with another seed."""
    return _tiny_cube(tmp_path_factory.mktemp("ogbench-other"), seed=1)
