"""The one run identity (skip, resume, dir names) and the one run record, without training."""

from __future__ import annotations

import errno
import json

import pytest
from omegaconf import OmegaConf
from recipe_helpers import compose_train

from sorl_torchrl.recipes import run_record
from sorl_torchrl.recipes.divergence import refuse_diverged
from sorl_torchrl.recipes.run_record import (
    FAILED_NAME,
    RESULTS_NAME,
    RunRecord,
    finished_results,
    identity_differences,
    read_record,
    resume_differences,
    run_identity,
)

CONFIG = {
    "seed": 3,
    "batch_size": 256,
    "num_updates": 1000,
    "matmul_precision": "highest",
    "threads": 2,
    "compile": True,
    "device": "cpu",
    "progress": False,
    "resume": "auto",
    "run_dir": "runs/x",
    "log_interval": 10,
    "checkpoint_interval": 100,
    "val_interval": 50,
    "val_batches": 2,
    "logger": {"backend": "csv", "project": "p"},
    "env": {"name": "cube-single-play", "task": 2},
    "optim": {"lr": 1e-4},
    "eval": {"num_episodes": 5},
    "data": {
        "root": "/data",
        "workers": 2,
        "prefetch": None,
        "generate_if_missing": True,
        "source": "regenerated",
        "download_if_missing": False,
        "num_episodes": 200,
        "dataset_name": "cube-single-play-v0",
        "fingerprint": "sha256:aa",
    },
    "hydra": {"job": {"name": "train"}},
}


def test_identity_keeps_settings_seed_and_data_and_drops_bookkeeping():
    assert run_identity(CONFIG) == {
        "batch_size": 256,
        "data.dataset_name": "cube-single-play-v0",
        "data.fingerprint": "sha256:aa",
        "env.name": "cube-single-play",
        "env.task": 2,
        "eval.num_episodes": 5,
        "matmul_precision": "highest",
        "num_updates": 1000,
        "optim.lr": 0.0001,
        "seed": 3,
    }


def test_identity_of_an_old_config_drops_the_retired_sizes_and_needs_no_data():
    old = {"seed": 0, "env": {"name": "scene-play", "observation_dim": 40, "action_dim": 5}}
    assert run_identity(old) == {"env.name": "scene-play", "seed": 0}


def test_identity_read_back_from_json_equals_the_fresh_one():
    config = {"network": {"actor_cells": (32, 32)}, "optim": {"lr": 3e-4}}
    assert run_identity(json.loads(json.dumps(config))) == run_identity(config)


def test_differences_name_each_key_with_both_values():
    new = {**CONFIG, "seed": 4, "threads": 1, "optim": {"lr": 1e-3}}
    assert identity_differences(CONFIG, new) == [
        "optim.lr: stored 0.0001, now 0.001",
        "seed: stored 3, now 4",
    ]


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"num_updates": 5000}, None),  # extends the run
        ({"eval": {"num_episodes": 50}}, None),  # evaluates it differently
        ({"seed": 4}, "seed: stored 3, now 4"),
        ({"batch_size": 64}, "batch_size: stored 256, now 64"),
        ({"data": {**CONFIG["data"], "fingerprint": "sha256:bb"}}, "data.fingerprint"),
        ({"env": {"name": "cube-single-play", "task": 3}}, "env.task: stored 2, now 3"),
        ({"matmul_precision": "high"}, "matmul_precision"),
    ],
)
def test_resume_allows_only_length_and_evaluation_changes(change, refused):
    diffs = resume_differences(run_identity(CONFIG), run_identity({**CONFIG, **change}))
    if refused is None:
        assert diffs == []
    else:
        assert len(diffs) == 1 and diffs[0].startswith(refused)


def test_an_identity_without_data_is_compared_on_the_rest(caplog):
    old = {k: v for k, v in run_identity(CONFIG).items() if not k.startswith("data.")}
    assert resume_differences(old, run_identity(CONFIG)) == []
    assert "before the data was part" in caplog.text
    assert resume_differences(old, run_identity({**CONFIG, "seed": 9})) == ["seed: stored 3, now 9"]


# --------------------------------------------------------------------------- dir names


def _subdir_and_identity(overrides):
    cfg = compose_train(overrides, hydra=True)
    subdir = cfg.hydra.sweep.subdir
    del cfg.hydra
    cfg.run_dir = "unused"  # ${hydra:runtime.output_dir} resolves only inside a Hydra job
    return subdir, run_identity(OmegaConf.to_container(cfg, resolve=True))


