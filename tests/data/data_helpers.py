"""Checks shared by the data tests (imported as ``data_helpers``, never from a conftest)."""

from __future__ import annotations

import numpy as np

#: The replay buffer clips dataset actions to this bound, as OGBench's agents do.
CLIP = 1.0 - 1e-5


def assert_ted_matches_ogbench(td, ref: dict) -> None:
    """A TED batch of a whole split equals OGBench's own loader output ``ref`` field by field."""
    np.testing.assert_array_equal(td["observation"].numpy(), ref["observations"])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), ref["next_observations"])
    np.testing.assert_array_equal(td["action"].numpy(), np.clip(ref["actions"], -CLIP, CLIP))
    np.testing.assert_array_equal(td["next", "reward"].squeeze(-1).numpy(), ref["rewards"])
    np.testing.assert_array_equal(td["next", "terminated"].squeeze(-1).numpy(), 1.0 - ref["masks"])
    np.testing.assert_array_equal(td["next", "done"].squeeze(-1).numpy(), ref["terminals"])
