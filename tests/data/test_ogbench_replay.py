"""The OGBench replay buffer against OGBench's own loader and singletask relabelling."""

from __future__ import annotations

import json
import shutil

import numpy as np
import ogbench
import pytest
import torch
from data_helpers import CLIP, assert_ted_matches_ogbench
from tensordict import MemoryMappedTensor
from torchrl.data import SamplerWithoutReplacement
from torchrl.data.datasets import load_dataset

from sorl_torchrl.data import OGBenchExperienceReplay


def _reference(singletask_id: str, root) -> tuple[dict, dict]:
    """OGBench's own loading + relabelling of the same files (independent reference)."""
    _, train, val = ogbench.make_env_and_datasets(singletask_id, dataset_dir=str(root))
    return train, val


@pytest.mark.parametrize(
    "singletask_id",
    [
        "cube-single-play-singletask-v0",
        "cube-single-play-singletask-task4-v0",
        "scene-play-singletask-v0",
        "puzzle-3x3-play-singletask-task1-v0",
        "pointmaze-medium-navigate-singletask-v0",
    ],
)
def test_ted_equals_ogbench_loader_and_relabelling(tiny_datasets, singletask_id):
    reference = dict(zip(["train", "val"], _reference(singletask_id, tiny_datasets)))
    for split in ("train", "val"):
        ref = reference[split]
        data = OGBenchExperienceReplay(singletask_id, batch_size=8, root=tiny_datasets, split=split)
        td = data[:]
        assert len(data) == len(ref["observations"])
        assert_ted_matches_ogbench(td, ref)
        np.testing.assert_array_equal(td["next", "truncated"].squeeze(-1).numpy(), ref["terminals"])
        assert td["next", "reward"].shape == (len(data), 1)
        assert td["next", "terminated"].dtype == torch.bool


def test_reference_comparison_is_not_vacuous(tiny_datasets):
    # Puzzle and scene rewards count satisfied sub-goals: they must vary over the data, so
    # the equality above checks real values, not a constant.
    for singletask_id in ["puzzle-3x3-play-singletask-task1-v0", "scene-play-singletask-v0"]:
        train, _ = _reference(singletask_id, tiny_datasets)
        assert len(np.unique(train["rewards"])) >= 2


def test_actions_are_clipped_to_open_interval(tiny_datasets):
    data = OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tiny_datasets)
    raw = np.load(tiny_datasets / "cube-single-play-v0.npz")["actions"]
    assert np.abs(raw).max() == 1.0  # the oracle saturates the gripper action
    assert data[:]["action"].abs().max().item() == pytest.approx(CLIP)


def test_load_dataset_prefix_and_sampling(tiny_datasets):
    import sorl_torchrl  # noqa: F401  (registers "ogbench")

    data = load_dataset(
        "ogbench:cube-single-play-singletask-task2-v0",
        root=tiny_datasets,
        batch_size=256,
        sampler=SamplerWithoutReplacement(drop_last=True),
        prefetch=2,
    )
    assert isinstance(data, OGBenchExperienceReplay)
    batch = data.sample()
    assert batch["observation"].shape == (256, 28)
    assert batch["action"].shape == (256, 5)
    assert batch["next", "observation"].shape == (256, 28)
    assert batch["next", "reward"].shape == (256, 1)
    assert batch["next", "terminated"].shape == (256, 1)
    assert batch["observation"].dtype == torch.float32
    assert data.task == 2
    val = data.val_split(batch_size=4)
    assert val.split == "val" and len(val) == 119 and val.sample().batch_size == (4,)


