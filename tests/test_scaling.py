"""The (k, N) grid: its evaluation (seeds, envs, checks, progress), table and plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sorl_torchrl.envs import make_ogbench_env
from sorl_torchrl.modules import QEnsemble, ShortcutActor
from sorl_torchrl.scaling import (
    evaluate_scaling_grid,
    format_scaling_table,
    markdown_table,
    plot_scaling,
    scaling_figure,
    success_interval,
    wilson_interval,
)

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_by_definition(successes: int, trials: int) -> tuple[float, float]:
    """The p with |p_hat - p| = z sqrt(p (1 - p) / n): roots of a quadratic in p."""
    p_hat = successes / trials
    roots = np.roots([trials + Z95**2, -(2 * trials * p_hat + Z95**2), trials * p_hat**2])
    return float(min(roots.real)), float(max(roots.real))


def grid(rate, k_values=(1, 2, 4), n_values=(1, 4), **extra) -> list[dict]:
    return [
        {"inference_steps": k, "num_candidates": n, "success_rate": rate(k, n), **extra}
        for k in k_values
        for n in n_values
    ]


def bands(axis) -> dict[float, tuple[float, float]]:
    """``{x: (lowest, highest)}`` over the vertices of an axis's shaded bands."""
    out: dict[float, tuple[float, float]] = {}
    for collection in axis.collections:
        for path in collection.get_paths():
            for x, y in path.vertices:
                low, high = out.get(x, (math.inf, -math.inf))
                out[x] = (min(low, y), max(high, y))
    return out


# --------------------------------------------------------------------------- the interval


def test_wilson_interval_matches_published_values():
    # tabulated 95 % Wilson score intervals for n = 10
    assert wilson_interval(3, 10) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


@pytest.mark.parametrize(("successes", "trials"), [(8, 20), (1, 50), (37, 40), (1, 1)])
def test_wilson_interval_solves_its_defining_equation(successes, trials):
    assert wilson_interval(successes, trials) == pytest.approx(
        wilson_by_definition(successes, trials), abs=1e-12
    )


def test_wilson_interval_narrows_with_lower_confidence():
    low95, high95 = wilson_interval(8, 20)
    low50, high50 = wilson_interval(8, 20, confidence=0.5)
    assert low95 < low50 < 0.4 < high50 < high95


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 0), "trials"), ((11, 10), "successes"), ((-1, 10), "successes"), ((1, 10, 1.0), "conf")],
)
def test_wilson_interval_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)


def test_success_interval_kinds():
    # std: mean ± std, clipped to [0, 1]
    assert success_interval({"success_rate": 0.1, "success_std": 0.3}) == pytest.approx((0, 0.4))
    assert success_interval({"success_rate": 0.95, "success_std": 0.1}) == pytest.approx(
        (0.85, 1.0)
    )
    # wilson: round(rate * episodes) successes of episodes
    row = {"success_rate": 0.3, "num_episodes": 10, "success_std": 0.0}
    assert success_interval(row, "wilson") == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert success_interval(row) == pytest.approx((0.3, 0.3))  # auto: std first
    del row["success_std"]
    assert success_interval(row) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert success_interval({"success_rate": 0.3}) is None
    assert success_interval(row, "none") is None
    assert success_interval({"success_rate": math.nan, "num_episodes": 10}) is None


def test_success_interval_rejects_bad_input():
    with pytest.raises(ValueError, match="band must be one of"):
        success_interval({"success_rate": 0.5}, "sem")
    with pytest.raises(ValueError, match="success_std"):
        success_interval({"success_rate": 0.5}, "std")
    with pytest.raises(ValueError, match="num_episodes"):
        success_interval({"success_rate": 0.5, "num_episodes": 0}, "wilson")


# --------------------------------------------------------------------------- the table


def test_table_shows_mean_std_and_gaps():
    rows = [
        {"inference_steps": 1, "num_candidates": 1, "success_rate": 0.45, "success_std": 0.05},
        {"inference_steps": 1, "num_candidates": 16, "success_rate": 0.55, "success_std": 0.15},
        {"inference_steps": 4, "num_candidates": 16, "success_rate": math.nan},
        {"inference_steps": 8, "num_candidates": 1, "success_rate": 0.125},
    ]
    assert format_scaling_table(rows).splitlines() == [
        "| k \\ N | 1 | 16 |",
        "|---|---|---|",
        "| 1 | 45.0 ± 5.0 | 55.0 ± 15.0 |",
        "| 4 | - | - |",
        "| 8 | 12.5 | - |",
    ]


def test_markdown_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        markdown_table(["a", "b", "c"], [["1", "2"]])


# --------------------------------------------------------------------------- the plot


def test_all_zero_run_stays_on_a_0_100_axis_with_its_wilson_band():
    rows = grid(lambda k, n: 0.0, num_episodes=10)
    fig = scaling_figure(rows)
    upper = 100 * 0.2775  # Wilson 95 % upper bound of 0 successes in 10
    for axis, xs in zip(fig.axes, ((1, 2, 4), (1, 4))):
        assert tuple(axis.get_ylim()) == (0.0, 100.0)
        for line in axis.get_lines():
            assert list(line.get_ydata()) == [0.0] * len(xs)
        got = bands(axis)
        assert set(got) == set(xs)
        for low, high in got.values():
            assert low == pytest.approx(0.0) and high == pytest.approx(upper, abs=0.01)


