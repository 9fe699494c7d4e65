"""Dataset generation: official format, determinism, resume after a kill, overwrite rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import ogbench
import pytest

from sorl_torchrl.data import generate_dataset
from sorl_torchrl.data.cli import main
from sorl_torchrl.data.provenance import REGENERATED_DIR_ENV, provenance_path, sha256_of
from sorl_torchrl.data.specs import DATASETS

# Cube-single exercises the oracles' global RNG, the env RNG and our own Generator.
SMALL = dict(num_episodes=6, num_val_episodes=1, episode_length=40)
NAME = "cube-single-play-v0"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted single-worker run, seed 0."""
    out = tmp_path_factory.mktemp("reference")
    generate_dataset(NAME, out_dir=out, seed=0, workers=1, progress=False, **SMALL)
    return out


def _files(out: Path) -> list[bytes]:
    return [(out / f"{NAME}.npz").read_bytes(), (out / f"{NAME}-val.npz").read_bytes()]


def test_official_format_read_by_ogbench(reference_run):
    dataset = ogbench.load_dataset(str(reference_run / f"{NAME}.npz"), add_info=True)
    # 6 episodes x 40 rows -> 6 x 39 transitions.
    assert dataset["observations"].shape == (6 * 39, 28)
    assert dataset["actions"].shape == (6 * 39, 5)
    assert dataset["qpos"].shape == (6 * 39, 21)
    raw = np.load(reference_run / f"{NAME}.npz")
    assert raw["terminals"].dtype == bool and raw["observations"].dtype == np.float32
    assert np.flatnonzero(raw["terminals"]).tolist() == [39, 79, 119, 159, 199, 239]
    # The observation stored with a row is the state before that row's action: it equals
    # the next row's state only through the dynamics, so consecutive rows must differ.
    assert not np.array_equal(raw["observations"][0], raw["observations"][1])
    assert np.load(reference_run / f"{NAME}-val.npz")["terminals"].sum() == 1


def test_same_seed_same_bytes_any_worker_count(reference_run, tmp_path):
    generate_dataset(NAME, out_dir=tmp_path / "w2", seed=0, workers=2, progress=False, **SMALL)
    assert _files(tmp_path / "w2") == _files(reference_run)
    generate_dataset(NAME, out_dir=tmp_path / "s1", seed=1, workers=1, progress=False, **SMALL)
    assert _files(tmp_path / "s1")[0] != _files(reference_run)[0]


def test_resume_after_kill_gives_the_same_file(reference_run, tmp_path):
    command = [sys.executable, "-m", "sorl_torchrl.data.cli", "generate", NAME]
    command += ["--out-dir", str(tmp_path), "--seed", "0", "--no-progress"]
    command += ["--num-episodes", "6", "--num-val-episodes", "1", "--episode-length", "40"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / f"{NAME}.partial"
    deadline = time.monotonic() + 120
    while len(list(partial.glob("episode_*.npz"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in partial.glob("episode_*.npz"))
    assert 2 <= len(done) < 7, "the run must be killed mid-way"
    assert not (tmp_path / f"{NAME}.npz").exists()

    result = generate_dataset(NAME, out_dir=tmp_path, seed=0, progress=False, **SMALL)
    assert result.steps_collected == (7 - len(done)) * 40  # only the missing episodes
    assert _files(tmp_path) == _files(reference_run)
    assert not partial.exists()


def test_refuses_to_overwrite_unless_asked(reference_run):
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_dataset(NAME, out_dir=reference_run, seed=0, progress=False, **SMALL)


def test_overwrite_and_partial_run_with_other_settings(tmp_path):
    small = dict(num_episodes=1, num_val_episodes=1, episode_length=10, progress=False)
    generate_dataset(NAME, out_dir=tmp_path, seed=0, **small)
    first = _files(tmp_path)
    generate_dataset(NAME, out_dir=tmp_path, seed=3, overwrite=True, **small)
    assert _files(tmp_path) != first
    partial = tmp_path / f"{NAME}.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps({"seed": 99}))
    with pytest.raises(FileExistsError, match="different settings"):
        generate_dataset(NAME, out_dir=tmp_path, seed=0, **small)


def test_provenance_record(reference_run):
    for name, split, episodes in [(NAME, "train", 6), (f"{NAME}-val", "val", 1)]:
        path = reference_run / f"{name}.npz"
        record = json.loads(provenance_path(path).read_text())
        assert record["source"] == "regenerated" and record["official"] is False
        assert record["generator"] == "sorl-torchrl"
        assert record["split"] == split and record["seed"] == 0
        assert record["counts"] == {
            "episodes": episodes,
            "rows": episodes * 40,
            "transitions": episodes * 39,
        }
        assert record["sha256"] == sha256_of(path)
        assert record["settings"]["oracle"] == "plan" and record["settings"]["noise"] == 0.1
        assert "ogbench" in record["versions"]


@pytest.mark.parametrize(
    "name, match",
    [
        ("cube-sextuple-play-v0", "Unknown dataset"),
        ("antmaze-large-navigate-v0", "cannot be generated: it needs a trained expert"),
    ],
)
def test_unknown_or_load_only_dataset(tmp_path, name, match):
    with pytest.raises(ValueError, match=match):
        generate_dataset(name, out_dir=tmp_path, num_episodes=1, progress=False)
    assert not any(tmp_path.iterdir())


def test_regenerated_data_has_its_own_dir_and_never_goes_into_ogbenchs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(REGENERATED_DIR_ENV, raising=False)
    small = dict(num_episodes=1, num_val_episodes=1, episode_length=10, progress=False)
    result = generate_dataset("pointmaze-medium-navigate-v0", **small)
    assert result.train_path.parent == tmp_path / ".sorl_torchrl" / "regenerated"
    official = tmp_path / ".ogbench" / "data"
    with pytest.raises(ValueError, match="is OGBench's own dataset dir") as error:
        generate_dataset("pointmaze-medium-navigate-v0", out_dir=official, **small)
    assert "sorl-data download pointmaze-medium-navigate-v0" in str(error.value)
    assert not official.exists()
    monkeypatch.setenv(REGENERATED_DIR_ENV, str(tmp_path / "mine"))
    result = generate_dataset("pointmaze-medium-navigate-v0", **small)
    assert result.train_path == tmp_path / "mine" / "pointmaze-medium-navigate-v0.npz"


def test_list_says_how_every_dataset_is_obtained(capsys):
    assert main(["list"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert sorted(rows) == sorted(DATASETS)
    expert = ("antmaze-", "humanoidmaze-", "antsoccer-")
    for name, how in rows.items():
        assert how == ("download" if name.startswith(expert) else "generate, download"), name
