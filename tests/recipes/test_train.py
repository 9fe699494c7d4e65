import csv
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from recipe_helpers import (
    CONF_DIR,
    REPO,
    compose_train,
    run_train_command,
    sha256_token,
    tiny_overrides,
)

from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sorl_torchrl.recipes import train as train_module
from sorl_torchrl.recipes.common import build_modules
from sorl_torchrl.recipes.evaluate import evaluate_checkpoint
from sorl_torchrl.recipes.train import run

#: The OGBench env configs (``dataset.yaml`` is the generic one for data.dataset=<prefix>:<id>).
ENVS = sorted(p.stem for p in (Path(CONF_DIR) / "env").glob("*.yaml") if p.stem != "dataset")
#: Observation and action sizes of each env's dataset (OGBench's files, see docs/data.md).
SIZES = {
    "antmaze-giant-navigate": (29, 8),
    "antmaze-large-navigate": (29, 8),
    "antsoccer-arena-navigate": (42, 8),
    "cube-double-play": (37, 5),
    "cube-single-play": (28, 5),
    "humanoidmaze-large-navigate": (69, 21),
    "humanoidmaze-medium-navigate": (69, 21),
    "pointmaze-medium-navigate": (2, 2),
    "puzzle-3x3-play": (55, 5),
    "scene-play": (40, 5),
}


def test_end_to_end_through_hydra_entry_point(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train_command(
        *tiny_overrides(tiny_cube_root, run_dir, 200), f"hydra.run.dir={run_dir}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Success (%)" in done.stdout
    assert (run_dir / "checkpoint.pt").is_file()
    assert (run_dir / "config.yaml").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert {(r["inference_steps"], r["num_candidates"]) for r in results["grid"]} == {
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    }
    assert (run_dir / "scaling.png").stat().st_size > 1000
    logs = run_dir / "logs"
    assert sorted(p.name for p in logs.glob("*.csv")) == ["eval.csv", "train.csv", "val.csv"]
    with open(logs / "train.csv", newline="") as handle:
        train = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in train] == list(range(10, 201, 10))
    assert "loss_actor" in train[0] and "updates_per_second" in train[0]


def _params(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return state["loss"], state["optimizers"]


def test_resume_gives_identical_parameters(tiny_cube_root, tmp_path):
    straight = tmp_path / "straight"
    run(compose_train(tiny_overrides(tiny_cube_root, straight, 40)))
    halves = tmp_path / "halves"
    run(compose_train(tiny_overrides(tiny_cube_root, halves, 20)))
    run(compose_train(tiny_overrides(tiny_cube_root, halves, 40) + ["resume=true"]))
    (a, opt_a), (b, opt_b) = _params(straight), _params(halves)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert opt_a["shared"]["state"][0]["step"] == opt_b["shared"]["state"][0]["step"] == 80


def test_every_env_has_a_config_and_its_sizes():
    assert sorted(SIZES) == ENVS


@pytest.mark.parametrize("env", ENVS)
def test_every_env_config_composes_and_instantiates(env):
    for task in range(1, 6):
        cfg = compose_train([f"env={env}", f"env.task={task}", "network=tiny"])
        assert "observation_dim" not in cfg.env and "action_dim" not in cfg.env
        actor, critic, loss, update = build_modules(cfg)
        assert (actor.observation_dim, actor.action_dim) == SIZES[env]
        assert loss.q_loss_coef == cfg.env.q_loss_coef and loss.q_agg == cfg.env.q_agg
        assert loss.discount == cfg.env.discount


def test_env_name_override_takes_the_sizes_of_that_dataset():
    cfg = compose_train(["env=puzzle-3x3-play", "env.name=puzzle-4x4-play", "network=tiny"])
    actor, critic, loss, _ = build_modules(cfg)
    assert (actor.observation_dim, actor.action_dim) == (83, 5)
    obs = torch.zeros(2, 83)
    assert actor.sample(obs, inference_steps=2, noise=torch.zeros(2, 5)).shape == (2, 5)


def test_unknown_env_name_fails_at_the_boundary_listing_the_known_names(tmp_path):
    overrides = tiny_overrides(tmp_path / "no-data", tmp_path / "run", 5)
    with pytest.raises(ValueError, match=r"Unknown env.name 'cube-sextuple-play'") as error:
        run(compose_train([*overrides, "env.name=cube-sextuple-play"]))
    message = str(error.value)
    assert "Known: " in message and "cube-single-play" in message and "scene-play" in message
    assert not (tmp_path / "no-data").exists()  # refused before looking for any data


@pytest.mark.parametrize(
    ("override", "mode"),
    [
        ([], "default"),  # compile=auto: a CPU run of 1M updates is compiled
        (["num_updates=200"], None),  # compile=auto: a short CPU run is eager
        (["num_updates=200", "compile=true"], "default"),
        (["compile=false"], None),
        (["compile=max-autotune-no-cudagraphs"], "max-autotune-no-cudagraphs"),
    ],
)
def test_compile_setting_reaches_the_update_step(override, mode):
    _, _, _, update = build_modules(compose_train(["network=tiny", *override]))
    assert update.compile_mode == mode


def test_unknown_compile_mode_raises():
    with pytest.raises(ValueError, match="compile must be True, False or a torch.compile mode"):
        build_modules(compose_train(["network=tiny", "compile=fastest"]))


def test_paper_experiment_composes():
    cfg = compose_train(["+experiment=paper"])
    assert list(cfg.network.actor_cells) == [512] * 4 and cfg.num_updates == 1_000_000
    OmegaConf.to_container(cfg.loss, resolve=True)


@pytest.mark.parametrize(
    "override", ["env=cube-sextuple-play", "no_such_key=1", "network.no_such_field=3"]
)
def test_bad_config_raises(override):
    with pytest.raises(ConfigCompositionException):
        compose_train([override])


def test_bad_task_raises(tiny_cube_root, tmp_path):
    with pytest.raises(ValueError, match="env.task must be 1-5"):
        run(compose_train(tiny_overrides(tiny_cube_root, tmp_path / "r", 5) + ["env.task=7"]))


def test_incompatible_or_corrupt_checkpoint_is_refused_and_kept(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    ckpt = run_dir / "checkpoint.pt"
    original = ckpt.read_bytes()
    with pytest.raises(
        CheckpointError, match=r"network.actor_cells: stored \[32, 32\], now \[16\]"
    ):
        run(
            compose_train(
                tiny_overrides(tiny_cube_root, run_dir, 20)
                + ["resume=true", "network.actor_cells=[16]"]
            )
        )
    assert ckpt.read_bytes() == original
    with pytest.raises(FileExistsError, match="resume=true"):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 20)))
    assert ckpt.read_bytes() == original
    ckpt.write_bytes(original[: len(original) // 2])
    truncated = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 20) + ["resume=true"]))
    assert ckpt.read_bytes() == truncated


