"""Sweeps: a real multirun through the local (joblib) launcher, relaunch, and launcher configs."""

import json
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from recipe_helpers import CONF_DIR, run_train_command, tiny_overrides

from sorl_torchrl.recipes.aggregate import main as aggregate_main

RUNS = [(task, seed) for task in (1, 2) for seed in (1, 2)]


def multirun(root: Path, sweep: Path, *extra: str) -> subprocess.CompletedProcess:
    overrides = [o for o in tiny_overrides(root, sweep, 20) if not o.startswith("run_dir=")]
    done = run_train_command(
        "--multirun",
        "launcher=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        "env.task=1,2",
        "seed=1,2",
        *overrides,
        *extra,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def run_dir(sweep: Path, task: int, seed: int) -> Path:
    """The job dir, named by its overrides (constant ones included), e.g. ``...env.task=1,...``."""
    (path,) = [
        p
        for p in sweep.iterdir()
        if f",env.task={task}," in f",{p.name}," and f",seed={seed}," in f",{p.name},"
    ]
    return path


def job_log(path: Path) -> str:
    return (path / "train.log").read_text()


def test_local_multirun_relaunch_skips_finished_and_resumes_interrupted(tiny_cube_root, tmp_path):
    sweep = tmp_path / "sweep"
    multirun(tiny_cube_root, sweep)
    stamps = {}
    for task, seed in RUNS:
        results = json.loads((run_dir(sweep, task, seed) / "results.json").read_text())
        assert results["status"] == "finished"
        assert (results["task"], results["seed"], results["num_updates"]) == (task, seed, 20)
        assert results["run_key"]["seed"] == seed and results["run_key"]["env.task"] == task
        stamps[task, seed] = (run_dir(sweep, task, seed) / "checkpoint.pt").stat().st_mtime_ns
    # dir names: the identity overrides, none of the bookkeeping ones
    names = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(names) == 4
    for name in names:
        assert "network=tiny" in name and "batch_size=32" in name
        for bookkeeping in ("threads=", "progress=", "data.root=", "log_interval=", "launcher="):
            assert bookkeeping not in name, name

    # interrupt one run after its checkpoint, then relaunch the same command with other
    # bookkeeping: the same dirs, the finished runs skipped
    interrupted = run_dir(sweep, 2, 1)
    (interrupted / "results.json").unlink()
    multirun(tiny_cube_root, sweep, "log_interval=5", "val_batches=2")
    again = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert again == names
    for task, seed in RUNS:
        path = run_dir(sweep, task, seed)
        assert json.loads((path / "results.json").read_text())["status"] == "finished"
        if (task, seed) == (2, 1):
            assert "Resumed" in job_log(path)
        else:
            assert "already holds a finished run" in job_log(path)
            assert (path / "checkpoint.pt").stat().st_mtime_ns == stamps[task, seed]

    # the sweep's report: 2 tasks x 2 seeds, nothing missing
    out = tmp_path / "report"
    assert aggregate_main([str(sweep), "--out", str(out), "--cell", "1,1", "--strict"]) == 0
    report = (out / "results.md").read_text()
    assert "(4/4)" in report
    rows = (out / "results_env.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("cube-single-play,sorl,-,1,1,")
    assert (out / "scaling_cube-single-play.png").is_file()


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("basic", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
        ("local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"),
    ],
)
def test_launcher_configs_compose(launcher, target):
    cfg = compose_with_hydra(["+experiment=paper", "+sweep=paper", f"launcher={launcher}"])
    assert cfg.hydra.launcher._target_ == target
    assert cfg.num_updates == 1_000_000  # the experiment still applies
    if launcher in ("slurm", "ray"):
        assert cfg.device == "cuda"
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0
        cfg = compose_with_hydra(["launcher=slurm", "hydra.launcher.partition=gpu"])
        assert cfg.hydra.launcher.partition == "gpu"
    if launcher == "ray":
        assert cfg.hydra.launcher.ray.remote.num_gpus == 1


def test_paper_sweep_covers_8_envs_5_tasks_8_seeds():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_with_hydra(["+sweep=paper"])
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweep.dir == "sweeps/paper"
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    values = {o.key_or_group: list(o.sweep_iterator()) for o in parsed}
    envs = sorted(p.stem for p in (Path(CONF_DIR) / "env").glob("*.yaml"))
    assert len(values["env"]) == 8 and set(values["env"]) <= set(envs)
    assert values["env.task"] == [1, 2, 3, 4, 5]
    assert values["seed"] == list(range(1, 9))
