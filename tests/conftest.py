from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

# One intra-op thread per test process: pytest-xdist runs one process per core, and
# oversubscribed OpenMP threads make small-network training many times slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
