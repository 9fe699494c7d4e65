"""Divergence: a NaN mid-run or huge observations end the run as diverged, never finished."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fault_helpers import NaNAt, compose_train, run_train_command, tiny_cube, tiny_overrides
from tensordict import TensorDict

from sorl_torchrl.checkpoint import load_checkpoint
from sorl_torchrl.data import verify_dataset_file
from sorl_torchrl.recipes import train as train_module
from sorl_torchrl.recipes.divergence import Divergence, DivergenceError, DivergenceMonitor
from sorl_torchrl.recipes.train import run

NAME = "cube-single-play-v0"
GOOD = dict(loss_qvalue=1.0, loss_actor=2.0, fm_loss=0.5, grad_norm_critic=3.0, q_mean=4.0)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    return tiny_cube(tmp_path_factory)


def _info(device: str = "cpu", **values: float) -> TensorDict:
    return TensorDict({k: torch.tensor(v, device=device) for k, v in {**GOOD, **values}.items()})


def _overrides(root, run_dir, *extra: str) -> list[str]:
    """40 updates, logged and checkpointed every 10."""
    return tiny_overrides(root, run_dir, 40) + ["checkpoint_interval=10", *extra]


# --------------------------------------------------------------------------- the monitor


def test_the_monitor_finds_the_first_non_finite_update_and_its_terms():
    monitor = DivergenceMonitor(window=10)
    for update in range(1, 6):
        monitor.record(update, _info())
    assert monitor.check() is None
    monitor.record(6, _info(q_mean=math.nan))  # a diagnostic, not a watched term
    monitor.record(7, _info(grad_norm_critic=math.inf, loss_qvalue=math.nan))
    monitor.record(8, _info(loss_actor=math.nan))
    found = Divergence(update=7, terms=("loss_qvalue", "grad_norm_critic"), detected_at=8)
    assert monitor.check() == found
    monitor.record(9, _info(fm_loss=-math.inf))
    assert monitor.check() == found  # the first divergence stays the one reported


def test_the_monitor_covers_updates_past_its_window_with_one_read_per_window():
    monitor = DivergenceMonitor(window=2)
    for update in range(1, 6):
        monitor.record(update, _info(loss_actor=math.nan if update == 4 else 1.0))
    assert monitor.check() == Divergence(update=4, terms=("loss_actor",), detected_at=4)


def test_recording_never_reads_a_value_on_the_host():
    # meta tensors hold no values: any host read (.item(), .cpu(), bool()) would raise
    monitor = DivergenceMonitor(window=8)
    for update in range(1, 8):
        monitor.record(update, _info(device="meta"))
    with pytest.raises(NotImplementedError):
        monitor.check()  # the check is the one read


def test_an_update_step_without_the_watched_terms_is_named():
    with pytest.raises(KeyError, match=r"terms .*'loss_qvalue'.*\(it reports \['q'\]\)"):
        DivergenceMonitor(window=4).record(1, TensorDict(q=torch.tensor(1.0)))


# --------------------------------------------------------------------------- the recipe


def test_a_nan_mid_run_stops_it_as_diverged_and_keeps_the_last_good_checkpoint(
    cube, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(train_module, "build_algorithm", NaNAt(train_module.build_algorithm, 13))
    with pytest.raises(DivergenceError) as error:
        run(compose_train(_overrides(cube, run_dir)))
    message = str(error.value)
    assert "at update 13 (found by the check at update 20)" in message
    assert f"The last good checkpoint is {run_dir / 'checkpoint.pt'} (update 10)" in message
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "diverged"
    assert record["error"] == f"DivergenceError: {message}"
    divergence = record["divergence"]
    assert (divergence["update"], divergence["detected_at_update"]) == (13, 20)
    assert divergence["last_good_update"] == record["last_checkpoint_update"] == 10
    assert {"fm_loss", "loss_actor", "grad_norm_actor"} <= set(divergence["terms"])
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == 10
    assert all(torch.isfinite(weight).all() for weight in state["loss"].values())

    # rerunning the same command would diverge again: refused, the record kept
    monkeypatch.undo()
    stored = (run_dir / "results.json").read_bytes()
    with pytest.raises(FileExistsError, match=r"diverged: .* at update 13 .* resume=true"):
        run(compose_train(_overrides(cube, run_dir)))
    assert (run_dir / "results.json").read_bytes() == stored
    # asked for, the run continues from its last good checkpoint (here without the NaN)
    resumed = run(compose_train(_overrides(cube, run_dir, "resume=true")))
    assert resumed["status"] == "finished" and resumed["resumed_from_update"] == 10
    assert "divergence" not in resumed


def test_on_divergence_continue_trains_on_and_still_records_diverged(cube, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(train_module, "build_algorithm", NaNAt(train_module.build_algorithm, 13))
    result = run(compose_train(_overrides(cube, run_dir, "on_divergence=continue")))
    assert result["status"] == "diverged" and result["divergence"]["update"] == 13
    assert len(result["grid"]) == 4 and result["segments"][-1]["to_update"] == 40
    stored = json.loads((run_dir / "results.json").read_text())
    assert (stored["status"], stored["divergence"]) == ("diverged", result["divergence"])
    assert math.isnan(stored["final_metrics"]["train"]["loss_actor"])  # what it trained to
    assert stored["error"].startswith("Training diverged:") and "continue" in stored["error"]
    # no checkpoint after the divergence: the one on disk is the last good one
    assert result["last_checkpoint_update"] == 10
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 10


def test_huge_observations_that_verify_passes_end_as_diverged_with_a_failing_exit(cube, tmp_path):
    root = tmp_path / "huge"
    root.mkdir()
    for name in (NAME, f"{NAME}-val"):
        with np.load(cube / f"{name}.npz") as file:
            arrays = {key: file[key] for key in file.files}
        arrays["observations"][:, 0] = 1e30  # finite, and far beyond float32 arithmetic
        np.savez(root / f"{name}.npz", **arrays)
    report = verify_dataset_file(root / f"{NAME}.npz")
    assert report.ok and any("reaches 1e+30" in w for w in report.warnings)

    run_dir = tmp_path / "run"
    # a hand-edited file has no provenance record: accepted only as official data
    overrides = (*_overrides(root, run_dir), "data.source=official")
    done = run_train_command(*overrides, f"hydra.run.dir={run_dir}")
    assert done.returncode != 0
    assert "Training diverged" in done.stderr and "No checkpoint was written" in done.stderr
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "diverged" and "grid" not in record
    assert record["divergence"]["update"] == 1 and record["divergence"]["last_good_update"] is None
    assert not (run_dir / "checkpoint.pt").exists()
