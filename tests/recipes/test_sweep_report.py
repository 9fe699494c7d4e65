"""sorl-results on the run record: statuses, run identities, and the plots' uncertainty."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_aggregate import ENV, base_config, make_complete_sweep, make_run, subdir

from sorl_torchrl.recipes.aggregate import main
from sorl_torchrl.recipes.sweep import aggregate, collect_runs, report
from sorl_torchrl.scaling import scaling_figure


def write_record(run_dir: Path, task: int, seed: int, status: str, **fields) -> Path:
    """A run record as training writes it: ``running`` at start, then its outcome."""
    run_dir.mkdir(parents=True)
    record = {"status": status, "env": ENV, "task": task, "seed": seed}
    record["config"] = base_config(task, seed, run_dir)
    record.update(fields)
    (run_dir / "results.json").write_text(json.dumps(record))
    return run_dir


def bands(axis) -> dict[float, tuple[float, float]]:
    """``{x: (lowest, highest)}`` over the vertices of an axis's shaded bands."""
    out: dict[float, tuple[float, float]] = {}
    for collection in axis.collections:
        for path in collection.get_paths():
            for x, y in path.vertices:
                low, high = out.get(x, (math.inf, -math.inf))
                out[x] = (min(low, y), max(high, y))
    return out


@pytest.fixture
def drawn(monkeypatch) -> dict[str, tuple]:
    """The figure and title of every plot the report writes, by file name."""
    figures = {}
    plot = report.plot_scaling

    def record(rows, path, title=""):
        figures[Path(path).name] = (scaling_figure(rows, title), title)
        return plot(rows, path, title=title)

    monkeypatch.setattr(report, "plot_scaling", record)
    return figures


# --------------------------------------------------------------------------- statuses


def test_record_statuses(tmp_path):
    write_record(tmp_path / "a", 1, 0, "running")
    write_record(tmp_path / "b", 1, 1, "failed", error="RuntimeError: out of memory\ntrace")
    write_record(tmp_path / "c", 1, 2, "diverged", error="non-finite critic loss at step 40")
    write_record(tmp_path / "d", 1, 3, "diverged")
    # a run restarted into the dir of a failure written by an older version: it runs now
    write_record(tmp_path / "e", 1, 4, "running")
    (tmp_path / "e" / "failed.json").write_text(json.dumps({"error": "ValueError: old"}))
    write_record(tmp_path / "f", 1, 5, "queued")
    make_run(tmp_path, "g", 1, 6, grid={(1, 1): 0.5})

    runs = {run.run_dir.name: run for run in collect_runs(tmp_path)}
    status = {name: run.status for name, run in runs.items()}
    assert status == {
        "a": "incomplete",
        "b": "failed",
        "c": "failed",
        "d": "failed",
        "e": "incomplete",
        "f": "incomplete",
        "g": "finished",
    }
    assert [(runs["a"].env, runs["a"].task, runs["a"].seed)] == [(ENV, 1, 0)]
    assert runs["d"].error == "the run record says diverged, with no error"
    assert "'queued'" in runs["f"].error

    env_rows, _, problems = aggregate(list(runs.values()), [(1, 1)], root=tmp_path)
    (row,) = env_rows
    assert (row["mean"], row["n_runs"], row["expected_runs"]) == (50.0, 1, 7)
    assert "failed task1/seed1, task1/seed2, task1/seed3" in row["flags"]
    assert "unfinished task1/seed0, task1/seed4, task1/seed5" in row["flags"]
    assert "failed: `b`: RuntimeError: out of memory" in problems
    assert "failed: `c`: non-finite critic loss at step 40" in problems
    assert sum(line.startswith("incomplete: ") for line in problems) == 3


# --------------------------------------------------------------------------- run identity


def test_run_key_of_the_record_decides_the_variants(tmp_path):
    # same configs; the recorded identities differ in the dataset's content
    for seed in (0, 1):
        for fingerprint, rate in (("aa11", 0.2), ("bb22", 0.6)):
            run_dir = make_run(
                tmp_path, f"{fingerprint}/{subdir(1, seed)}", 1, seed, grid={(1, 1): rate}
            )
            record = json.loads((run_dir / "results.json").read_text())
            record["run_key"] = {
                "env.name": ENV,
                "env.task": 1,
                "seed": seed,
                "data.name": "cube-single-play-v0",
                "data.fingerprint": fingerprint,
            }
            (run_dir / "results.json").write_text(json.dumps(record))
    env_rows, _, problems = aggregate(collect_runs(tmp_path), [(1, 1)])
    assert problems == []
    means = {row["variant"]: (row["mean"], row["n_runs"]) for row in env_rows}
    assert means == {"data.fingerprint=aa11": (20.0, 2), "data.fingerprint=bb22": (60.0, 2)}