EVAL_ARGS = [
    "--inference-steps",
    "1",
    "4",
    "--num-candidates",
    "1",
    "3",
    "--episodes",
    "1",
    "--max-episode-steps",
    "5",
]
EVAL_KWARGS = dict(inference_steps=[1, 4], num_candidates=[1, 3], episodes=1, max_episode_steps=5)


def test_evaluate_a_checkpoint_eagerly_and_compiled(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    rows = evaluate_checkpoint(run_dir / "checkpoint.pt", **EVAL_KWARGS)
    assert len(rows) == 4
    assert (run_dir / "evaluate" / "scaling.csv").is_file()
    # the compiled verifier plays the same seeded episodes with the same actions
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile of VerifierSampler")
        compiled = evaluate_checkpoint(
            run_dir / "checkpoint.pt", **EVAL_KWARGS, compile=True, out=tmp_path / "compiled"
        )
    for eager_row, compiled_row in zip(rows, compiled, strict=True):
        assert compiled_row.pop("env_steps_per_second") > 0
        eager_row.pop("env_steps_per_second")
        assert compiled_row.pop("success_timing") == eager_row.pop("success_timing") == "post"
        assert compiled_row == pytest.approx(eager_row, rel=1e-4, abs=1e-5)


def test_evaluate_console_entry_point_exits_0(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    console_script = (
        "import sys; from sorl_torchrl.recipes.evaluate import main; "
        "sys.argv[0] = 'sorl-evaluate'; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", console_script, str(run_dir / "checkpoint.pt"), *EVAL_ARGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Success (%)" in done.stdout and "inference_steps" not in done.stderr
    assert (run_dir / "evaluate" / "scaling.json").is_file()


def test_evaluate_refuses_a_checkpoint_of_another_run_or_with_other_shapes(
    tiny_cube_root, tmp_path
):
    first, second = tmp_path / "seed0", tmp_path / "seed1"
    run(compose_train(tiny_overrides(tiny_cube_root, first, 10)))
    run(compose_train(tiny_overrides(tiny_cube_root, second, 10) + ["seed=1"]))
    shutil.copy(first / "checkpoint.pt", second / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="seed: stored 1, now 0"):
        evaluate_checkpoint(second / "checkpoint.pt", **EVAL_KWARGS)
    # a checkpoint whose config builds other networks than its weights: refused by shape
    state = load_checkpoint(first / "checkpoint.pt")
    state["config"]["network"]["actor_cells"] = [16, 16]
    alone = tmp_path / "alone" / "checkpoint.pt"
    save_checkpoint(alone, state)
    with pytest.raises(CheckpointError, match=r"do not fit[\s\S]*checkpoint \(32, \d+\), model"):
        evaluate_checkpoint(alone, **EVAL_KWARGS)
    assert not (tmp_path / "alone" / "evaluate").exists()


def test_rerun_skips_a_finished_run_and_refuses_other_settings(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    first = run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    files = {name: (run_dir / name).read_bytes() for name in ("checkpoint.pt", "results.json")}
    stamps = {name: (run_dir / name).stat().st_mtime_ns for name in files}

    again = run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10) + ["threads=2"]))
    assert again["grid"] == first["grid"] and again["status"] == "finished"
    for name, content in files.items():
        assert (run_dir / name).read_bytes() == content
        assert (run_dir / name).stat().st_mtime_ns == stamps[name], f"{name} was rewritten"

    with pytest.raises(FileExistsError, match=r"seed: stored 0, now 5"):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10) + ["seed=5"]))
    for name, content in files.items():
        assert (run_dir / name).read_bytes() == content


