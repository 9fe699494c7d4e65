"""sorl-results with several algorithms: separate rows and columns, never averaged together."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_aggregate import ENV, by_cell, make_run, subdir

from sorl_torchrl.recipes.aggregate import main
from sorl_torchrl.recipes.sweep import aggregate, collect_runs

# success fractions by (task, seed) at each cell
SORL = {
    (1, 1): {(1, 0): 0.2, (2, 0): 0.4, (1, 1): 0.4, (2, 1): 0.6},  # seeds 30, 50: 40 ± 10
    (4, 1): {(1, 0): 0.5, (2, 0): 0.5, (1, 1): 0.5, (2, 1): 0.5},  # 50 ± 0
    (4, 16): {(1, 0): 0.8, (2, 0): 0.8, (1, 1): 0.9, (2, 1): 0.7},  # seeds 80, 80: 80 ± 0
}
FQL = {
    (1, 1): {(1, 0): 0.1, (2, 0): 0.3, (1, 1): 0.3, (2, 1): 0.3},  # seeds 20, 30: 25 ± 5
    (1, 16): {(1, 0): 0.6, (2, 0): 0.6, (1, 1): 0.5, (2, 1): 0.7},  # seeds 60, 60: 60 ± 0
}


def make_algorithm_run(sweep: Path, algo: str | None, task: int, seed: int, rates: dict) -> None:
    """A finished run dir; ``algo=None`` writes a record of before the algo group (SORL)."""
    grid = {cell: by_task_seed[task, seed] for cell, by_task_seed in rates.items()}
    loss = {"alpha": 300.0} if algo == "fql" else {"alpha": 1.0}
    run_dir = make_run(
        sweep, f"{algo}/{subdir(task, seed)}", task, seed, grid=grid, config_updates={"loss": loss}
    )
    if algo is not None:
        record = json.loads((run_dir / "results.json").read_text())
        record["config"]["algo"] = {"name": algo}
        (run_dir / "results.json").write_text(json.dumps(record))


def make_two_algorithm_sweep(sweep: Path) -> None:
    for task in (1, 2):
        for seed in (0, 1):
            # SORL: one record of before the algo group, three that name it
            make_algorithm_run(sweep, "sorl" if seed or task == 2 else None, task, seed, SORL)
            make_algorithm_run(sweep, "fql", task, seed, FQL)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_algorithm_has_its_own_rows_with_its_counts(tmp_path):
    make_two_algorithm_sweep(tmp_path)
    runs = collect_runs(tmp_path)
    assert sorted(run.algo for run in runs) == ["fql"] * 4 + ["sorl"] * 4
    env_rows, task_rows, problems = aggregate(runs, [(1, 1), (4, 16)])
    assert problems == []  # FQL's (4, 16) is its (1, 16): no "not in grid"
    sorl, fql = by_cell(env_rows, algo="sorl"), by_cell(env_rows, algo="fql")
    assert sorted(sorl) == [(1, 1), (4, 16)] and sorted(fql) == [(1, 1), (1, 16)]
    assert (sorl[1, 1]["mean"], sorl[1, 1]["std"], sorl[1, 1]["n_runs"]) == pytest.approx(
        (40.0, 10.0, 4)
    )
    assert (sorl[4, 16]["mean"], sorl[4, 16]["std"]) == pytest.approx((80.0, 0.0))
    assert (fql[1, 1]["mean"], fql[1, 1]["std"], fql[1, 1]["n_runs"]) == pytest.approx(
        (25.0, 5.0, 4)
    )
    assert fql[1, 16]["mean"] == pytest.approx(60.0)
    assert {row["variant"] for row in env_rows} == {"-"}  # other algorithms are no variants
    task1 = by_cell(task_rows, algo="fql", task=1)[1, 1]
    assert (task1["mean"], task1["n_seeds"]) == pytest.approx((20.0, 2))


def test_the_report_puts_the_algorithms_side_by_side(tmp_path):
    make_two_algorithm_sweep(tmp_path)
    assert main([str(tmp_path), "--cell", "1,1", "--cell", "4,16"]) == 0
    out = tmp_path / "aggregate"
    report = (out / "results.md").read_text()
    side = report.split("## Algorithms side by side", 1)[1].split("## Environments", 1)[0]
    assert "| env | sorl | fql |" in side
    first, second = side.split("### k=4, N=16")
    assert f"| {ENV} | 40.0 ± 10.0 (4/4) | 25.0 ± 5.0 (4/4) |" in first
    assert f"| {ENV} | 80.0 ± 0.0 (4/4) | 60.0 ± 0.0 (4/4) at k=1 |" in second
    envs = report.split("## Environments", 1)[1].split("## Per task", 1)[0]
    assert f"| {ENV} | sorl | `-` | 40.0 ± 10.0 (4/4) | 80.0 ± 0.0 (4/4) |" in envs
    assert f"| {ENV} | fql | `-` | 25.0 ± 5.0 (4/4) | 60.0 ± 0.0 (4/4) at k=1 |" in envs
    assert f"### {ENV} · sorl" in report and f"### {ENV} · fql" in report
    assert "No problems" in report

    rows = read_csv(out / "results_env.csv")
    assert [(r["algo"], r["k"], r["N"]) for r in rows] == [
        ("sorl", "1", "1"),
        ("sorl", "4", "16"),
        ("fql", "1", "1"),
        ("fql", "1", "16"),
    ]
    assert {r["algo"] for r in read_csv(out / "runs.csv")} == {"sorl", "fql"}
    for algo in ("sorl", "fql"):
        png = out / f"scaling_{ENV}_{algo}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_of_sorl_alone_names_no_algorithm(tmp_path):
    for task in (1, 2):
        make_algorithm_run(tmp_path, None, task, 0, SORL)
        make_algorithm_run(tmp_path, "sorl", task, 1, SORL)
    assert main([str(tmp_path), "--cell", "1,1"]) == 0
    report = (tmp_path / "aggregate" / "results.md").read_text()
    assert "## Algorithms side by side" not in report
    assert f"### {ENV}\n" in report  # the scaling table's heading: no algorithm in it
    assert (tmp_path / "aggregate" / f"scaling_{ENV}.png").is_file()
    (row,) = read_csv(tmp_path / "aggregate" / "results_env.csv")
    assert (row["algo"], row["n_runs"], float(row["mean"])) == ("sorl", "4", 40.0)


def test_an_env_with_several_algorithms_gets_their_grids_overlaid(tmp_path, monkeypatch):
    from sorl_torchrl.recipes.sweep import report
    from sorl_torchrl.scaling import scaling_figure

    drawn = {}
    plot = report.plot_scaling

    def record(rows, path, title="", series=None):
        drawn[Path(path).name] = scaling_figure(rows, title, series=series)
        return plot(rows, path, title=title, series=series)

    monkeypatch.setattr(report, "plot_scaling", record)
    make_two_algorithm_sweep(tmp_path)
    assert main([str(tmp_path)]) == 0
    left = drawn[f"scaling_{ENV}_algorithms.png"].axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in left.get_lines()}
    assert lines["sorl, N=1"] == pytest.approx([40.0, 50.0])  # k = 1, 4
    assert lines["fql, N=16"][0] == pytest.approx(60.0)  # FQL's one k, on SORL's k axis
    assert sorted(lines) == ["fql, N=1", "fql, N=16", "sorl, N=1", "sorl, N=16"]
