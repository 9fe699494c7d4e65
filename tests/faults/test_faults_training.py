"""Training under faults: kill -9, a full disk, a read-only run dir, a damaged checkpoint."""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from fault_helpers import (
    Disk,
    compose_train,
    hidden_temp_files,
    kill_when,
    read_only,
    start_python,
    tiny_cube,
    tiny_overrides,
)

from sorl_torchrl import _io
from sorl_torchrl import checkpoint as checkpoint_module
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint
from sorl_torchrl.recipes import train as train_module
from sorl_torchrl.recipes.train import run

UPDATES = 100  # checkpointed every 10


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    return tiny_cube(tmp_path_factory)


def _overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny_overrides(root, run_dir, UPDATES) + ["checkpoint_interval=10", *extra]


@pytest.fixture(scope="module")
def straight(cube, tmp_path_factory) -> Path:
    """The run dir of an uninterrupted run of the config the tests interrupt."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run(compose_train(_overrides(cube, run_dir)))
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit for bit: weights, optimizer state, final metrics and grid (timings aside)."""
    a, b = (load_checkpoint(d / "checkpoint.pt") for d in (reference, run_dir))
    assert a["step"] == b["step"] == UPDATES
    assert a["loss"].keys() == b["loss"].keys()
    for key in a["loss"]:
        torch.testing.assert_close(b["loss"][key], a["loss"][key], rtol=0, atol=0, msg=key)
    for name in a["optimizers"]:
        torch.testing.assert_close(
            b["optimizers"][name]["state"], a["optimizers"][name]["state"], rtol=0, atol=0
        )
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (reference, run_dir))
    assert rb["status"] == "finished" and rb["final_metrics"] == ra["final_metrics"]

    def grid(record):
        return [{k: v for k, v in row.items() if k != "env_steps_per_second"} for row in record]

    assert grid(rb["grid"]) == grid(ra["grid"])


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------- kill -9


def test_kill_9_at_a_random_point_then_the_same_command_resumes_bit_exact(cube, straight, tmp_path):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.pt"
    rng = random.Random()
    after, delay = rng.randint(1, 4), rng.uniform(0.0, 0.02)  # of 10 checkpoints
    point = f"killed {delay:.3f} s after checkpoint {after}"
    stamps: set[int] = set()

    def written() -> bool:
        with contextlib.suppress(FileNotFoundError):
            stamps.add(checkpoint.stat().st_mtime_ns)
        return len(stamps) >= after

    command = ["-m", "sorl_torchrl.recipes.train", *_overrides(cube, run_dir)]
    process = start_python(*command, f"hydra.run.dir={run_dir}")
    assert kill_when(process, written, delay), f"the run ended before it was {point}"
    # what a kill leaves: a record that says running, a whole checkpoint (atomic writes)
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running", point
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 10 <= killed_at < UPDATES and killed_at % 10 == 0, point

    resumed = run(compose_train(_overrides(cube, run_dir)))
    assert resumed["resumed_from_update"] == killed_at, point
    assert_same_run(run_dir, straight)


# --------------------------------------------------------------------------- a full disk


def _fill_before_the_second_checkpoint(disk: Disk, monkeypatch) -> None:
    real, saves = train_module.save_checkpoint, []

    def fill_then_save(path, state):
        saves.append(state["step"])
        if len(saves) == 2:
            disk.fill()
        return real(path, state)

    monkeypatch.setattr(train_module, "save_checkpoint", fill_then_save)


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(
    cube, straight, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoint.pt"
    disk = Disk()
    disk.patch(monkeypatch, checkpoint_module)
    _fill_before_the_second_checkpoint(disk, monkeypatch)
    with pytest.raises(OSError) as error:
        run(compose_train(_overrides(cube, run_dir)))
    assert error.value.errno == errno.ENOSPC
    assert str(error.value).startswith(
        f"Cannot write the checkpoint {checkpoint}: No space left on device. The checkpoint "
        "of update 10 is intact. Free space on that disk"
    )
    assert load_checkpoint(checkpoint)["step"] == 10
    assert hidden_temp_files(run_dir) == []
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "failed" and record["last_checkpoint_update"] == 10
    assert record["error"].startswith("OSError: Cannot write the checkpoint")

    monkeypatch.undo()  # space was freed: the same command resumes
    resumed = run(compose_train(_overrides(cube, run_dir)))
    assert resumed["resumed_from_update"] == 10
    assert_same_run(run_dir, straight)


def test_a_disk_too_full_for_the_failure_record_leaves_the_record_running(
    cube, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    disk = Disk()
    disk.patch(monkeypatch, checkpoint_module)
    disk.patch(monkeypatch, _io)  # the record and every other atomic write
    _fill_before_the_second_checkpoint(disk, monkeypatch)
    with pytest.raises(OSError, match="Cannot write the checkpoint") as error:
        run(compose_train(_overrides(cube, run_dir)))
    assert error.value.errno == errno.ENOSPC
    # the record says what a killed run's says (rerunning resumes), and names the checkpoint
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "running" and record["last_checkpoint_update"] == 10
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 10
    assert hidden_temp_files(run_dir) == []


# --------------------------------------------------------------------------- a read-only dir


@pytest.fixture(scope="module")
def short_run(cube, tmp_path_factory) -> Path:
    """A finished 10-update run (checkpoint at update 10)."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    run(compose_train(tiny_overrides(cube, run_dir, 10)))
    return run_dir


def test_a_read_only_run_dir_is_refused_and_left_as_it_was(cube, short_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    before = _files(run_dir)
    extend = tiny_overrides(cube, run_dir, 20) + ["resume=true"]
    with read_only(run_dir, monkeypatch), pytest.raises(PermissionError) as error:
        run(compose_train(extend))
    assert str(error.value).startswith(
        f"Cannot write the run record {run_dir / 'results.json'}: Permission denied. Free "
        f"space on that disk or make {run_dir} writable (or pass another run_dir)"
    )
    assert _files(run_dir) == before

    monkeypatch.undo()  # writable again: the same command extends the run
    assert run(compose_train(extend))["resumed_from_update"] == 10


# --------------------------------------------------------------------------- a damaged checkpoint


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "empty":
        return b""
    if how == "garbage":
        return random.Random(0).randbytes(len(data))
    if how == "flipped":  # one byte of the weights, the zip structure intact
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "empty",
        "garbage",
        "flipped",
        "foreign",
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_paragraph_and_kept(cube, short_run, tmp_path, how):
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    if how == "foreign":  # a whole torch file that some other code wrote
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    else:
        checkpoint.write_bytes(_damage(checkpoint.read_bytes(), how))
    before = _files(run_dir)
    with pytest.raises(CheckpointError) as error:
        run(compose_train(tiny_overrides(cube, run_dir, 20) + ["resume=true"]))
    message = str(error.value)
    assert message.startswith(
        (f"Checkpoint {checkpoint} cannot be read", f"Checkpoint {checkpoint} is corrupt")
    ) or message.startswith(f"{checkpoint} is not a sorl-torchrl checkpoint")
    assert "\n" not in message and "Traceback" not in message
    assert _files(run_dir) == before