def test_results_file_records_the_run(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 20) + ["seed=3", "env.task=4"]))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished"
    assert (results["env"], results["task"], results["seed"]) == ("cube-single-play", 4, 3)
    assert results["config"]["num_updates"] == 20 and results["config"]["env"]["task"] == 4
    assert [e["step"] for e in results["evaluations"]] == [20]
    assert results["evaluations"][-1]["grid"] == results["grid"]
    best = max(results["grid"], key=lambda r: r["success_rate"])
    assert results["final_metrics"]["best"]["success_rate"] == best["success_rate"]
    assert set(results["final_metrics"]["train"]) >= {"loss_actor", "loss_qvalue"}
    assert set(results["final_metrics"]["val"]) >= {"loss_actor", "fm_loss"}
    assert results["wall_time_s"] > 0 and results["updates_per_second"] > 0
    assert results["compile_mode"] is None and not results["compiled"]  # compile=false
    assert results["resumed_from_update"] is None
    assert [(s["from_update"], s["to_update"]) for s in results["segments"]] == [(0, 20)]
    # the run's identity: its settings, seed and data, no bookkeeping
    train_file = tiny_cube_root / "cube-single-play-v0.npz"
    key = results["run_key"]
    assert key["seed"] == 3 and key["env.task"] == 4 and key["batch_size"] == 32
    assert key["network.actor_cells"] == [32, 32] and key["num_updates"] == 20
    assert key["data.dataset_name"] == "cube-single-play-v0"
    assert key["data.fingerprint"] == sha256_token(tiny_cube_root)
    assert not any(k.startswith(("threads", "logger", "data.root", "run_dir")) for k in key)
    dataset = results["dataset"]
    assert dataset["id"] == "cube-single-play-singletask-task4-v0" == results["dataset_id"]
    assert dataset["size_bytes"] == train_file.stat().st_size
    assert dataset["fingerprint"] == key["data.fingerprint"]
    assert dataset["transitions"] == 3 * 119  # the last row of each episode has no successor
    assert dataset["provenance"]["generator"] == "sorl-torchrl"
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert results["git"]["commit"] == (head or None)
    assert results["versions"]["torch"] == torch.__version__
    assert load_checkpoint(run_dir / "checkpoint.pt")["run_key"] == key


