"""sorl-budget: latency per (k, N) joined with the run's success, the front and the choice."""

from __future__ import annotations

import json

import pytest
import torch
from deploy_helpers import run_config, write_checkpoint

from sorl_torchrl.deploy.budget import choose_cell, main, pareto_front, read_success
from sorl_torchrl.recipes.run_record import run_identity

#: The run's final evaluation: success per (k, N), chosen so that more compute is not always
#: better (k=2, N=2 is the most successful cell).
SUCCESS = {(1, 1): 0.2, (1, 2): 0.3, (2, 1): 0.25, (2, 2): 0.6}
GRID = ["--inference-steps", "1", "2", "--num-candidates", "1", "2"]
FAST = ["--repeats", "5", "--warmup", "1", "--modes", "eager"]


def _grid_rows(success=SUCCESS):
    return [
        {"inference_steps": k, "num_candidates": n, "success_rate": rate, "num_episodes": 20}
        for (k, n), rate in success.items()
    ]


@pytest.fixture
def run_dir(tmp_path):
    config = run_config()
    write_checkpoint(tmp_path / "checkpoint.pt", config)
    record = {"status": "finished", "run_key": run_identity(config), "config": config}
    (tmp_path / "results.json").write_text(json.dumps({**record, "grid": _grid_rows()}))
    return tmp_path


def _cells(*points):
    return [{"name": name, "latency_ms": t, "success_rate": s} for name, t, s in points]


def test_front_keeps_the_cells_nothing_beats_on_both_axes():
    cells = _cells(("a", 1.0, 0.3), ("b", 2.0, 0.3), ("c", 2.0, 0.5), ("d", 4.0, 0.4))
    cells += _cells(("e", 5.0, 0.9), ("f", 0.5, None))
    assert [c["name"] for c in pareto_front(cells)] == ["a", "c", "e"]


def test_choice_is_the_most_successful_cell_within_the_budget():
    cells = _cells(("a", 1.0, 0.3), ("b", 2.0, 0.5), ("c", 3.0, 0.5), ("d", 9.0, 0.8))
    assert choose_cell(cells, 5.0, by_success=True)["name"] == "b"  # tie on success: faster
    assert choose_cell(cells, 9.0, by_success=True)["name"] == "d"
    assert choose_cell(cells, 0.9, by_success=True) is None
    assert choose_cell(cells, 5.0, by_success=False)["name"] == "c"  # most of the budget


def test_success_comes_from_the_record_and_another_runs_record_is_refused(run_dir, tmp_path):
    success = read_success(run_dir / "results.json", run_config())
    assert {cell: entry["success_rate"] for cell, entry in success.items()} == SUCCESS
    with pytest.raises(ValueError, match="(?s)records another run.*seed: stored 0, now 3"):
        read_success(run_dir / "results.json", run_config(seed=3))
    running = tmp_path / "running.json"
    running.write_text(json.dumps({"status": "running", "config": run_config()}))
    with pytest.raises(ValueError, match="holds no final"):
        read_success(running)


