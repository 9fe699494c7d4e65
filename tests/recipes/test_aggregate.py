"""sorl-results: tables and plots of a sweep, checked against numbers worked by hand."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest

from sorl_torchrl.recipes.aggregate import main
from sorl_torchrl.recipes.sweep import aggregate, collect_runs, default_cells

ENV = "cube-single-play"


def base_config(task: int, seed: int, run_dir: Path, **env_overrides) -> dict:
    return {
        "seed": seed,
        "env": {"name": ENV, "task": task, "q_loss_coef": 10, "discount": 0.99, **env_overrides},
        "network": {"actor_cells": [512, 512], "num_critics": 2},
        "loss": {"alpha": 1.0},
        "optim": {"lr": 0.0003},
        "num_updates": 100,
        "batch_size": 256,
        "run_dir": str(run_dir),
        "resume": False,
        "progress": True,
        "threads": 1,
        "device": "cpu",
        "data": {"root": "/data", "workers": 2, "prefetch": None, "num_episodes": None},
        "logger": {"backend": "csv", "project": "p"},
        "eval": {"inference_steps": [1, 2, 4], "num_candidates": [1, 16], "num_episodes": 10},
        "log_interval": 10,
        "val_interval": 20,
        "checkpoint_interval": 0,
        "val_batches": 1,
    }


def make_run(
    sweep: Path,
    subdir: str,
    task: int,
    seed: int,
    *,
    status: str = "finished",
    grid: dict | None = None,
    config_updates: dict | None = None,
    error: str = "ValueError: boom\nTraceback line",
) -> Path:
    """Fabricate one run dir.

    status: "finished" (results.json), "failed" (failed.json), "incomplete" (only
    .hydra/config.yaml) or "corrupt" (a broken results.json next to .hydra/config.yaml).
    """
    run_dir = sweep / subdir
    run_dir.mkdir(parents=True)
    config = base_config(task, seed, run_dir)
    for section, values in (config_updates or {}).items():
        if isinstance(values, dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    if status == "finished":
        rows = [
            {
                "inference_steps": k,
                "num_candidates": n,
                "success_rate": rate,
                "mean_return": -3.0,
                "num_episodes": 10,
                "mean_length": 200.0,
                "env_steps_per_second": 100.0,
                "step": 100,
            }
            for (k, n), rate in (grid or {}).items()
        ]
        results = {
            "status": "finished",
            "dataset_id": f"{ENV}-singletask-task{task}-v0",
            "env": ENV,
            "task": task,
            "seed": seed,
            "num_updates": 100,
            "grid": rows,
            "evaluations": [{"step": 100, "grid": rows}],
            "final_metrics": {"train": {"loss_actor": 0.1}},
            "wall_time_s": 12.5,
            "updates_per_second": 8.0,
            "git": {"commit": "abc", "dirty": False},
            "config": config,
        }
        (run_dir / "results.json").write_text(json.dumps(results))
    elif status == "failed":
        failed = {"status": "failed", "error": error, "traceback": "Traceback ...", "env": ENV}
        failed.update(task=task, seed=seed, config=config)
        (run_dir / "failed.json").write_text(json.dumps(failed))
    else:
        # What Hydra saves: the unresolved config, run_dir an interpolation into Hydra's state.
        hydra_config = copy.deepcopy(config)
        hydra_config["run_dir"] = "${hydra:runtime.output_dir}"
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(json.dumps(hydra_config))  # YAML ⊇ JSON
        if status == "corrupt":
            (run_dir / "results.json").write_text('{"status": "finished", "grid": [')
    return run_dir


def subdir(task: int, seed: int, extra: str = "") -> str:
    return f"{extra}env.task={task},env={ENV},seed={seed}"


def by_cell(rows: list[dict], **match) -> dict:
    out = {}
    for row in rows:
        if all(row[key] == value for key, value in match.items()):
            out[row["k"], row["N"]] = row
    return out


def make_complete_sweep(sweep: Path) -> None:
    """2 tasks x 2 seeds with every (k, N) of a 3 x 2 grid."""
    # success fractions at (1, 1) and (4, 16); the other cells are filler
    rates = {
        (1, 1): {(1, 1): 0.5, (2, 1): 0.3, (1, 2): 0.7, (2, 2): 0.3},
        (4, 16): {(1, 1): 0.9, (2, 1): 0.5, (1, 2): 0.6, (2, 2): 0.2},
    }
    for task in (1, 2):
        for seed in (1, 2):
            grid = {(k, n): 0.1 for k in (1, 2, 4) for n in (1, 16)}
            grid[1, 1] = rates[1, 1][task, seed]
            grid[4, 16] = rates[4, 16][task, seed]
            make_run(sweep, f"group/{subdir(task, seed)}", task, seed, grid=grid)


# --------------------------------------------------------------------------- 1. the statistics


def test_env_and_task_tables_match_hand_computation(tmp_path):
    make_complete_sweep(tmp_path)
    runs = collect_runs(tmp_path)
    assert len(runs) == 4 and {r.status for r in runs} == {"finished"}
    env_rows, task_rows, problems = aggregate(runs, [(1, 1), (4, 16)])
    assert problems == []

    # (1, 1): seed 1 -> (50 + 30) / 2 = 40, seed 2 -> (70 + 30) / 2 = 50
    #         mean 45, population std sqrt((5^2 + 5^2) / 2) = 5
    # (4, 16): seed 1 -> (90 + 50) / 2 = 70, seed 2 -> (60 + 20) / 2 = 40: mean 55, std 15
    rows = by_cell(env_rows, env=ENV)
    assert set(rows) == {(1, 1), (4, 16)}
    assert rows[1, 1]["mean"] == pytest.approx(45.0)
    assert rows[1, 1]["std"] == pytest.approx(5.0)
    assert rows[4, 16]["mean"] == pytest.approx(55.0)
    assert rows[4, 16]["std"] == pytest.approx(15.0)
    for row in rows.values():
        assert row["variant"] == "-"
        assert (row["n_runs"], row["expected_runs"], row["n_seeds"]) == (4, 4, 2)
        assert row["flags"] == ""

    # per task, over seeds: task 1 (1,1): 50, 70 -> 60 ± 10; task 2 (1,1): 30, 30 -> 30 ± 0
    #                       task 1 (4,16): 90, 60 -> 75 ± 15; task 2 (4,16): 50, 20 -> 35 ± 15
    expected = {(1, (1, 1)): (60, 10), (2, (1, 1)): (30, 0), (1, (4, 16)): (75, 15)}
    expected[2, (4, 16)] = (35, 15)
    assert len(task_rows) == 4
    for (task, cell), (mean, std) in expected.items():
        row = by_cell(task_rows, task=task)[cell]
        assert row["mean"] == pytest.approx(mean)
        assert row["std"] == pytest.approx(std, abs=1e-9)
        assert (row["n_seeds"], row["expected_seeds"], row["flags"]) == (2, 2, "")


def test_independent_loop_agrees_on_an_uneven_grid(tmp_path):
    # 3 tasks x 3 seeds; the expectation is computed with a plain loop over the literals
    rates = {
        (1, 0): 0.10,
        (2, 0): 0.40,
        (3, 0): 0.70,
        (1, 1): 0.20,
        (2, 1): 0.20,
        (3, 1): 0.95,
        (1, 2): 0.00,
        (2, 2): 0.55,
        (3, 2): 0.35,
    }
    for (task, seed), rate in rates.items():
        make_run(tmp_path, subdir(task, seed), task, seed, grid={(2, 4): rate})
    env_rows, _, _ = aggregate(collect_runs(tmp_path), [(2, 4)])
    seed_means = []
    for seed in (0, 1, 2):
        seed_means.append(sum(100 * rates[task, seed] for task in (1, 2, 3)) / 3)
    mean = sum(seed_means) / 3
    std = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / 3)
    (row,) = env_rows
    assert row["mean"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(std)
    assert (row["n_runs"], row["expected_runs"]) == (9, 9)


# --------------------------------------------------------------------------- 2. variants


def test_variants_are_not_averaged_together_and_bookkeeping_is_no_variant(tmp_path):
    for coef, rate in ((10, 0.2), (30, 0.6)):
        for seed in (0, 1):
            rate_here = rate + 0.1 * seed  # seeds 0.2/0.3 for coef 10, 0.6/0.7 for coef 30
            make_run(
                tmp_path,
                subdir(1, seed, extra=f"env.q_loss_coef={coef},"),
                1,
                seed,
                grid={(1, 1): rate_here},
                config_updates={
                    "env": {"q_loss_coef": coef},
                    "threads": 1 + seed,  # bookkeeping: must not split groups
                    "device": "cpu" if seed else "cuda",
                    "logger": {"backend": "wandb" if seed else "csv"},
                    "data": {"root": f"/data{seed}", "workers": seed + 1},
                },
            )
    env_rows, task_rows, problems = aggregate(collect_runs(tmp_path), [(1, 1)])
    assert problems == []
    rows = {row["variant"]: row for row in env_rows}
    assert set(rows) == {"env.q_loss_coef=10", "env.q_loss_coef=30"}
    assert [row["variant"] for row in env_rows] == ["env.q_loss_coef=10", "env.q_loss_coef=30"]
    assert rows["env.q_loss_coef=10"]["mean"] == pytest.approx(25.0)  # (20 + 30) / 2
    assert rows["env.q_loss_coef=10"]["std"] == pytest.approx(5.0)
    assert rows["env.q_loss_coef=30"]["mean"] == pytest.approx(65.0)  # (60 + 70) / 2
    assert rows["env.q_loss_coef=30"]["std"] == pytest.approx(5.0)
    assert all(row["n_runs"] == 2 and row["expected_runs"] == 2 for row in env_rows)
    assert len(task_rows) == 2


def test_runs_differing_only_in_bookkeeping_form_one_group(tmp_path):
    for seed in (0, 1):
        make_run(
            tmp_path,
            subdir(1, seed),
            1,
            seed,
            grid={(1, 1): 0.5},
            config_updates={"resume": "auto" if seed else False, "val_interval": 5 + seed},
        )
    (row,) = aggregate(collect_runs(tmp_path), [(1, 1)])[0]
    assert row["variant"] == "-"
    assert (row["mean"], row["n_runs"]) == (pytest.approx(50.0), 2)


# --------------------------------------------------------------------------- 3. problems


def make_problem_sweep(sweep: Path) -> None:
    """Tasks {1, 2} x seeds {0..3}: 4 finished, 1 failed, 1 corrupt, 1 incomplete, 1 absent."""
    make_run(sweep, subdir(1, 0), 1, 0, grid={(1, 1): 0.4})
    make_run(sweep, subdir(2, 0), 2, 0, grid={(1, 1): 0.6})
    make_run(sweep, subdir(1, 1), 1, 1, grid={(1, 1): 0.8})
    make_run(sweep, subdir(2, 1), 2, 1, status="failed", error="ValueError: boom\nmore")
    make_run(sweep, subdir(1, 2), 1, 2, status="incomplete")
    make_run(sweep, subdir(2, 2), 2, 2, status="corrupt")
    make_run(sweep, subdir(1, 3), 1, 3, grid={(1, 1): 0.2})
    # task 2 / seed 3: no run dir at all


def test_failed_incomplete_missing_and_corrupt_runs_are_flagged(tmp_path):
    make_problem_sweep(tmp_path)
    runs = collect_runs(tmp_path)
    status = {(r.task, r.seed): r.status for r in runs}
    assert status == {
        (1, 0): "finished",
        (2, 0): "finished",
        (1, 1): "finished",
        (2, 1): "failed",
        (1, 2): "incomplete",
        (2, 2): "failed",
        (1, 3): "finished",
    }
    corrupt = next(r for r in runs if (r.task, r.seed) == (2, 2))
    assert "results.json" in corrupt.error and corrupt.env == ENV

    env_rows, task_rows, problems = aggregate(runs, [(1, 1)])
    (row,) = env_rows
    # seed 0: (40 + 60) / 2 = 50; seed 1: 80 (task 1 only); seed 2: none; seed 3: 20 (task 1)
    # mean (50 + 80 + 20) / 3 = 50; std sqrt((0 + 900 + 900) / 3) = sqrt(600)
    assert row["mean"] == pytest.approx(50.0)
    assert row["std"] == pytest.approx(math.sqrt(600.0))
    assert (row["n_runs"], row["expected_runs"], row["n_seeds"]) == (4, 8, 3)
    flags = row["flags"]
    assert flags.startswith("incomplete: 4 of 8 runs")
    assert "missing task2/seed3" in flags
    assert "failed task2/seed1, task2/seed2" in flags
    assert "unfinished task1/seed2" in flags

    task2 = by_cell(task_rows, task=2)[1, 1]
    assert task2["mean"] == pytest.approx(60.0) and task2["std"] == pytest.approx(0.0)
    assert (task2["n_seeds"], task2["expected_seeds"]) == (1, 4)
    assert "missing seed3" in task2["flags"] and "failed seed1, seed2" in task2["flags"]

    text = "\n".join(problems)
    failed = [line for line in problems if line.startswith("failed:")]
    assert len(failed) == 2
    assert any(line.endswith(f"{subdir(2, 1)}`: ValueError: boom") for line in failed)
    assert f"incomplete: `{tmp_path / subdir(1, 2)}`" in text
    assert "unreadable run record" in text and "results.json exists but cannot be read" in text
    assert f"missing: {ENV}, variant -, task 2, seed 3" in text
    assert len(problems) == 4


def test_a_grid_without_the_cell_is_flagged(tmp_path):
    make_run(tmp_path, subdir(1, 0), 1, 0, grid={(1, 1): 0.5, (2, 1): 0.5})
    make_run(tmp_path, subdir(1, 1), 1, 1, grid={(1, 1): 0.3})
    env_rows, _, problems = aggregate(collect_runs(tmp_path), [(1, 1), (2, 1)])
    rows = by_cell(env_rows)
    assert rows[1, 1]["mean"] == pytest.approx(40.0) and rows[1, 1]["flags"] == ""
    assert rows[2, 1]["mean"] == pytest.approx(50.0) and rows[2, 1]["n_runs"] == 1
    assert rows[2, 1]["flags"] == "incomplete: 1 of 2 runs; not in grid task1/seed1"
    assert any(line.startswith("not in grid:") for line in problems)


def test_run_discovery_skips_output_dir_and_run_subdirs(tmp_path):
    run = make_run(tmp_path, f"deep/er/{subdir(1, 0)}", 1, 0, grid={(1, 1): 0.5})
    (run / "eval").mkdir()
    (run / "eval" / "config.yaml").write_text("seed: 9\n")
    (tmp_path / "aggregate").mkdir()
    (tmp_path / "aggregate" / "config.yaml").write_text("seed: 9\n")
    runs = collect_runs(tmp_path)
    assert [r.run_dir for r in runs] == [run]


# --------------------------------------------------------------------------- 4. the command


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_main_writes_files_matching_hand_computation(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_complete_sweep(sweep)
    assert main([str(sweep), "--cell", "1,1", "--cell", "4,16"]) == 0
    out_dir = sweep / "aggregate"
    env_csv = read_csv(out_dir / "results_env.csv")
    assert list(env_csv[0]) == [
        "env",
        "algo",
        "variant",
        "k",
        "N",
        "mean",
        "std",
        "n_runs",
        "expected_runs",
        "n_seeds",
        "flags",
    ]
    got = {(r["k"], r["N"]): r for r in env_csv}
    assert float(got["1", "1"]["mean"]) == pytest.approx(45.0)
    assert float(got["1", "1"]["std"]) == pytest.approx(5.0)
    assert float(got["4", "16"]["mean"]) == pytest.approx(55.0)
    assert float(got["4", "16"]["std"]) == pytest.approx(15.0)
    assert got["4", "16"]["n_runs"] == "4" and got["4", "16"]["expected_runs"] == "4"

    task_csv = read_csv(out_dir / "results_task.csv")
    got = {(r["task"], r["k"], r["N"]): r for r in task_csv}
    assert float(got["1", "4", "16"]["mean"]) == pytest.approx(75.0)
    assert float(got["1", "4", "16"]["std"]) == pytest.approx(15.0)
    assert float(got["2", "1", "1"]["mean"]) == pytest.approx(30.0)
    assert got["2", "1", "1"]["n_seeds"] == "2" and got["2", "1", "1"]["expected_seeds"] == "2"

    runs_csv = read_csv(out_dir / "runs.csv")
    assert len(runs_csv) == 4 and {r["status"] for r in runs_csv} == {"finished"}
    assert runs_csv[0]["run_dir"] == f"group/{subdir(1, 1)}"
    assert float(runs_csv[0]["wall_time_s"]) == 12.5

    report = (out_dir / "results.md").read_text()
    assert "4 finished, 0 failed, 0 incomplete" in report
    assert "45.0 ± 5.0 (4/4)" in report and "55.0 ± 15.0 (4/4)" in report
    assert "75.0 ± 15.0 (2/2 seeds)" in report
    assert "No problems" in report
    png = out_dir / f"scaling_{ENV}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "45.0 ± 5.0 (4/4)" in printed and str(png) in printed

    assert main([str(sweep), "--strict", "--no-plots", "--out", str(tmp_path / "o")]) == 0


def test_main_with_problems_reports_them_and_strict_fails(tmp_path):
    make_problem_sweep(tmp_path)
    out_dir = tmp_path / "out"
    assert main([str(tmp_path), "--out", str(out_dir), "--cell", "1,1"]) == 0
    (row,) = read_csv(out_dir / "results_env.csv")
    assert float(row["mean"]) == pytest.approx(50.0)
    assert float(row["std"]) == pytest.approx(math.sqrt(600.0))
    assert (row["n_runs"], row["expected_runs"], row["n_seeds"]) == ("4", "8", "3")
    assert "missing task2/seed3" in row["flags"]
    statuses = sorted(r["status"] for r in read_csv(out_dir / "runs.csv"))
    assert statuses == [
        "failed",
        "failed",
        "finished",
        "finished",
        "finished",
        "finished",
        "incomplete",
    ]
    report = (out_dir / "results.md").read_text()
    assert "4 finished, 2 failed, 1 incomplete" in report
    assert "50.0 ± 24.5 (4/8) †" in report
    assert "ValueError: boom" in report and "No problems" not in report

    assert main([str(tmp_path), "--out", str(out_dir), "--strict", "--no-plots"]) == 1


def test_main_rejects_bad_input(tmp_path, capsys):
    # a user error: exit status 2 and one message on stderr, no traceback
    assert main([str(tmp_path / "does-not-exist")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sorl-results: error: sweep dir") and "does-not-exist" in err
    assert "Traceback" not in err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    assert "no run dirs" in capsys.readouterr().err
    for bad in ("4", "a,b", "0,4", "1,2,3"):
        with pytest.raises(SystemExit) as info:
            main([str(tmp_path), "--cell", bad])
        assert info.value.code == 2


# --------------------------------------------------------------------------- 5. default cells


def test_default_cells(tmp_path):
    grid = {(k, n): 0.5 for k in (1, 2, 8) for n in (1, 4, 32)}
    make_run(tmp_path, subdir(1, 0), 1, 0, grid=grid)
    make_run(tmp_path, subdir(1, 1), 1, 1, grid={(1, 1): 0.5, (16, 64): 0.5})
    make_run(tmp_path, subdir(1, 2), 1, 2, status="failed")
    runs = collect_runs(tmp_path)
    assert default_cells(runs) == [(1, 1), (16, 1), (16, 64)]
    assert default_cells(runs[:1]) == [(1, 1), (8, 1), (8, 32)]

    single = tmp_path / "single"
    make_run(single, subdir(1, 0), 1, 0, grid={(1, 1): 0.25})
    assert default_cells(collect_runs(single)) == [(1, 1)]
    assert main([str(single), "--no-plots"]) == 0
    rows = read_csv(single / "aggregate" / "results_env.csv")
    assert [(r["k"], r["N"], r["mean"]) for r in rows] == [("1", "1", "25.0")]