def test_a_recorded_run_key_wins_over_the_config(tmp_path):
    # configs differ in q_loss_coef, the recorded identities do not: one variant
    for seed, coef in ((0, 10), (1, 30)):
        run_dir = make_run(tmp_path, subdir(1, seed), 1, seed, grid={(1, 1): 0.5})
        record = json.loads((run_dir / "results.json").read_text())
        record["config"]["env"]["q_loss_coef"] = coef
        record["run_key"] = {"env.name": ENV, "env.task": 1, "seed": seed, "env.q_loss_coef": 10}
        (run_dir / "results.json").write_text(json.dumps(record))
    (row,) = aggregate(collect_runs(tmp_path), [(1, 1)])[0]
    assert (row["variant"], row["n_runs"]) == ("-", 2)


# --------------------------------------------------------------------------- plots


def test_sweep_plot_shades_std_over_seeds_clipped_to_0_100(tmp_path, drawn):
    # seeds 0 and 1 of one task: (1, 1) 0 % and 60 % -> 30 ± 30, band 0..60;
    # (2, 1) 0 % and 0 % -> 0 ± 0; (1, 4) 90 % and 100 % -> 95 ± 5, band 90..100
    rates = {0: {(1, 1): 0.0, (2, 1): 0.0, (1, 4): 0.9}, 1: {(1, 1): 0.6, (2, 1): 0.0, (1, 4): 1.0}}
    for seed, grid in rates.items():
        make_run(tmp_path, subdir(1, seed), 1, seed, grid=grid)
    assert main([str(tmp_path), "--cell", "1,1"]) == 0
    fig, title = drawn[f"scaling_{ENV}.png"]
    assert title == f"{ENV}: 2 runs, mean ± std over seeds"
    left, right = fig.axes
    assert tuple(left.get_ylim()) == (0.0, 100.0)
    lines = {line.get_label(): list(line.get_ydata()) for line in left.get_lines()}
    assert lines["N=1"] == pytest.approx([30.0, 0.0])
    assert lines["N=4"][0] == pytest.approx(95.0) and math.isnan(lines["N=4"][1])
    # right panel, the k=1 line: N=1 -> 0..60, N=4 -> 90..100 (the k=2 line adds 0..0 at N=1)
    got = bands(right)
    assert got[1] == pytest.approx((0.0, 60.0))
    assert got[4] == pytest.approx((90.0, 100.0))


def test_single_seed_plot_shades_a_wilson_interval_over_the_episodes(tmp_path, drawn):
    # one seed, two tasks of 10 episodes: 2 + 4 = 6 successes of 20, mean 30 %;
    # 95 % Wilson interval of 6/20: 14.55 % .. 51.90 %
    make_run(tmp_path, subdir(1, 0), 1, 0, grid={(1, 1): 0.2, (2, 1): 0.0})
    make_run(tmp_path, subdir(2, 0), 2, 0, grid={(1, 1): 0.4, (2, 1): 0.0})
    assert main([str(tmp_path)]) == 0
    fig, title = drawn[f"scaling_{ENV}.png"]
    assert title == f"{ENV}: 2 runs, one seed, Wilson 95 % over episodes"
    left = fig.axes[0]
    (line,) = left.get_lines()
    assert list(line.get_ydata()) == pytest.approx([30.0, 0.0])
    got = bands(left)
    assert got[1] == pytest.approx((14.55, 51.90), abs=0.01)
    assert got[2] == pytest.approx((0.0, 16.11), abs=0.01)  # 0 of 20
    assert tuple(left.get_ylim()) == (0.0, 100.0)


def test_report_holds_each_variants_grid_table(tmp_path):
    make_complete_sweep(tmp_path)
    assert main([str(tmp_path), "--no-plots"]) == 0
    text = (tmp_path / "aggregate" / "results.md").read_text()
    section = text.split("## Test-time scaling", 1)[1].split("## Problems", 1)[0]
    assert f"### {ENV}" in section
    # worked by hand in test_aggregate: (1, 1) 45 ± 5, (4, 16) 55 ± 15, the filler cells 10 ± 0
    assert section.splitlines()[-5:-1] == [
        "|---|---|---|",
        "| 1 | 45.0 ± 5.0 | 10.0 ± 0.0 |",
        "| 2 | 10.0 ± 0.0 | 10.0 ± 0.0 |",
        "| 4 | 10.0 ± 0.0 | 55.0 ± 15.0 |",
    ]