def test_storage_is_memory_mapped_and_cached(tiny_datasets, tmp_path):
    shutil.copy(tiny_datasets / "puzzle-3x3-play-v0.npz", tmp_path)
    shutil.copy(tiny_datasets / "puzzle-3x3-play-v0-val.npz", tmp_path)
    first = OGBenchExperienceReplay("puzzle-3x3-play-singletask-v0", root=tmp_path)
    stored = first.storage._storage
    assert all(isinstance(v, MemoryMappedTensor) for v in stored.values(True, True))
    assert first.data_path.is_dir()
    reward_task4 = first[:]["next", "reward"].clone()
    # Replacing the source file invalidates the cached copy.
    shutil.copy(tiny_datasets / "cube-single-play-v0.npz", tmp_path / "puzzle-3x3-play-v0.npz")
    with pytest.raises(ValueError, match="button_states"):
        OGBenchExperienceReplay("puzzle-3x3-play-singletask-v0", root=tmp_path)
    shutil.copy(tiny_datasets / "puzzle-3x3-play-v0.npz", tmp_path)
    again = OGBenchExperienceReplay("puzzle-3x3-play-singletask-v0", root=tmp_path)
    torch.testing.assert_close(again[:]["next", "reward"], reward_task4)


def test_provenance_marks_regenerated_data(tiny_datasets):
    data = OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tiny_datasets)
    assert data.provenance["source"] == "regenerated"
    assert data.provenance["official"] is False
    assert data.provenance["seed"] == 0


def test_the_cached_copy_carries_the_provenance_and_is_rebuilt_when_it_changes(
    tiny_datasets, tmp_path
):
    for suffix in (".npz", "-val.npz", ".provenance.json"):
        shutil.copy(tiny_datasets / f"cube-single-play-v0{suffix}", tmp_path)
    first = OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path)
    identity = first.data_path.with_name(first.data_path.name + ".source.json")
    cached = json.loads(identity.read_text())["provenance"]
    assert cached == first.provenance and cached["source"] == "regenerated"
    # The same bytes, but no record any more: of unknown origin, and the copy is rebuilt.
    (tmp_path / "cube-single-play-v0.provenance.json").unlink()
    again = OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path)
    assert again.provenance == {"source": "unknown"}
    assert json.loads(identity.read_text())["provenance"] == {"source": "unknown"}
    torch.testing.assert_close(again[:]["observation"], first[:]["observation"])


@pytest.mark.parametrize(
    "dataset_id, match",
    [
        ("cube-sextuple-play-singletask-v0", "Unknown dataset 'cube-sextuple-play-v0'"),
        ("cube-single-play-singletask-task9-v0", "Unknown task 9"),
        ("cube-single-play-v0", "not an OGBench singletask id"),
        ("antmaze-huge-navigate-singletask-v0", "Unknown dataset 'antmaze-huge-navigate-v0'"),
    ],
)
def test_bad_names_give_clear_errors(tiny_datasets, dataset_id, match):
    with pytest.raises(ValueError, match=match):
        OGBenchExperienceReplay(dataset_id, root=tiny_datasets)


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        OGBenchExperienceReplay("cube-double-play-singletask-v0", root=tmp_path)
    assert f"sorl-data generate cube-double-play-v0 --out-dir {tmp_path}" in str(error.value)


def test_missing_val_file(tiny_datasets, tmp_path):
    shutil.copy(tiny_datasets / "cube-single-play-v0.npz", tmp_path)
    OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path)  # train is fine
    with pytest.raises(FileNotFoundError, match="validation file .*-val.npz is missing"):
        OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path, split="val")


def test_truncated_file_is_rejected(tiny_datasets, tmp_path):
    source = (tiny_datasets / "cube-single-play-v0.npz").read_bytes()
    (tmp_path / "cube-single-play-v0.npz").write_bytes(source[: len(source) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path)


def test_non_finite_data_is_rejected_once_when_the_buffer_is_built(tiny_datasets, tmp_path):
    with np.load(tiny_datasets / "cube-single-play-v0.npz") as file:
        arrays = {key: file[key] for key in file.files}
    arrays["observations"][3, 1] = np.nan
    np.savez(tmp_path / "cube-single-play-v0.npz", **arrays)
    with pytest.raises(ValueError, match="observations holds 1 non-finite value"):
        OGBenchExperienceReplay("cube-single-play-singletask-v0", root=tmp_path)