def test_std_band_is_clipped_to_0_100():
    # mean 10 ± 30 at N=1 (band 0..40), mean 95 ± 10 at N=4 (band 85..100)
    rows = grid(lambda k, n: 0.1 if n == 1 else 0.95, k_values=(1, 2))
    for row in rows:
        row["success_std"] = 0.3 if row["num_candidates"] == 1 else 0.1
    left, right = scaling_figure(rows, band="std").axes
    # the right panel has one line per k; at x = N the band spans that N's range
    got = bands(right)
    assert got[1] == pytest.approx((0.0, 40.0))
    assert got[4] == pytest.approx((85.0, 100.0))
    low, high = zip(*bands(left).values())
    assert min(low) == pytest.approx(0.0) and max(high) == pytest.approx(100.0)
    assert tuple(left.get_ylim()) == (0.0, 100.0)


def test_missing_points_are_gaps_and_band_none_draws_no_band():
    rows = [
        r for r in grid(lambda k, n: 0.5) if (r["inference_steps"], r["num_candidates"]) != (2, 4)
    ]
    left, _ = scaling_figure(rows, band="none").axes
    lines = {line.get_label(): list(line.get_ydata()) for line in left.get_lines()}
    assert lines["N=1"] == [50.0, 50.0, 50.0]
    assert lines["N=4"][0] == 50.0 and math.isnan(lines["N=4"][1]) and lines["N=4"][2] == 50.0
    assert bands(left) == {}


def test_plot_scaling_writes_a_png_atomically(tmp_path):
    path = tmp_path / "eval" / "scaling.png"
    rows = grid(lambda k, n: k * n / 16, num_episodes=4)
    assert plot_scaling(rows, path, title="cube, step 10") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["scaling.png"]  # no temporary left
    with pytest.raises(ValueError, match="band must be one of"):
        plot_scaling(rows, tmp_path / "other.png", band="sem")
    assert not (tmp_path / "other.png").exists()


# --------------------------------------------------------------------------- the grid

MAZE = "pointmaze-medium-navigate-singletask-v0"


def _nets():
    torch.manual_seed(0)
    return ShortcutActor(2, 2, num_cells=[8]), QEnsemble(2, 2, num_cells=[8])


def _factory(calls: list | None = None, **kwargs):
    def build(num_envs):
        if calls is not None:
            calls.append(num_envs)
        return make_ogbench_env(MAZE, num_envs=num_envs, **kwargs)

    return build


GRID = dict(inference_steps=[1, 2], num_candidates=[1, 3], num_episodes=3, max_episode_steps=4)


def test_grid_builds_its_envs_once_and_records_timing_and_num_envs():
    calls = []
    rows = evaluate_scaling_grid(*_nets(), _factory(calls), num_envs=2, seed=5, **GRID)
    assert calls == [2]  # one build for all four cells
    assert [(r["inference_steps"], r["num_candidates"]) for r in rows] == [
        (1, 1),
        (1, 3),
        (2, 1),
        (2, 3),
    ]
    for row in rows:
        assert row["success_timing"] == "post" and row["num_envs"] == 2
        assert row["num_episodes"] == 3 and row["mean_length"] == 4.0
    pre = evaluate_scaling_grid(*_nets(), _factory(success_timing="pre"), **GRID)
    assert {row["success_timing"] for row in pre} == {"pre"}
    assert {row["num_envs"] for row in pre} == {1}


def test_grid_leaves_the_random_streams_alone():
    # the verifier draws noise from torch's RNG and OGBench's resets from numpy's global one
    actor, critic = _nets()
    torch.manual_seed(3)
    np.random.seed(3)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    evaluate_scaling_grid(actor, critic, _factory(), num_envs=2, **GRID)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (np.random.get_state()[1] == numpy_state).all()


def test_a_given_env_is_used_as_it_is_and_left_open():
    env = make_ogbench_env(MAZE, num_envs=2)
    rows = evaluate_scaling_grid(*_nets(), env, **GRID)
    assert {row["num_envs"] for row in rows} == {2} and not env.is_closed
    with pytest.raises(ValueError, match="num_envs=3, but the env given has batch size"):
        evaluate_scaling_grid(*_nets(), env, num_envs=3, **GRID)
    env.close()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"inference_steps": [3]}, "inference_steps[0] must be a positive power of two"),
        ({"inference_steps": []}, "inference_steps must be a non-empty list, got []"),
        ({"num_candidates": [0]}, "num_candidates[0] must be an integer >= 1, got 0"),
        ({"num_episodes": 0}, "num_episodes must be an integer >= 1, got 0"),
        ({"num_envs": 0}, "num_envs must be None or an integer >= 1"),
        ({"seed": -1}, "seed must be an integer in [0, 4294967295], got -1"),
        ({"max_episode_steps": 0}, "max_episode_steps must be None or an integer >= 1"),
        ({"q_agg": "max"}, "q_agg must be one of 'mean', 'min', got 'max'"),
        ({"progress": 1}, "progress must be one of True, False, got 1"),
    ],
)
def test_a_bad_grid_is_refused_before_any_env_is_built(bad, message):
    calls = []
    with pytest.raises(ValueError) as info:
        evaluate_scaling_grid(*_nets(), _factory(calls), **{**GRID, **bad})
    assert str(info.value).startswith(message)
    assert calls == []


def test_progress_bar_counts_the_grid_episodes(capsys):
    evaluate_scaling_grid(*_nets(), _factory(), num_envs=2, progress=True, **GRID)
    err = capsys.readouterr().err
    assert "(k, N) grid" in err and "12/12" in err  # 4 cells x 3 episodes
    evaluate_scaling_grid(*_nets(), _factory(), progress=False, **GRID)
    assert "(k, N) grid" not in capsys.readouterr().err
