"""The recipes' loggers: one CSV table per group, no duplicate steps after a resume, TensorBoard
and W&B through TorchRL with their options, and clear errors for missing packages."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from recipe_helpers import compose_train

from sorl_torchrl._validation import SettingsError
from sorl_torchrl.recipes.loggers import (
    LOGGER_SETTINGS,
    WANDB_ID_FILE,
    check_logger_config,
    log_group,
    make_logger,
)

CONF = Path(__file__).parents[2] / "sorl_torchrl" / "recipes" / "conf" / "logger"
CSV = {"backend": "csv", "project": "sorl-torchrl"}
TENSORBOARD = {"backend": "tensorboard", "project": "sorl-torchrl"}
TRAIN_KEYS = ("loss_actor", "loss_qvalue", "q_mean")


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def column(path: Path, name: str) -> list[str]:
    return [row[name] for row in rows(path)]


def train_metrics(step: int, sign: float) -> dict[str, float]:
    """Values that say which run logged them (``sign``) and at which step."""
    return {key: sign * (step + i / 10) for i, key in enumerate(TRAIN_KEYS)}


# ------------------------------------------------------------------------------------- CSV


def test_csv_writes_one_table_per_group(tmp_path):
    logger = make_logger(CSV, tmp_path, "cube-single-play-singletask-task1-v0", None)
    for step in (100, 200):
        log_group(logger, "train", {**train_metrics(step, 1.0), "updates_per_second": 9.5}, step)
        log_group(logger, "val", {"loss_actor": step / 1000}, step)
    log_group(logger, "eval", {"success_k1_n1": 0.25, "success_k2_n1": 0.5}, 200)
    logger.close()

    logs = tmp_path / "logs"
    assert sorted(p.relative_to(logs).as_posix() for p in logs.rglob("*.csv")) == [
        "eval.csv",
        "train.csv",
        "val.csv",
    ]
    train = logs / "train.csv"
    assert header(train) == ["step", *TRAIN_KEYS, "updates_per_second"]
    assert column(train, "step") == ["100", "200"]
    assert [float(v) for v in column(train, "loss_qvalue")] == [100.1, 200.1]
    assert column(train, "updates_per_second") == ["9.5", "9.5"]
    assert rows(logs / "val.csv") == [
        {"step": "100", "loss_actor": "0.1"},
        {"step": "200", "loss_actor": "0.2"},
    ]
    assert rows(logs / "eval.csv") == [
        {"step": "200", "success_k1_n1": "0.25", "success_k2_n1": "0.5"}
    ]


def test_csv_scalars_of_one_step_fill_one_row(tmp_path):
    logger = make_logger(CSV, tmp_path, "demo", None)
    logger.log_scalar("train/loss_actor", 1.0, step=100)
    logger.log_scalar("train/q_mean", 2.0, step=100)
    logger.log_scalar("train/loss_actor", 3.0, step=200)
    logger.log_scalar("lr", 0.5, step=100)  # no group: scalars.csv
    logger.close()  # writes the rows still being filled
    assert rows(tmp_path / "logs" / "train.csv") == [
        {"step": "100", "loss_actor": "1.0", "q_mean": "2.0"},
        {"step": "200", "loss_actor": "3.0", "q_mean": ""},
    ]
    assert rows(tmp_path / "logs" / "scalars.csv") == [{"step": "100", "lr": "0.5"}]


def test_csv_new_metric_widens_the_header(tmp_path):
    logger = make_logger(CSV, tmp_path, "demo", None)
    log_group(logger, "train", {"loss_actor": 1.0}, 100)
    log_group(logger, "train", {"loss_actor": 2.0, "grad_norm_actor": 5.0}, 200)
    logger.close()
    table = tmp_path / "logs" / "train.csv"
    assert header(table) == ["step", "loss_actor", "grad_norm_actor"]
    assert rows(table) == [
        {"step": "100", "loss_actor": "1.0", "grad_norm_actor": ""},
        {"step": "200", "loss_actor": "2.0", "grad_norm_actor": "5.0"},
    ]
    assert sorted(p.name for p in table.parent.iterdir()) == ["train.csv"]  # no temporary file


def test_csv_keeps_torchrl_videos_and_hparams(tmp_path):
    import torch

    logger = make_logger(CSV, tmp_path, "demo", None)
    video = torch.randint(0, 255, (1, 4, 3, 8, 8), dtype=torch.uint8)  # (N, T, C, H, W)
    logger.log_video("eval/rollout", video, step=100)
    logger.log_hparams({"seed": 3, "batch_size": 256})
    logger.close()
    assert torch.equal(torch.load(tmp_path / "logs" / "videos" / "eval" / "rollout_100.pt"), video)
    hparams = (tmp_path / "logs" / "texts" / "hparams0.txt").read_text()
    assert hparams.splitlines() == ["batch_size: 256", "seed: 3"]
    assert not list((tmp_path / "logs").rglob("*.csv"))


def interrupted_run(run_dir: Path, backend: dict) -> None:
    """Log steps 100..1800 (positive values), then stop as a kill would: no close."""
    logger = make_logger(backend, run_dir, "demo", None)
    for step in range(100, 1900, 100):
        log_group(logger, "train", train_metrics(step, 1.0), step)
        if step % 500 == 0:
            log_group(logger, "eval", {"success_k1_n1": step / 10_000}, step)
    logger.experiment.flush()


def resumed_run(run_dir: Path, backend: dict, resume_step: int) -> None:
    """Resume at ``resume_step``; log steps after it up to 2000 (negative values)."""
    logger = make_logger(backend, run_dir, "demo", resume_step)
    for step in range(resume_step + 100, 2100, 100):
        log_group(logger, "train", train_metrics(step, -1.0), step)
        if step % 500 == 0:
            log_group(logger, "eval", {"success_k1_n1": -step / 10_000}, step)
    logger.close()


def test_csv_resume_drops_the_rows_past_the_checkpoint(tmp_path):
    interrupted_run(tmp_path, CSV)
    train_csv = tmp_path / "logs" / "train.csv"
    with open(train_csv, "a") as handle:
        handle.write("19")  # the row of step 1900, cut short by the kill

    resumed_run(tmp_path, CSV, resume_step=1600)

    steps = [int(step) for step in column(train_csv, "step")]
    assert steps == list(range(100, 2100, 100))  # each step once
    by_step = {int(r["step"]): float(r["loss_actor"]) for r in rows(train_csv)}
    assert by_step[1600] == 1600.0  # the interrupted run's, up to the checkpoint
    assert by_step[1700] == -1700.0  # the resumed run's after it
    assert by_step[1800] == -1800.0
    eval_rows = rows(tmp_path / "logs" / "eval.csv")
    assert [(r["step"], r["success_k1_n1"]) for r in eval_rows] == [
        ("500", "0.05"),
        ("1000", "0.1"),
        ("1500", "0.15"),
        ("2000", "-0.2"),
    ]


def test_csv_new_run_starts_empty_tables(tmp_path):
    interrupted_run(tmp_path, CSV)
    logger = make_logger(CSV, tmp_path, "demo", None)  # a new run in the same dir
    log_group(logger, "train", train_metrics(100, -1.0), 100)
    logger.close()
    assert [r["loss_actor"] for r in rows(tmp_path / "logs" / "train.csv")] == ["-100.0"]
    assert not (tmp_path / "logs" / "eval.csv").exists()


def test_csv_refuses_a_metric_named_step(tmp_path):
    logger = make_logger(CSV, tmp_path, "demo", None)
    with pytest.raises(ValueError, match="'step' names the table's step column"):
        log_group(logger, "train", {"step": 3.0}, 100)


# ---------------------------------------------------------------------------- TensorBoard


def event_scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_tensorboard_writes_the_scalars(tmp_path):
    logger = make_logger(TENSORBOARD, tmp_path, "demo", None)
    log_group(logger, "train", train_metrics(100, 1.0), 100)
    log_group(logger, "train", train_metrics(200, 1.0), 200)
    logger.close()
    folder = tmp_path / "logs" / "demo"
    assert list(folder.glob("events.out.tfevents.*"))
    steps, values = zip(*event_scalars(folder, "train/q_mean"))
    assert steps == (100, 200)
    assert values == pytest.approx((100.2, 200.2))


def test_tensorboard_resume_hides_the_steps_past_the_checkpoint(tmp_path):
    interrupted_run(tmp_path, TENSORBOARD)
    resumed_run(tmp_path, TENSORBOARD, resume_step=1600)
    events = event_scalars(tmp_path / "logs" / "demo", "train/loss_actor")
    assert [step for step, _ in events] == list(range(100, 2100, 100))  # each step once
    scalars = dict(events)
    assert scalars[1600] == 1600.0
    assert scalars[1700] == -1700.0
    assert scalars[1800] == -1800.0


# ------------------------------------------------------------------------------------ W&B


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B with every folder in ``tmp_path`` and no server: offline mode."""
    pytest.importorskip("wandb")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "run"


