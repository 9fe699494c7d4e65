"""Expert-data datasets (antmaze, humanoidmaze, antsoccer): download only.

The official files cannot be made here (they need trained experts), so the tests write
tiny files in the official format by rolling out random actions in the OGBench env the
way OGBench's own collection script records them, and check the replay buffer against
OGBench's own loader and singletask relabelling.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import ogbench
import pytest
from data_helpers import assert_ted_matches_ogbench, write_official_format

from sorl_torchrl.data import (
    DATASETS,
    OGBenchExperienceReplay,
    generate_dataset,
    get_dataset_spec,
    list_datasets,
    verify_dataset_file,
)
from sorl_torchrl.data.cli import main
from sorl_torchrl.data.specs import EXPERT_FAMILIES

TINY = {  # dataset: (train episodes, rows per episode)
    "antmaze-large-navigate-v0": (3, 40),
    "humanoidmaze-medium-navigate-v0": (2, 30),
    "antsoccer-arena-navigate-v0": (3, 40),
}


@pytest.fixture(scope="module")
def expert_files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("expert-data")
    for name, (episodes, length) in TINY.items():
        write_official_format(get_dataset_spec(name), root, episodes, length)
    return root


def test_specs_match_the_ogbench_envs():
    # Dims from the envs themselves, horizons from OGBench's singletask registrations.
    checked = set()
    for spec in DATASETS.values():
        if not spec.load_only:
            continue
        assert spec.family in EXPERT_FAMILIES
        singletask = gymnasium.spec(spec.singletask_env_id())
        assert spec.horizon == singletask.max_episode_steps, spec.name
        if spec.env_name in checked:
            continue
        env = gymnasium.make(spec.env_name)
        env.reset(seed=0)
        assert env.observation_space.shape == (spec.observation_dim,), spec.name
        assert env.action_space.shape == (spec.action_dim,), spec.name
        assert env.unwrapped.data.qpos.shape == (spec.qpos_dim,), spec.name
        assert env.unwrapped.data.qvel.shape == (spec.qvel_dim,), spec.name
        env.close()
        checked.add(spec.env_name)
    assert len(checked) == 9


def test_default_tasks_are_ogbenchs():
    for name in ["antmaze-giant-navigate-v0", "humanoidmaze-large-navigate-v0"]:
        env = gymnasium.make(get_dataset_spec(name).singletask_env_id())
        assert env.unwrapped._reward_task_id == get_dataset_spec(name).default_task == 1
    env = gymnasium.make("antsoccer-arena-singletask-v0")
    assert (
        env.unwrapped._reward_task_id == get_dataset_spec("antsoccer-arena-stitch-v0").default_task
    )
    assert get_dataset_spec("antsoccer-arena-stitch-v0").default_task == 4


@pytest.mark.parametrize(
    "singletask_id",
    [
        "antmaze-large-navigate-singletask-v0",
        "antmaze-large-navigate-singletask-task3-v0",
        "humanoidmaze-medium-navigate-singletask-v0",
        "antsoccer-arena-navigate-singletask-v0",
    ],
)
def test_ted_equals_ogbench_loader_and_relabelling(expert_files, singletask_id):
    _, train, val = ogbench.make_env_and_datasets(singletask_id, dataset_dir=str(expert_files))
    for split, ref in [("train", train), ("val", val)]:
        data = OGBenchExperienceReplay(singletask_id, root=expert_files, split=split)
        td = data[:]
        assert len(data) == len(ref["observations"])
        assert_ted_matches_ogbench(td, ref)


@pytest.mark.parametrize("name", list(TINY))
def test_reference_comparison_is_not_vacuous(expert_files, name):
    # Episodes started on the goal succeed, the others do not: both rewards occur.
    singletask_id = name.replace("-v0", "-singletask-v0")
    _, train, _ = ogbench.make_env_and_datasets(singletask_id, dataset_dir=str(expert_files))
    assert set(np.unique(train["rewards"]).tolist()) == {-1.0, 0.0}


def test_antsoccer_success_follows_the_ball_not_the_ant(expert_files):
    # The goal-start episode puts the ball on the goal and the ant 1.4 away from it.
    data = OGBenchExperienceReplay("antsoccer-arena-navigate-singletask-v0", root=expert_files)
    episode = data[:]["episode"] == 1
    assert data[:]["next", "terminated"][episode][0].item()


def test_official_format_files_verify(expert_files):
    for name, (episodes, _) in TINY.items():
        report = verify_dataset_file(expert_files / f"{name}.npz")
        assert report.ok, report.errors
        assert report.summary["episodes"] == episodes
        assert any("episode length" in w for w in report.warnings)  # not the official length


def test_verify_catches_wrong_shapes(expert_files, tmp_path):
    # Humanoid rows in an antmaze file: the spec's dims catch it.
    source = expert_files / "humanoidmaze-medium-navigate-v0.npz"
    target = tmp_path / "antmaze-medium-navigate-v0.npz"
    target.write_bytes(source.read_bytes())
    report = verify_dataset_file(target)
    assert not report.ok and any("observations" in e for e in report.errors)


def test_generation_is_refused_with_the_download_command(tmp_path, capsys):
    with pytest.raises(ValueError, match="needs a trained expert") as error:
        generate_dataset("antmaze-large-navigate-v0", out_dir=tmp_path)
    assert f"sorl-data download antmaze-large-navigate-v0 --out-dir {tmp_path}" in str(error.value)
    assert main(["generate", "humanoidmaze-giant-navigate-v0", "--out-dir", str(tmp_path)]) == 2
    assert "Download the official files instead: sorl-data download" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_listing(capsys):
    assert "antsoccer-arena-navigate-v0" in list_datasets(load_only=True)
    assert "antsoccer-arena-navigate-v0" not in list_datasets()
    assert main(["list", "--download-only"]) == 0
    listed = capsys.readouterr().out.split()
    assert "humanoidmaze-giant-navigate-v0" in listed and "cube-single-play-v0" not in listed
    assert "generate," not in listed  # none of them can be generated


def test_missing_files_say_what_to_download(expert_files, tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        OGBenchExperienceReplay("antmaze-medium-navigate-singletask-v0", root=tmp_path)
    message = str(error.value)
    assert f"sorl-data download antmaze-medium-navigate-v0 --out-dir {tmp_path}" in message
    assert "sorl-data generate" not in message
    (tmp_path / "antsoccer-arena-navigate-v0.npz").write_bytes(
        (expert_files / "antsoccer-arena-navigate-v0.npz").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match="validation file .* is missing") as error:
        OGBenchExperienceReplay(
            "antsoccer-arena-navigate-singletask-v0", root=tmp_path, split="val"
        )
    assert "sorl-data download antsoccer-arena-navigate-v0" in str(error.value)