def test_budget_command_joins_latency_with_success_and_chooses(run_dir, capsys):
    out = run_dir / "out"
    status = main([str(run_dir / "checkpoint.pt"), "--latency-ms", "1e6", *GRID, *FAST,
                   "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert status == 0
    report = json.loads((out / "budget_cpu_batch1.json").read_text())
    assert (out / "budget_cpu_batch1.png").read_bytes()[1:4] == b"PNG"
    assert {(c["inference_steps"], c["num_candidates"]) for c in report["cells"]} == set(SUCCESS)
    for cell in report["cells"]:
        key = (cell["inference_steps"], cell["num_candidates"])
        assert cell["success_rate"] == SUCCESS[key]
        assert 0 < cell["median_ms"] <= cell["p99_ms"] == cell["latency_ms"]
    choice = report["budgets"][0]["choice"]
    assert (choice["inference_steps"], choice["num_candidates"]) == (2, 2)
    assert report["ranked_by"] == "success"
    assert "Budget 1e+06 ms (p99): k=2, N=2 (eager), 60.0 % success" in printed
    assert "Pareto front" in printed and "| k | N | success (%) |" in printed


def test_a_budget_no_cell_meets_says_so_and_names_the_fastest(run_dir, capsys):
    status = main([str(run_dir / "checkpoint.pt"), "--latency-ms", "1e-6", *GRID, *FAST])
    printed = capsys.readouterr().out
    report = json.loads((run_dir / "budget" / "budget_cpu_batch1.json").read_text())
    fastest = min(report["cells"], key=lambda c: c["latency_ms"])
    assert status == 1
    assert report["budgets"][0]["choice"] is None
    assert "Budget 1e-06 ms (p99): no (k, N) meets it on this machine" in printed
    name = f"k={fastest['inference_steps']}, N={fastest['num_candidates']} (eager)"
    assert f"The fastest cell is {name}" in printed


def test_without_success_data_cells_are_ranked_by_latency_alone(run_dir, capsys):
    (run_dir / "results.json").unlink()
    status = main([str(run_dir / "checkpoint.pt"), "--latency-ms", "1e6", *GRID, *FAST])
    printed = capsys.readouterr().out
    report = json.loads((run_dir / "budget" / "budget_cpu_batch1.json").read_text())
    assert status == 0 and report["ranked_by"] == "latency" and report["front"] == []
    assert "No success data" in printed and "ranked by latency alone" in printed
    slowest = max(report["cells"], key=lambda c: c["latency_ms"])
    assert report["budgets"][0]["choice"] == slowest


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--inference-steps", "3"], "power of two"),
        (["--num-candidates", "0"], "--num-candidates must be positive"),
        (["--device", "cuda:9"], "cuda:9"),
        (["--batch", "0"], "--batch must be a positive int"),
        (["--threads", "0"], "threads must be an integer >= 1, got 0"),
        (["--repeats", "0"], "repeats must be >= 1"),
        (["--modes", "cudagraphs"], "cudagraphs needs a CUDA device"),
        (["--results", "missing.json"], "cannot be read"),
    ],
)
def test_bad_input_is_one_clear_line(run_dir, capsys, extra, message):
    if torch.cuda.is_available() and ("cudagraphs" in extra or "cuda:9" in extra):
        pytest.skip("valid on this machine")
    argv = [str(run_dir / "checkpoint.pt"), "--latency-ms", "5", *FAST, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sorl-budget: error:") and message in err and "Traceback" not in err


def test_budget_of_a_non_positive_latency_is_refused(run_dir, capsys):
    assert main([str(run_dir / "checkpoint.pt"), "--latency-ms", "0", *FAST]) == 2
    assert "budgets must be positive" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_mode_is_measured_and_marked(run_dir):
    out = run_dir / "compiled"
    argv = [str(run_dir / "checkpoint.pt"), "--latency-ms", "1e6", "--inference-steps", "2",
            "--num-candidates", "2", "--repeats", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "budget_cpu_batch1.json").read_text())
    modes = {row["mode"]: row["compiled"] for row in report["measurements"]}
    assert modes == {"eager": False, "compiled": True}


def test_cells_without_an_evaluation_are_measured_but_never_chosen(run_dir, capsys):
    grid = ["--inference-steps", "1", "2", "4", "--num-candidates", "2"]
    assert main([str(run_dir / "checkpoint.pt"), "--latency-ms", "1e6", *grid, *FAST]) == 0
    report = json.loads((run_dir / "budget" / "budget_cpu_batch1.json").read_text())
    by_cell = {(c["inference_steps"], c["num_candidates"]): c for c in report["cells"]}
    assert set(by_cell) == {(1, 2), (2, 2), (4, 2)} and by_cell[4, 2]["success_rate"] is None
    choice = report["budgets"][0]["choice"]
    assert (choice["inference_steps"], choice["num_candidates"]) == (2, 2)
    assert "Not evaluated, so never chosen: k=4 N=2." in capsys.readouterr().out
