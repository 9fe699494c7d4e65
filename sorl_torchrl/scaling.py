"""Test-time scaling: success over a grid of inference steps ``k`` and verifier sizes ``N``.

The grid's table (:func:`format_scaling_table`) and plot (:func:`plot_scaling`) are the only
ones in the package: a single run's grid and a sweep's mean over seeds are drawn by the same
code. Success is always shown in percent on a 0-100 axis, each point with its uncertainty:
a Wilson interval over the point's episodes for one run, ± std over seeds for an aggregate.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, get_args

from torch import nn
from torchrl.envs import EnvBase
from tqdm.auto import tqdm

from sorl_torchrl._io import atomic_save_png, atomic_write, atomic_write_text
from sorl_torchrl._validation import FLAG, Each, Settings
from sorl_torchrl.envs import evaluate_policy, evaluation_env
from sorl_torchrl.envs.evaluate import EVALUATION_SETTINGS, env_attribute
from sorl_torchrl.modules import QEnsemble
from sorl_torchrl.modules.best_of_n import sampling_policy
from sorl_torchrl.modules.critic import QAggregation
from sorl_torchrl.modules.verifier import VERIFIER_SETTINGS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FIELDS",
    "GRID_SETTINGS",
    "Band",
    "evaluate_scaling_grid",
    "format_scaling_table",
    "format_success",
    "markdown_table",
    "plot_scaling",
    "scaling_figure",
    "success_interval",
    "wilson_interval",
    "write_scaling_results",
]

#: Columns of a scaling-grid row, in file order.
FIELDS = (
    "inference_steps",
    "num_candidates",
    "success_rate",
    "mean_return",
    "num_episodes",
    "mean_length",
    "env_steps_per_second",
    "success_timing",
    "num_envs",
)

#: The checks of :func:`evaluate_scaling_grid`'s settings; the recipes' ``eval.*`` checks
#: (:mod:`sorl_torchrl.recipes.config_checks`) and ``sorl-evaluate`` use the same ones.
GRID_SETTINGS = Settings(
    "evaluate_scaling_grid",
    {
        "inference_steps": Each(VERIFIER_SETTINGS["inference_steps"]),
        "num_candidates": Each(VERIFIER_SETTINGS["num_candidates"]),
        **EVALUATION_SETTINGS,
        "q_agg": VERIFIER_SETTINGS["q_agg"],
        "progress": FLAG,
    },
)

#: How a plot shades each point's uncertainty (see :func:`success_interval`).
Band = Literal["auto", "std", "wilson", "none"]


def evaluate_scaling_grid(
    actor: nn.Module,
    critic: QEnsemble | None,
    env: EnvBase | Callable[..., EnvBase],
    *,
    inference_steps: Sequence[int] = (1, 2, 4, 8),
    num_candidates: Sequence[int] = (1, 4, 16),
    num_episodes: int = 10,
    seed: int = 0,
    q_agg: QAggregation = "mean",
    max_episode_steps: int | None = None,
    num_envs: int | None = None,
    progress: bool = False,
    compile: bool | str = False,
) -> list[dict[str, Any]]:
    """Evaluate the verifier policy for every ``(k, N)`` on the same seeded episodes.

    Every argument is checked first (:data:`GRID_SETTINGS`), before any env is built. The
    envs are built once for the whole grid (from a factory) and each cell plays the
    episodes of :func:`~sorl_torchrl.envs.evaluate_policy`: episode ``i`` is seeded with
    ``seed + i`` whatever ``num_envs``. The verifier draws its noise from torch's RNG for
    the whole batch of envs, so a grid is reproducible for one ``(seed, num_envs)``; another
    ``num_envs`` plays the same start states with other noise. Each cell's episodes run in a
    fork of torch's RNG (:func:`~sorl_torchrl.envs.evaluate_policy`), and the envs leave
    numpy's global RNG alone, so evaluating inside a training run does not change the run's
    random streams.

    Args:
        actor: the trained policy: SORL's (or flow BC's) shortcut actor, or any policy
            without inference steps (FQL, IQL, ReBRAC: ``inference_steps`` must be ``[1]``).
        critic: the trained Q ensemble (the verifier's scorer); ``None`` for a model
            without one (``num_candidates`` must be ``[1]``). Each cell's policy is
            :func:`~sorl_torchrl.modules.best_of_n.sampling_policy`, built before any env.
        env: a TorchRL env (e.g. :func:`~sorl_torchrl.envs.make_ogbench_env`; used as it is,
            left open) or a factory ``env(num_envs=n)`` that builds ``n`` envs, e.g.
            ``functools.partial(make_ogbench_env, env_id, parallel=True)`` (built once for
            the grid, closed after; see :func:`~sorl_torchrl.envs.evaluation_env`).
        inference_steps: the ``k`` values (powers of two).
        num_candidates: the ``N`` values.
        num_episodes: episodes per grid point.
        seed: evaluation seed (same episodes for every grid point).
        q_agg: ensemble aggregation of the verifier.
        max_episode_steps: episode cap (default: the env's horizon).
        num_envs: envs stepped side by side, one batched policy call for all of them: what
            a factory builds (None: 1); with an env, None or its batch size.
        progress: show a progress bar over the grid's episodes (on stderr).
        compile: run the verifier compiled (``VerifierSampler(compile=...)``): one graph
            per ``(k, N)``, worth its compilation time when episodes are many or long.

    Returns:
        One row per ``(k, N)`` with the fields of :data:`FIELDS`: ``success_timing`` is the
        env's (``None`` for an env that does not say), ``num_envs`` the envs stepped
        side by side.

    Raises:
        SettingError: one argument is out of range (``SettingsError``: several).

    Examples:
        >>> import functools
        >>> from sorl_torchrl.envs import make_ogbench_env
        >>> from sorl_torchrl.modules import QEnsemble, ShortcutActor
        >>> actor, critic = ShortcutActor(2, 2, num_cells=[8]), QEnsemble(2, 2, num_cells=[8])
        >>> factory = functools.partial(make_ogbench_env, "pointmaze-medium-navigate-singletask-v0")
        >>> rows = evaluate_scaling_grid(actor, critic, factory, inference_steps=[1, 2],
        ...                              num_candidates=[2], num_episodes=2, num_envs=2,
        ...                              max_episode_steps=5)
        >>> [(r["inference_steps"], r["num_candidates"], r["num_envs"]) for r in rows]
        [(1, 2, 2), (2, 2, 2)]
        >>> rows[0]["success_timing"], rows[0]["mean_length"]
        ('post', 5.0)
        >>> evaluate_scaling_grid(actor, critic, factory, inference_steps=[3])
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: inference_steps[0] must be a positive power ...
    """
    settings = GRID_SETTINGS.check(
        {
            "inference_steps": inference_steps,
            "num_candidates": num_candidates,
            "num_episodes": num_episodes,
            "seed": seed,
            "q_agg": q_agg,
            "max_episode_steps": max_episode_steps,
            "num_envs": num_envs,
            "progress": progress,
        }
    )
    cells = [(k, n) for k in settings["inference_steps"] for n in settings["num_candidates"]]
    policies = {
        (k, n): sampling_policy(actor, critic, k, n, q_agg=q_agg, compile=compile) for k, n in cells
    }
    rows = []
    networks = [net for net in (actor, critic) if net is not None]
    was_training = [net.training for net in networks]
    for net in networks:
        net.eval()
    try:
        with (
            evaluation_env(env, settings["num_envs"]) as built,
            tqdm(
                total=len(cells) * num_episodes,
                desc="(k, N) grid",
                unit="episode",
                disable=not progress,
                mininterval=1.0,
            ) as bar,
        ):
            timing = env_attribute(built, "success_timing")
            for k, n in cells:
                bar.set_postfix_str(f"k={k} N={n}", refresh=False)
                result = evaluate_policy(
                    policies[k, n],
                    built,
                    num_episodes=num_episodes,
                    seed=seed,
                    max_episode_steps=settings["max_episode_steps"],
                    on_episodes=bar.update,
                )
                rows.append(
                    {
                        "inference_steps": k,
                        "num_candidates": n,
                        "success_rate": result.success_rate,
                        "mean_return": result.mean_return,
                        "num_episodes": result.num_episodes,
                        "mean_length": sum(result.episode_lengths) / result.num_episodes,
                        "env_steps_per_second": result.env_steps_per_second,
                        "success_timing": timing,
                        "num_envs": built.batch_size.numel(),
                    }
                )
    finally:
        for net, mode in zip(networks, was_training):
            net.train(mode)
    return rows


def write_scaling_results(
    rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, stem: str = "scaling"
) -> tuple[Path, Path]:
    """Write ``rows`` as ``<stem>.json`` and ``<stem>.csv`` in ``out_dir``; returns both paths.

    Examples:
        >>> import tempfile
        >>> rows = [{"inference_steps": 1, "num_candidates": 1, "success_rate": 0.5,
        ...          "mean_return": -3.0, "num_episodes": 2, "mean_length": 10.0,
        ...          "env_steps_per_second": 100.0}]
        >>> json_path, csv_path = write_scaling_results(rows, tempfile.mkdtemp())
        >>> csv_path.read_text().splitlines()[0].split(",")[:3]
        ['inference_steps', 'num_candidates', 'success_rate']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / f"{stem}.json", out / f"{stem}.csv"
    atomic_write_text(json_path, json.dumps(list(rows), indent=2))
    with atomic_write(csv_path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def format_success(rate: float | None, std: float | None = None) -> str:
    """A success fraction as a percentage with one decimal, ``-`` when there is none.

    Args:
        rate: success fraction in ``[0, 1]``; ``None`` or NaN for no value.
        std: its standard deviation (a fraction too), shown as ``± std`` when given.

    Examples:
        >>> format_success(0.45), format_success(0.45, 0.05), format_success(float("nan"))
        ('45.0', '45.0 ± 5.0', '-')
    """
    if rate is None or math.isnan(rate):
        return "-"
    text = f"{100 * rate:.1f}"
    return text if std is None or math.isnan(std) else f"{text} ± {100 * std:.1f}"


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table from its header cells and body rows (cells already formatted).

    Raises:
        ValueError: if a body row has another number of cells than the header.

    Examples:
        >>> print(markdown_table(["k", "success"], [["1", "40.0"], ["8", "55.0"]]))
        | k | success |
        |---|---|
        | 1 | 40.0 |
        | 8 | 55.0 |
    """
    for row in body:
        if len(row) != len(header):
            raise ValueError(
                f"markdown_table: a row has {len(row)} cells, the header {len(header)}: {row!r}"
            )
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _grid_axes(rows: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], dict]:
    """Sorted ``k`` values, sorted ``N`` values and the rows by ``(k, N)``."""
    by_cell = {(r["inference_steps"], r["num_candidates"]): r for r in rows}
    steps = sorted({k for k, _ in by_cell})
    cands = sorted({n for _, n in by_cell})
    return steps, cands, by_cell


def format_scaling_table(rows: Sequence[dict[str, Any]], metric: str = "success_rate") -> str:
    r"""A Markdown table of success rate (%) with ``k`` as rows and ``N`` as columns.

    A row that carries ``success_std`` (a sweep's mean over seeds) is shown as ``mean ± std``;
    a grid point without a row, or with a NaN success rate, as ``-``. ``metric="mean_return"``
    tabulates the mean episode return instead (envs that report no success).

    Examples:
        >>> rows = [{"inference_steps": k, "num_candidates": n, "success_rate": k * n / 32}
        ...         for k in (1, 2) for n in (1, 4)]
        >>> print(format_scaling_table(rows))
        | k \ N | 1 | 4 |
        |---|---|---|
        | 1 | 3.1 | 12.5 |
        | 2 | 6.2 | 25.0 |
        >>> mean = [{"inference_steps": 1, "num_candidates": 1, "success_rate": 0.45,
        ...          "success_std": 0.05}]
        >>> print(format_scaling_table(mean).splitlines()[-1])
        | 1 | 45.0 ± 5.0 |
        >>> print(format_scaling_table([{**mean[0], "mean_return": 812.5}], "mean_return"))
        | k \ N | 1 |
        |---|---|
        | 1 | 812.5 |
    """
    steps, cands, by_cell = _grid_axes(rows)
    body = []
    for k in steps:
        cells = [by_cell.get((k, n)) for n in cands]
        if metric == "mean_return":
            texts = [f"{row['mean_return']:.1f}" if row else "-" for row in cells]
        else:
            texts = [
                format_success(row["success_rate"], row.get("success_std")) if row else "-"
                for row in cells
            ]
        body.append([str(k), *texts])
    return markdown_table(["k \\ N", *map(str, cands)], body)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial success fraction.

    Unlike the normal approximation ``p ± z sqrt(p (1 - p) / n)`` it stays inside ``[0, 1]``
    and is not empty at 0 or ``n`` successes.

    Args:
        successes: episodes that succeeded.
        trials: episodes in all (at least 1).
        confidence: coverage of the interval, in ``(0, 1)``.

    Returns:
        ``(low, high)`` as fractions.

    Raises:
        ValueError: if ``trials < 1``, ``successes`` is outside ``[0, trials]`` or
            ``confidence`` is outside ``(0, 1)``.

    Examples:
        >>> low, high = wilson_interval(3, 10)
        >>> round(low, 4), round(high, 4)
        (0.1078, 0.6032)
    """
    if trials < 1:
        raise ValueError(f"wilson_interval: trials must be at least 1, got {trials}.")
    if not 0 <= successes <= trials:
        raise ValueError(
            f"wilson_interval: successes must be between 0 and trials={trials}, got {successes}."
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / trials, z * z
    scale = 1.0 + z2 / trials
    center = (p + z2 / (2 * trials)) / scale
    half = z / scale * math.sqrt(p * (1.0 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, center - half), min(1.0, center + half)


def success_interval(row: dict[str, Any], band: Band = "auto") -> tuple[float, float] | None:
    """The uncertainty range of a grid row's success fraction, inside ``[0, 1]``.

    Args:
        row: a grid row (``success_rate``, and ``num_episodes`` or ``success_std``).
        band: ``"wilson"``: the 95 % Wilson interval of ``round(success_rate * num_episodes)``
            successes in ``num_episodes`` (one run); ``"std"``: ``success_rate ± success_std``
            clipped to ``[0, 1]`` (a mean over seeds); ``"auto"``: ``"std"`` when the row has
            ``success_std``, else ``"wilson"`` when it has ``num_episodes``, else none;
            ``"none"``: no range.

    Returns:
        ``(low, high)`` as fractions, or ``None`` for no range (or no success rate).

    Raises:
        ValueError: for an unknown ``band``, or a row that lacks the field ``band`` needs.

    Examples:
        >>> success_interval({"success_rate": 0.1, "success_std": 0.3})
        (0.0, 0.4)
        >>> [round(x, 4) for x in success_interval({"success_rate": 0.3, "num_episodes": 10})]
        [0.1078, 0.6032]
    """
    if band not in get_args(Band):
        raise ValueError(f"band must be one of {get_args(Band)}, got {band!r}.")
    rate = row.get("success_rate")
    if band == "auto":
        has_std = row.get("success_std") is not None
        band = "std" if has_std else "wilson" if row.get("num_episodes") else "none"
    if band == "none" or rate is None or math.isnan(rate):
        return None
    if band == "std":
        std = row.get("success_std")
        if std is None or math.isnan(std):
            raise ValueError(f"band='std' needs a 'success_std' in every row, got {row!r}.")
        return max(0.0, rate - std), min(1.0, rate + std)
    episodes = row.get("num_episodes")
    if not episodes:
        raise ValueError(
            f"band='wilson' needs a positive 'num_episodes' in every row, got {row!r}."
        )
    return wilson_interval(round(rate * episodes), int(episodes))


def scaling_figure(
    rows: Sequence[dict[str, Any]],
    title: str = "",
    *,
    band: Band = "auto",
    series: str | None = None,
) -> Figure:
    """Success (%) vs ``k`` (one line per ``N``) and vs ``N`` (one line per ``k``).

    With ``series``, the rows are several grids told apart by that field (``"algo"``: one
    grid per algorithm), drawn on the same axes: each line is labelled ``<value>, N=<n>``
    (``<value>, k=<k>``), and the axes span every grid's ``k`` and ``N``.

    Each line carries a shaded band, its points' :func:`success_interval`; grid points
    without a row, or with a NaN success rate, are gaps. The success axis is 0-100.

    Args:
        rows: grid rows (see :func:`success_interval` for the fields the band reads).
        title: figure title.
        band: the uncertainty drawn (see :func:`success_interval`).
        series: a row field whose values are overlaid grids (``None``: one grid).

    Returns:
        A ``matplotlib.figure.Figure`` (not registered with ``pyplot``).

    Examples:
        >>> rows = [{"inference_steps": k, "num_candidates": n, "success_rate": 0.0,
        ...          "num_episodes": 10} for k in (1, 2) for n in (1, 4)]
        >>> tuple(float(y) for y in scaling_figure(rows).axes[0].get_ylim())
        (0.0, 100.0)
        >>> both = rows + [{**r, "algo": "fql"} for r in rows if r["inference_steps"] == 1]
        >>> both[:4] = [{**r, "algo": "sorl"} for r in both[:4]]
        >>> [line.get_label() for line in scaling_figure(both, series="algo").axes[0].lines]
        ['sorl, N=1', 'sorl, N=4', 'fql, N=1', 'fql, N=4']
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    if band not in get_args(Band):
        raise ValueError(f"band must be one of {get_args(Band)}, got {band!r}.")
    steps, cands, _ = _grid_axes(rows)
    grids: dict[Any, list] = {}
    for row in rows:
        grids.setdefault(None if series is None else row.get(series), []).append(row)
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2, sharey=True)
    for name, grid in grids.items():
        prefix = "" if series is None else f"{name}, "
        grid_steps, grid_cands, by_cell = _grid_axes(grid)
        for axis, xs, lines, x_of, label in (
            (left, steps, grid_cands, lambda x, line: (x, line), "N"),
            (right, cands, grid_steps, lambda x, line: (line, x), "k"),
        ):
            for line in lines:
                points = [by_cell.get(x_of(x, line)) for x in xs]
                _draw_line(axis, xs, points, band, f"{prefix}{label}={line}")
    left.set_ylabel("success (%)")
    left.set_ylim(0.0, 100.0)
    for axis, ticks, label in (
        (left, steps, "inference steps k"),
        (right, cands, "verifier candidates N"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(t) for t in ticks])
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _draw_line(
    axis: Any, xs: Sequence[int], points: Sequence[dict[str, Any] | None], band: Band, label: str
) -> None:
    """One line of success (%) with its shaded band (gaps where a point has no value)."""
    nan = float("nan")
    rates = [p["success_rate"] if p and p.get("success_rate") is not None else nan for p in points]
    ranges = [success_interval(p, band) if p else None for p in points]
    (line,) = axis.plot(xs, [100 * r for r in rates], marker="o", label=label, clip_on=False)
    low = [100 * r[0] if r else nan for r in ranges]
    high = [100 * r[1] if r else nan for r in ranges]
    if any(r is not None for r in ranges):
        axis.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_scaling(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    *,
    band: Band = "auto",
    series: str | None = None,
) -> Path:
    """Write :func:`scaling_figure` of ``rows`` to the PNG ``path`` (atomically); returns it.

    Examples:
        >>> import tempfile
        >>> rows = [{"inference_steps": 1, "num_candidates": 1, "success_rate": 0.3,
        ...          "num_episodes": 10}]
        >>> path = plot_scaling(rows, Path(tempfile.mkdtemp()) / "scaling.png")
        >>> path.read_bytes()[1:4]
        b'PNG'
    """
    return atomic_save_png(scaling_figure(rows, title, band=band, series=series), path)
