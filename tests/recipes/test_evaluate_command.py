"""sorl-evaluate: its env options (--num-envs, --parallel), --threads and the progress bar."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from recipe_helpers import compose_train, tiny_overrides

from sorl_torchrl._validation import SettingError
from sorl_torchrl.checkpoint import load_checkpoint, save_checkpoint
from sorl_torchrl.recipes.evaluate import evaluate_checkpoint, parse_args, set_threads
from sorl_torchrl.recipes.train import run

THREADS = torch.get_num_threads()
GRID = dict(inference_steps=[1], num_candidates=[1, 2], episodes=3, max_episode_steps=4)


@pytest.fixture(scope="module")
def checkpoint(tiny_cube_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    return run_dir / "checkpoint.pt"


@pytest.fixture(autouse=True)
def _keep_threads():
    yield
    torch.set_num_threads(THREADS)


def test_options_and_their_defaults():
    args = parse_args(["c.pt"])
    assert (args.num_envs, args.parallel, args.threads, args.progress) == (None, None, None, True)
    args = parse_args(
        ["c.pt", "--num-envs", "2", "--no-parallel", "--threads", "3", "--no-progress"]
    )
    assert (args.num_envs, args.parallel, args.threads, args.progress) == (2, False, 3, False)
    assert parse_args(["c.pt", "--parallel"]).parallel is True


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"num_envs": 0}, "num_envs must be None or an integer >= 1"),
        ({"threads": 0}, "threads must be None or an integer >= 1"),
        ({"parallel": "yes"}, "parallel must be one of None, True, False"),
    ],
)
def test_bad_options_are_refused_before_the_checkpoint_is_read(tmp_path, bad, message):
    with pytest.raises(SettingError, match=message):
        evaluate_checkpoint(tmp_path / "missing.pt", **bad)


def test_threads_default_is_the_package_default(monkeypatch):
    torch.set_num_threads(2)
    set_threads(1)
    assert torch.get_num_threads() == 1
    package = types.ModuleType("sorl_torchrl._threads")
    package.default_threads = lambda device="cpu": 2
    monkeypatch.setitem(sys.modules, "sorl_torchrl._threads", package)
    set_threads(None)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    monkeypatch.setitem(sys.modules, "sorl_torchrl._threads", None)  # absent
    set_threads(None)
    assert torch.get_num_threads() == 1  # torch's own setting, left alone


def test_num_envs_threads_and_progress(checkpoint, tmp_path, capsys):
    torch.set_num_threads(2)
    rows = evaluate_checkpoint(
        checkpoint, **GRID, num_envs=2, threads=1, progress=True, out=tmp_path / "a"
    )
    assert torch.get_num_threads() == 2  # restored
    assert [row["num_envs"] for row in rows] == [2, 2]
    assert {row["success_timing"] for row in rows} == {"post"}  # the run's env.success_timing
    assert "(k, N) grid" in capsys.readouterr().err
    # by default: the run's own eval.num_envs
    config = load_checkpoint(checkpoint)["config"]
    rows = evaluate_checkpoint(checkpoint, **GRID, out=tmp_path / "b")
    assert {row["num_envs"] for row in rows} == {config["eval"]["num_envs"]}
    assert "(k, N) grid" not in capsys.readouterr().err


def test_a_run_without_eval_num_envs_is_evaluated_with_one_env(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    del state["config"]["eval"]["num_envs"], state["config"]["eval"]["parallel"]
    older = tmp_path / "older" / "checkpoint.pt"
    save_checkpoint(older, state)
    rows = evaluate_checkpoint(older, **GRID)
    assert {row["num_envs"] for row in rows} == {1}


def test_defaults_are_the_runs_own_grid(checkpoint, tmp_path):
    rows = evaluate_checkpoint(checkpoint, episodes=1, max_episode_steps=3, out=tmp_path / "o")
    # tiny_overrides trains with eval.inference_steps=[1,2] and eval.num_candidates=[1,2]
    cells = {(r["inference_steps"], r["num_candidates"]) for r in rows}
    assert cells == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_a_baseline_checkpoint_is_evaluated_with_its_own_critic(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "iql"
    iql = ["algo=iql", "eval.inference_steps=[1]"]
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10) + iql))
    rows = evaluate_checkpoint(
        run_dir / "checkpoint.pt", episodes=1, max_episode_steps=3, out=tmp_path / "o"
    )
    assert {(r["inference_steps"], r["num_candidates"]) for r in rows} == {(1, 1), (1, 2)}
    # IQL has no steps: an explicit k > 1 is refused, not silently dropped
    with pytest.raises(SettingError, match="inference_steps must be 1"):
        evaluate_checkpoint(run_dir / "checkpoint.pt", inference_steps=[2], episodes=1)


def test_video_episodes_of_the_best_cell(checkpoint, tmp_path, capsys):
    from sorl_torchrl.envs.video import configure_gl_backend

    try:
        configure_gl_backend()
    except RuntimeError as err:
        pytest.skip(f"no OpenGL backend for MuJoCo here: {err}")
    out = tmp_path / "o"
    evaluate_checkpoint(
        checkpoint,
        inference_steps=[1],
        num_candidates=[1],
        episodes=1,
        max_episode_steps=3,
        out=out,
        video_episodes=1,
        video_size=[32, 32],
    )
    (video,) = sorted((out / "videos").glob("*.mp4"))
    assert video.name == "k1_n1_episode0_step10.mp4"
    assert "4 frames" in capsys.readouterr().out  # the reset frame and 3 steps
    with pytest.raises(SettingError, match="video_episodes"):
        evaluate_checkpoint(checkpoint, video_episodes=-1)
