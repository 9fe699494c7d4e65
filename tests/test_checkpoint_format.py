"""Checkpoints of format 2 load with a plain torch.load(weights_only=True); format 1 still loads."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import make_batch
from torchrl.data.replay_buffers import SamplerWithoutReplacement

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def _draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_a_training_state_loads_with_a_plain_weights_only_load(tmp_path):
    # What train.py saves: config, run key, dataset, segments, loss, optimizers, sampler, RNG.
    loss = ShortcutLoss(ShortcutActor(4, 2, num_cells=(8,)), QEnsemble(4, 2, num_cells=(8,)))
    update = SORLUpdateStep(loss, lr=1e-3)
    update(make_batch(12, 4, 2))
    sampler = SamplerWithoutReplacement(drop_last=True)
    state = {
        "step": 1,
        "run_key": {"seed": 0, "network.actor_cells": [8]},
        "config": {"seed": 0, "env": {"name": "cube-single-play"}, "data": {"root": None}},
        "dataset": {"name": "cube-single-play-v0", "provenance": {"episodes": 3}},
        "segments": [{"from_update": 0, "to_update": 1, "started_at": "2026-01-01T00:00:00Z"}],
        "loss": loss.state_dict(),
        "optimizers": update.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": get_rng_state(),
        "wall_time_s": 0.5,
    }
    path = save_checkpoint(tmp_path / "checkpoint.pt", state)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT
    loaded = payload["state"]
    assert loaded["run_key"] == state["run_key"] and loaded["segments"] == state["segments"]
    for key, value in state["loss"].items():
        assert torch.equal(loaded["loss"][key], value), key
    assert loaded["optimizers"].keys() == state["optimizers"].keys()


def test_the_rng_state_survives_a_safe_load(tmp_path):
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": get_rng_state()})
    expected = _draws()
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(torch.load(path, weights_only=True)["state"]["rng"])
    assert _draws() == expected


def test_a_format_1_file_with_numpy_rng_state_still_loads_and_restores(tmp_path):
    path = tmp_path / "old.pt"
    old_rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    old_rng["python"] = random.getstate()
    torch.save({"format": "sorl-torchrl-checkpoint/1", "state": {"step": 7, "rng": old_rng}}, path)
    with pytest.raises(Exception, match="(?i)weights.only"):
        torch.load(path, weights_only=True)  # what the old format does to a safe load
    expected = _draws()
    state = load_checkpoint(path)
    assert state["step"] == 7
    set_rng_state(state["rng"])
    assert _draws() == expected


def test_numpy_arrays_outside_format_1_are_refused(tmp_path):
    path = tmp_path / "arrays.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "state": {"x": np.zeros(3, dtype=np.uint32)}}, path)
    with pytest.raises(CheckpointError, match="not a sorl-torchrl checkpoint of format 1"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": [1, np.float64(2.0)]}, r"state\['a'\]\[1\] is a numpy.float64"),
        ({"p": object()}, r"state\['p'\] is a builtins.object"),
        ({(1, 2): 3}, r"state has the key \(1, 2\)"),
    ],
)
def test_save_refuses_what_a_safe_load_would_and_says_where(tmp_path, value, where):
    with pytest.raises(TypeError, match=where):
        save_checkpoint(tmp_path / "bad.pt", value)
    assert not (tmp_path / "bad.pt").exists()
