"""The figure of a latency budget: success against latency, the Pareto front, the budgets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sorl_torchrl._io import atomic_save_png

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["budget_figure", "plot_budget"]


def _label(cell: dict[str, Any]) -> str:
    return f"{cell['inference_steps']},{cell['num_candidates']}"


def budget_figure(report: dict[str, Any]) -> Figure:
    """Every cell at its latency (log axis) and success, the front joined, a line per budget.

    Without success data the cells are bars of latency instead. Each chosen cell is starred.

    Args:
        report: what ``sorl-budget`` writes (``cells``, ``front``, ``budgets``, ...).

    Examples:
        >>> cells = [{"inference_steps": k, "num_candidates": 1, "mode": "eager",
        ...           "latency_ms": 0.1 * k, "success_rate": 0.1 * k} for k in (1, 2)]
        >>> report = {"cells": cells, "front": cells, "ranked_by": "success", "statistic": "p99",
        ...           "batch": 1, "machine": {"device": "cpu"},
        ...           "budgets": [{"latency_ms": 0.15, "choice": cells[0]}]}
        >>> [tuple(map(float, budget_figure(report).axes[0].get_ylim()))]
        [(0.0, 100.0)]
    """
    from matplotlib.figure import Figure

    cells, stat = report["cells"], report["statistic"]
    fig = Figure(figsize=(7.5, 4.5))
    axis = fig.subplots()
    by_success = report["ranked_by"] == "success"
    if by_success:
        scored = [c for c in cells if c["success_rate"] is not None]
        axis.scatter(
            [c["latency_ms"] for c in scored],
            [100 * c["success_rate"] for c in scored],
            color="0.6",
            zorder=2,
            label="(k, N)",
        )
        for cell in scored:
            axis.annotate(
                _label(cell),
                (cell["latency_ms"], 100 * cell["success_rate"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        front = report["front"]
        axis.plot(
            [c["latency_ms"] for c in front],
            [100 * c["success_rate"] for c in front],
            marker="o",
            color="C0",
            zorder=3,
            label="Pareto front",
        )
        axis.set_ylim(0.0, 100.0)
        axis.set_ylabel("success (%)")
    else:
        ordered = sorted(cells, key=lambda c: c["latency_ms"])
        axis.barh(range(len(ordered)), [c["latency_ms"] for c in ordered], color="0.6")
        axis.set_yticks(range(len(ordered)), [f"k,N = {_label(c)}" for c in ordered], fontsize=7)
        axis.set_ylabel("cell (no success data)")
    for i, entry in enumerate(report["budgets"]):
        color = f"C{(i + 3) % 10}"
        axis.axvline(
            entry["latency_ms"], color=color, linestyle="--", label=f"{entry['latency_ms']:g} ms"
        )
        choice = entry["choice"]
        if choice is not None and by_success:
            axis.scatter(
                [choice["latency_ms"]],
                [100 * choice["success_rate"]],
                marker="*",
                s=180,
                color=color,
                zorder=4,
            )
    axis.set_xscale("log")
    axis.set_xlabel(f"latency of one step, {stat} (ms)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right" if by_success else "best")
    machine = report["machine"]
    axis.set_title(f"{machine.get('gpu', machine['device'])}, batch {report['batch']}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_budget(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write :func:`budget_figure` of ``report`` to the PNG ``path`` (atomically); returns it."""
    return atomic_save_png(budget_figure(report), path)