BOOKKEEPING_OVERRIDES = [
    "threads=2",
    "compile=false",
    "device=cuda",
    "progress=false",
    "resume=true",
    "log_interval=7",
    "checkpoint_interval=3",
    "val_interval=0",
    "val_batches=1",
    "logger=tensorboard",
    "logger.backend=wandb",
    "data.root=/elsewhere",
    "data.workers=1",
    "data.generate_if_missing=true",
    "data.source=official",
    "data.download_if_missing=true",
    "launcher=local",
    "on_divergence=continue",
]
IDENTITY_OVERRIDES = [
    "seed=2",
    "batch_size=64",
    "num_updates=10",
    "env.task=3",
    "env=scene-play",
    "network=small",
    "optim.lr=0.001",
    "loss.alpha=3",
    "eval.num_episodes=3",
    "matmul_precision=high",
    "+experiment=paper",
]


@pytest.mark.parametrize("override", BOOKKEEPING_OVERRIDES)
def test_a_bookkeeping_override_changes_neither_identity_nor_dir_name(override):
    base_dir, base_identity = _subdir_and_identity(["seed=1"])
    subdir, identity = _subdir_and_identity(["seed=1", override])
    assert base_dir == subdir == "seed=1"
    assert identity == base_identity


@pytest.mark.parametrize("override", IDENTITY_OVERRIDES)
def test_an_identity_override_changes_both(override):
    base_dir, base_identity = _subdir_and_identity(["seed=1"] if override != "seed=2" else [])
    subdir, identity = _subdir_and_identity(
        ["seed=1", override] if override != "seed=2" else [override]
    )
    assert override in subdir.split(",") and subdir != base_dir
    assert identity != base_identity


# --------------------------------------------------------------------------- the record


def _finished(run_dir, config):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": "finished", "run_key": run_identity(config), "config": config}
    (run_dir / RESULTS_NAME).write_text(json.dumps(record))
    return record


def test_a_finished_run_of_the_same_identity_is_found_and_another_is_refused(tmp_path):
    stored = _finished(tmp_path, CONFIG)
    assert finished_results(tmp_path, run_identity({**CONFIG, "threads": 8})) == stored
    other = {**CONFIG, "data": {**CONFIG["data"], "fingerprint": "sha256:bb"}}
    with pytest.raises(FileExistsError, match="data.fingerprint: stored 'sha256:aa', now"):
        finished_results(tmp_path, run_identity(other))


def test_an_unfinished_record_is_not_a_finished_run(tmp_path):
    RunRecord(tmp_path, CONFIG).start(run_key=run_identity(CONFIG))
    assert read_record(tmp_path)["status"] == "running"
    assert finished_results(tmp_path, run_identity(CONFIG)) is None


def test_an_old_finished_record_without_data_or_run_key_is_still_skipped(tmp_path):
    old = {k: v for k, v in CONFIG.items() if k != "data"}
    old["env"] = {**old["env"], "observation_dim": 28, "action_dim": 5}
    (tmp_path / RESULTS_NAME).write_text(json.dumps({"status": "finished", "config": old}))
    assert finished_results(tmp_path, run_identity(CONFIG))["status"] == "finished"


def test_a_failure_before_the_run_claimed_its_dir_keeps_the_record_there(tmp_path):
    stored = _finished(tmp_path, CONFIG)
    assert RunRecord(tmp_path, {**CONFIG, "seed": 9}).fail(ValueError("bad")) is None
    assert json.loads((tmp_path / RESULTS_NAME).read_text()) == stored
    empty = tmp_path / "empty"
    path = RunRecord(empty, CONFIG).fail(ValueError("bad"))
    failed = json.loads(path.read_text())
    assert (failed["status"], failed["error"], failed["task"]) == ("failed", "ValueError: bad", 2)


def test_an_old_failed_json_is_read_and_removed_when_a_run_claims_the_dir(tmp_path):
    (tmp_path / FAILED_NAME).write_text(json.dumps({"status": "failed", "error": "old"}))
    assert read_record(tmp_path)["error"] == "old"
    record = RunRecord(tmp_path, CONFIG)
    record.start(run_key=run_identity(CONFIG))
    assert not (tmp_path / FAILED_NAME).exists()
    record.finish(grid=[])
    stored = read_record(tmp_path)
    assert stored["status"] == "finished" and stored["run_key"] == run_identity(CONFIG)
    assert stored["started_at"] <= stored["finished_at"]