def wandb_config(**options) -> dict:
    return {"backend": "wandb", "project": "sorl-torchrl", "mode": "offline", **options}


def test_wandb_offline_run_gets_the_options_and_keeps_its_id(offline_wandb):
    run_dir = offline_wandb
    options = {"entity": "lab", "group": "cube", "tags": ["sorl", "seed0"], "name": "cube-s0"}
    logger = make_logger(wandb_config(**options), run_dir, "demo", None)
    run = logger.experiment
    stored_id = (run_dir / "logs" / WANDB_ID_FILE).read_text().strip()
    assert (run.id, run.entity, run.group, run.name) == (stored_id, "lab", "cube", "cube-s0")
    assert list(run.tags) == ["sorl", "seed0"]
    assert run.project == "sorl-torchrl"
    log_group(logger, "train", train_metrics(100, 1.0), 100)
    logger.close()
    offline_runs = list((run_dir / "logs" / "wandb").glob(f"offline-run-*-{stored_id}"))
    assert len(offline_runs) == 1
    assert (offline_runs[0] / f"run-{stored_id}.wandb").stat().st_size > 0

    resumed = make_logger(wandb_config(), run_dir, "demo", 100)
    assert resumed.experiment.id == stored_id  # the same W&B run continues
    resumed.close()
    fresh = make_logger(wandb_config(), run_dir, "demo", None)
    assert fresh.experiment.id != stored_id  # a new run is a new W&B run
    assert (run_dir / "logs" / WANDB_ID_FILE).read_text().strip() == fresh.experiment.id
    fresh.close()