def test_the_record_says_running_while_training_and_failed_after_an_error(
    tiny_cube_root, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    seen = {}

    def broken_validation(*args, **kwargs):
        seen.update(json.loads((run_dir / "results.json").read_text()))
        raise RuntimeError("injected at validation")

    monkeypatch.setattr(train_module, "validation_losses", broken_validation)
    overrides = tiny_overrides(tiny_cube_root, run_dir, 40) + ["checkpoint_interval=10"]
    with pytest.raises(RuntimeError, match="injected"):
        run(compose_train(overrides))
    assert seen["status"] == "running" and seen["run_key"]["seed"] == 0
    assert seen["dataset"]["fingerprint"] == sha256_token(tiny_cube_root)
    failed = json.loads((run_dir / "results.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"] == "RuntimeError: injected at validation"
    assert "broken_validation" in failed["traceback"]
    assert failed["run_key"] == seen["run_key"] and failed["last_checkpoint_update"] == 10
    assert not (run_dir / "failed.json").exists()
    # validation at update 20 comes before that update's checkpoint: the run resumes at 10
    monkeypatch.undo()
    resumed = run(compose_train(overrides))
    assert resumed["status"] == "finished" and resumed["resumed_from_update"] == 10


def test_auto_resume_continues_an_interrupted_run(tiny_cube_root, tmp_path):
    straight = tmp_path / "straight"
    run(compose_train(tiny_overrides(tiny_cube_root, straight, 40)))
    interrupted = tmp_path / "interrupted"
    run(compose_train(tiny_overrides(tiny_cube_root, interrupted, 20)))
    (interrupted / "results.json").unlink()  # as if killed after the checkpoint at update 20
    resumed = run(compose_train(tiny_overrides(tiny_cube_root, interrupted, 40)))
    assert resumed["resumed_from_update"] == 20
    assert [(s["from_update"], s["to_update"]) for s in resumed["segments"]] == [(0, 20), (20, 40)]
    assert resumed["run_key"]["num_updates"] == 40
    (a, _), (b, _) = _params(straight), _params(interrupted)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=5", "seed: stored 0, now 5"),
        ("batch_size=16", "batch_size: stored 32, now 16"),
        ("optim.lr=0.001", "optim.lr: stored 0.0001, now 0.001"),
        ("data.root", "data.fingerprint: stored '{old}', now '{new}'"),
        ("num_updates=5", "cannot shorten"),
    ],
)
def test_resume_refuses_another_seed_batch_size_or_dataset(
    tiny_cube_root, other_cube_root, tmp_path, override, message
):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    if override == "data.root":
        override = f"data.root={other_cube_root}"
        message = message.format(
            old=sha256_token(tiny_cube_root), new=sha256_token(other_cube_root)
        )
    files = {name: (run_dir / name).read_bytes() for name in ("checkpoint.pt", "results.json")}
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10) + [override, "resume=true"]))
    (run_dir / "results.json").unlink()  # interrupted: resume=auto continues, with the same check
    with pytest.raises(CheckpointError, match="now|cannot shorten"):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10) + [override]))
    assert (run_dir / "checkpoint.pt").read_bytes() == files["checkpoint.pt"]
    assert not (run_dir / "results.json").exists()  # a refused resume claims nothing