def test_an_unreadable_record_is_refused(tmp_path):
    (tmp_path / RESULTS_NAME).write_text("{half")
    with pytest.raises(FileExistsError, match="cannot be read"):
        finished_results(tmp_path, run_identity(CONFIG))


def test_a_run_that_trained_past_a_divergence_is_never_recorded_finished(tmp_path):
    record = RunRecord(tmp_path, CONFIG)
    record.start(run_key=run_identity(CONFIG))
    record.note(divergence=DIVERGED)
    stored = read_record(tmp_path)
    assert stored["status"] == "running" and stored["divergence"] == DIVERGED
    assert record.finish(grid=[])["status"] == "diverged"
    assert read_record(tmp_path)["status"] == "diverged"
    assert RunRecord(tmp_path / "other", CONFIG).finish(grid=[])["status"] == "finished"


def _no_space(path, text):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_record_that_cannot_be_written_names_the_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(run_record, "atomic_write_text", _no_space)
    with pytest.raises(OSError) as error:
        RunRecord(tmp_path, CONFIG).start(run_key=run_identity(CONFIG))
    assert error.value.errno == errno.ENOSPC
    assert str(error.value) == (
        f"Cannot write the run record {tmp_path / RESULTS_NAME}: No space left on device. "
        f"Free space on that disk or make {tmp_path} writable (or pass another run_dir), then "
        "run the same command again: an interrupted run resumes from its last checkpoint."
    )


def test_a_failure_record_that_cannot_be_written_leaves_the_error_to_the_run(
    tmp_path, monkeypatch, caplog
):
    record = RunRecord(tmp_path, CONFIG)
    record.start(run_key=run_identity(CONFIG))
    stored = (tmp_path / RESULTS_NAME).read_bytes()
    monkeypatch.setattr(run_record, "atomic_write_text", _no_space)
    assert record.fail(RuntimeError("the run's own error")) is None
    assert "failed record was not written: Cannot write the run record" in caplog.text
    assert (tmp_path / RESULTS_NAME).read_bytes() == stored


DIVERGED = {
    "update": 13,
    "terms": ["loss_actor"],
    "detected_at_update": 20,
    "last_good_checkpoint": "run/checkpoint.pt",
    "last_good_update": 10,
}


def _diverged(run_dir, config, divergence):
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"status": "diverged", "run_key": run_identity(config), "config": config}
    record.update(error="DivergenceError: Training diverged", divergence=divergence)
    (run_dir / RESULTS_NAME).write_text(json.dumps(record))


def test_a_diverged_run_is_not_rerun_with_its_settings(tmp_path):
    _diverged(tmp_path, CONFIG, DIVERGED)
    longer = run_identity({**CONFIG, "num_updates": 2000, "threads": 1})
    with pytest.raises(
        FileExistsError,
        match=r"diverged: loss_actor became non-finite \(NaN or inf\) at update 13 .*"
        r"\(update 10\).* pass resume=true",
    ):
        refuse_diverged(tmp_path, longer)
    # another run in that dir is left to the resume checks, which name the differences
    assert refuse_diverged(tmp_path, run_identity({**CONFIG, "seed": 4})) is None
    assert refuse_diverged(tmp_path / "absent", run_identity(CONFIG)) is None
    early = tmp_path / "early"
    _diverged(early, CONFIG, {**DIVERGED, "last_good_checkpoint": None, "last_good_update": None})
    with pytest.raises(FileExistsError, match=r"No checkpoint was written before it\. .*remove"):
        refuse_diverged(early, run_identity(CONFIG))


def test_an_old_sorl_record_is_the_same_run_as_one_with_algo_sorl():
    from sorl_torchrl.recipes.algorithms import ENV_BLOCKS
    from sorl_torchrl.recipes.run_record import DERIVED_KEYS, resume_differences, run_identity

    old = {"seed": 1, "env": {"name": "scene-play", "task": 2, "q_loss_coef": 100}}
    new = {
        **old,
        "algo": {"name": "sorl"},
        "env": {**old["env"], "fql": {"alpha": 300}, "iql": {"alpha": 10}},
    }
    assert run_identity(old) == run_identity(new)
    assert resume_differences(run_identity(old), new) == []
    fql = {**new, "algo": {"name": "fql"}}
    assert resume_differences(run_identity(new), fql) == ["algo.name: stored None, now 'fql'"]
    assert DERIVED_KEYS == tuple(f"env.{name}" for name in ENV_BLOCKS)