def test_wandb_null_options_are_not_passed(offline_wandb, monkeypatch):
    import wandb

    seen: list[dict] = []
    real_init = wandb.init

    def recording_init(**kwargs):
        seen.append(kwargs)
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    config = wandb_config(entity=None, group="cube", tags=None, mode="disabled", dir=None)
    make_logger(config, offline_wandb, "demo", None).close()
    (kwargs,) = seen
    assert "entity" not in kwargs and "tags" not in kwargs
    assert kwargs["group"] == "cube" and kwargs["mode"] == "disabled"
    assert kwargs["name"] == "demo"  # name: null -> the experiment name
    assert kwargs["dir"] == str(offline_wandb / "logs")  # dir: null -> the logs folder
    assert kwargs["resume"] == "allow"


def test_command_line_options_reach_wandb(offline_wandb):
    overrides = ["logger=wandb", "logger.tags=[sorl,paper]", "logger.group=cube"]
    cfg = compose_train([f"run_dir={offline_wandb}", *overrides, "logger.mode=offline"])
    logger = make_logger(cfg.logger, offline_wandb, "demo", None)
    assert (logger.experiment.group, list(logger.experiment.tags)) == ("cube", ["sorl", "paper"])
    logger.close()


# ------------------------------------------------------------------------ settings, errors


@pytest.mark.parametrize(
    "backend, install",
    [
        ("wandb", "pip install 'sorl-torchrl[wandb]'"),
        ("tensorboard", "pip install 'sorl-torchrl[tensorboard]'"),
    ],
)
def test_missing_package_names_the_extra(tmp_path, monkeypatch, backend, install):
    monkeypatch.setitem(sys.modules, backend, None)  # `import <backend>` raises ImportError
    config = {"backend": backend, "project": "sorl-torchrl"}
    with pytest.raises(ImportError, match=f"logger.backend={backend} needs") as err:
        make_logger(config, tmp_path, "demo", None)
    assert f"Install it with: {install}" in str(err.value)
    assert not (tmp_path / "logs" / WANDB_ID_FILE).exists()


@pytest.mark.parametrize(
    "options, line",
    [
        ({"entity": "lab"}, "logger.entity: got 'lab', allowed null unless the backend is wandb"),
        ({"mode": "dryrun"}, "logger.mode: got 'dryrun', allowed one of None, 'online'"),
        ({"tags": "sorl"}, "logger.tags: got 'sorl', allowed a list"),
        ({"entitiy": "lab"}, "logger.entitiy: not a setting (known: backend, project, entity"),
    ],
)
def test_bad_logger_settings_are_named(options, line):
    backend = "csv" if "entity" in options else "wandb"
    with pytest.raises(SettingsError) as err:
        check_logger_config({"backend": backend, "project": "p", **options})
    assert err.value.problems[0].startswith(line), err.value.problems


@pytest.mark.parametrize("option", ["csv", "tensorboard", "wandb"])
def test_logger_yaml_files_hold_every_setting(option):
    values = OmegaConf.to_container(OmegaConf.load(CONF / f"{option}.yaml"))
    assert list(values) == list(LOGGER_SETTINGS)
    assert check_logger_config(values)["backend"] == option