def test_a_finished_run_on_other_data_is_not_skipped(tiny_cube_root, other_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    stored = (run_dir / "results.json").read_bytes()
    with pytest.raises(FileExistsError, match="data.fingerprint: stored") as error:
        run(compose_train(tiny_overrides(other_cube_root, run_dir, 10)))
    assert sha256_token(other_cube_root) in str(error.value)
    assert (run_dir / "results.json").read_bytes() == stored


def _as_written_before_the_run_identity(run_dir):
    """Rewrite a run dir's checkpoint and record in the format of earlier versions."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    config = state.pop("config")
    for key in ("run_key", "dataset", "segments"):
        state.pop(key)
    config["data"] = {k: v for k, v in config["data"].items() if k in ("root", "workers")}
    config["env"].update(observation_dim=28, action_dim=5)
    state["config"] = config
    state["model_config"] = {group: config[group] for group in ("env", "network", "loss", "optim")}
    save_checkpoint(run_dir / "checkpoint.pt", state)
    record = json.loads((run_dir / "results.json").read_text())
    for key in ("run_key", "dataset", "segments"):
        record.pop(key)
    record["config"] = config
    (run_dir / "results.json").write_text(json.dumps(record))


def test_runs_written_before_the_run_identity_are_skipped_and_resumed(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    _as_written_before_the_run_identity(run_dir)
    stored = (run_dir / "results.json").read_bytes()
    again = run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    assert again["status"] == "finished" and (run_dir / "results.json").read_bytes() == stored
    with pytest.raises(CheckpointError, match="seed: stored 0, now 4"):
        run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 20) + ["seed=4", "resume=true"]))
    extended = run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 20) + ["resume=true"]))
    assert extended["resumed_from_update"] == 10 and extended["status"] == "finished"
    assert [(s["from_update"], s["to_update"]) for s in extended["segments"]] == [
        (None, 10),
        (10, 20),
    ]
    assert extended["run_key"]["data.fingerprint"] == sha256_token(tiny_cube_root)


def test_a_prioritized_sampler_gets_the_td_errors():
    from types import SimpleNamespace

    from tensordict import TensorDict
    from torchrl.data.replay_buffers import PrioritizedSampler, RandomSampler

    calls = []
    loss = SimpleNamespace(tensor_keys=SimpleNamespace(priority="td_error"))
    uniform = SimpleNamespace(sampler=RandomSampler())
    assert train_module.priority_writer(uniform, loss) is None
    # a PrioritizedSampler instance without its segment trees (absent from CPU builds)
    buffer = SimpleNamespace(
        sampler=PrioritizedSampler.__new__(PrioritizedSampler),
        priority_key=None,
        update_tensordict_priority=calls.append,
    )
    write = train_module.priority_writer(buffer, loss)
    assert buffer.priority_key == "td_error"
    batch = TensorDict({"td_error": torch.ones(4), "index": torch.arange(4)}, [4])
    write(batch)
    assert calls == [batch]
    with pytest.raises(RuntimeError, match="wrote no 'td_error'"):
        write(TensorDict({"index": torch.arange(4)}, [4]))


def test_resume_true_without_a_checkpoint_and_bad_resume_or_precision_value(
    tiny_cube_root, tmp_path
):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(compose_train(tiny_overrides(tiny_cube_root, tmp_path / "r", 5) + ["resume=true"]))
    bad = ["resume=maybe", "matmul_precision=low"]
    with pytest.raises(ValueError) as error:
        run(compose_train(tiny_overrides(tiny_cube_root, tmp_path / "p", 5) + bad))
    assert "resume: got 'maybe', allowed one of True, False, 'auto'" in str(error.value)
    assert "matmul_precision: got 'low', allowed one of 'highest'" in str(error.value)
    assert not (tmp_path / "p").exists()


def test_a_failing_run_leaves_a_failed_record_and_a_bad_setting_writes_nothing(tmp_path):
    run_dir, no_data = tmp_path / "run", tmp_path / "no-data"
    done = run_train_command(
        *tiny_overrides(no_data, run_dir, 5), "env.task=4", f"hydra.run.dir={tmp_path / 'hydra'}"
    )
    assert done.returncode != 0
    failed = json.loads((run_dir / "results.json").read_text())
    assert failed["status"] == "failed" and failed["task"] == 4
    assert failed["error"].startswith("FileNotFoundError: Dataset file")
    assert "Traceback" in failed["traceback"]
    assert not (run_dir / "failed.json").exists()
    # a setting out of range is refused before the run touches its dir
    with pytest.raises(ValueError, match="env.task must be 1-5"):
        run(compose_train(tiny_overrides(no_data, tmp_path / "bad", 5) + ["env.task=7"]))
    assert not (tmp_path / "bad").exists()


def test_a_half_dataset_is_never_replaced_and_the_message_gives_the_real_command(
    tiny_cube_root, tmp_path
):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(tiny_cube_root / "cube-single-play-v0.npz", root)  # the -val file is missing
    overrides = tiny_overrides(root, tmp_path / "run", 5) + ["data.generate_if_missing=true"]
    with pytest.raises(FileNotFoundError) as error:
        run(compose_train(overrides + ["seed=3", "data.num_episodes=4"]))
    message = str(error.value)
    assert "cube-single-play-v0.npz exists but cube-single-play-v0-val.npz does not" in message
    assert (
        f"`sorl-data generate cube-single-play-v0 --out-dir {root} --seed 3 --num-episodes 4 "
        "--overwrite`" in message
    )
    assert "Pass --overwrite" not in message and "overwrite=True" not in message
    assert sorted(p.name for p in root.iterdir()) == ["cube-single-play-v0.npz"]


def test_an_unknown_on_divergence_value_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="on_divergence: got 'ignore', allowed one of 'stop'"):
        run(compose_train(tiny_overrides(tmp_path, tmp_path / "run", 5) + ["on_divergence=ignore"]))
    assert not (tmp_path / "run").exists()
