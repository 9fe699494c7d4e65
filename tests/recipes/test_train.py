import json
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from recipe_helpers import CONF_DIR, REPO, compose_train, run_train_command, tiny_overrides

from sorl_torchrl.recipes.common import build_modules
from sorl_torchrl.recipes.train import run
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint

ENVS = sorted(p.stem for p in (Path(CONF_DIR) / "env").glob("*.yaml"))


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
    scalars = list((run_dir / "logs").rglob("*.csv"))
    names = {p.stem for p in scalars}
    assert "train_loss_actor" in names or any("loss_actor" in n for n in names), names
    assert any("val" in n for n in names), names


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


@pytest.mark.parametrize("env", ENVS)
def test_every_env_config_composes_and_instantiates(env):
    for task in range(1, 6):
        cfg = compose_train([f"env={env}", f"env.task={task}"])
        actor, critic, loss, update = build_modules(cfg)
        assert actor.observation_dim == cfg.env.observation_dim
        assert loss.q_loss_coef == cfg.env.q_loss_coef and loss.q_agg == cfg.env.q_agg
        assert loss.discount == cfg.env.discount


@pytest.mark.parametrize(
    ("override", "mode", "terms"),
    [
        ([], "default", ("actor", "td")),  # compiled by default
        (["compile=false"], None, ()),
        (["compile=max-autotune-no-cudagraphs"], "max-autotune-no-cudagraphs", ("actor", "td")),
    ],
)
def test_compile_setting_reaches_the_update_step(override, mode, terms):
    _, _, loss, update = build_modules(compose_train(["network=tiny", *override]))
    assert update.compile_mode == mode
    assert loss.compiled_terms == terms


def test_unknown_compile_mode_raises():
    with pytest.raises(RuntimeError, match="Unrecognized mode=fastest"):
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
    with pytest.raises(CheckpointError, match="network.actor_cells"):
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


def test_evaluate_command_on_a_checkpoint(tiny_cube_root, tmp_path):
    from sorl_torchrl.recipes.evaluate import main as evaluate_main

    run_dir = tmp_path / "run"
    run(compose_train(tiny_overrides(tiny_cube_root, run_dir, 10)))
    args = [
        str(run_dir / "checkpoint.pt"),
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
    rows = evaluate_main(args)
    assert len(rows) == 4
    assert (run_dir / "evaluate" / "scaling.csv").is_file()
    # the compiled verifier plays the same seeded episodes with the same actions
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile of VerifierSampler")
        compiled = evaluate_main([*args, "--compile", "--out", str(tmp_path / "compiled")])
    for eager_row, compiled_row in zip(rows, compiled, strict=True):
        assert compiled_row.pop("env_steps_per_second") > 0
        eager_row.pop("env_steps_per_second")
        assert compiled_row == pytest.approx(eager_row, rel=1e-4, abs=1e-5)


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
    assert results["compiled_terms"] == []  # tiny_overrides run eagerly (compile=false)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert results["git"]["commit"] == (head or None)
    assert results["versions"]["torch"] == torch.__version__


def test_auto_resume_continues_an_interrupted_run(tiny_cube_root, tmp_path):
    straight = tmp_path / "straight"
    run(compose_train(tiny_overrides(tiny_cube_root, straight, 40)))
    interrupted = tmp_path / "interrupted"
    run(compose_train(tiny_overrides(tiny_cube_root, interrupted, 20)))
    (interrupted / "results.json").unlink()  # as if killed after the checkpoint at update 20
    resumed = run(compose_train(tiny_overrides(tiny_cube_root, interrupted, 40)))
    assert resumed["resumed_from_update"] == 20
    (a, _), (b, _) = _params(straight), _params(interrupted)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_true_without_a_checkpoint_and_bad_resume_or_precision_value(
    tiny_cube_root, tmp_path
):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(compose_train(tiny_overrides(tiny_cube_root, tmp_path / "r", 5) + ["resume=true"]))
    with pytest.raises(ValueError, match="resume must be true, false or auto"):
        run(compose_train(tiny_overrides(tiny_cube_root, tmp_path / "r", 5) + ["resume=maybe"]))
    with pytest.raises(ValueError, match="matmul_precision must be one of highest"):
        run(
            compose_train(
                tiny_overrides(tiny_cube_root, tmp_path / "p", 5) + ["matmul_precision=low"]
            )
        )


def test_a_failing_run_leaves_failed_json(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run_train_command(
        *tiny_overrides(tiny_cube_root, run_dir, 5),
        "env.task=7",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert done.returncode != 0
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["task"] == 7
    assert "env.task must be 1-5" in failed["error"] and "Traceback" in failed["traceback"]
    assert not (run_dir / "results.json").exists()
