"""Pieces of the training loop: priority feedback, precompilation, metric names, run history.

Used by :mod:`sorl_torchrl.recipes.train` (the offline loop) and
:mod:`sorl_torchrl.recipes.online` (the online one).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tensordict import TensorDictBase
from torchrl.data.replay_buffers import PrioritizedSampler
from torchrl.objectives.common import LossModule
from torchrl.record.loggers import Logger
from tqdm import tqdm

from sorl_torchrl._io import atomic_write_text
from sorl_torchrl.data import OGBenchExperienceReplay
from sorl_torchrl.envs.video import record_videos

__all__ = [
    "VIDEO_KEYS",
    "earlier_segments",
    "grid_metrics",
    "precompile_update",
    "priority_writer",
    "record_evaluation_videos",
    "stored_evaluations",
    "stored_videos",
]

#: The ``eval`` keys of the videos (``eval.video_episodes: 0``: none).
VIDEO_KEYS = ("video_episodes", "video_size", "video_fps")

log = logging.getLogger("sorl.train")


def priority_writer(
    buffer: OGBenchExperienceReplay, loss: LossModule
) -> Callable[[TensorDictBase], None] | None:
    """What feeds the TD errors back to a prioritized sampler (``None`` for other samplers).

    The update step writes each sample's TD error into the batch under
    ``loss.tensor_keys.priority``; the buffer reads it there and the batch's ``index``.
    """
    if not isinstance(buffer.sampler, PrioritizedSampler):
        return None
    key = getattr(loss.tensor_keys, "priority", None)
    if key is None:
        raise ValueError(
            f"The sampler is prioritized but {type(loss).__name__} reports no TD errors: "
            "use a uniform sampler with this algorithm."
        )
    buffer.priority_key = key

    def write(batch: TensorDictBase) -> None:
        if key not in batch.keys(include_nested=True):
            raise RuntimeError(
                f"The sampler is prioritized but the update step wrote no {key!r} into the "
                "batch: use a SORLUpdateStep that writes the TD error, or a uniform sampler."
            )
        buffer.update_tensordict_priority(batch)

    return write


def precompile_update(
    update: Any, buffer: OGBenchExperienceReplay, batch_size: int, progress: bool
) -> float:
    """Compile every graph of a compiled update step now, saying so; returns the seconds.

    The batch is the buffer's first ``batch_size`` rows (read by index: the sampler's random
    stream is untouched), so the graphs have the shapes and device of training.
    """
    if update.compile_mode is None:
        return 0.0
    choices = getattr(update.loss, "bptt_step_choices", None)  # SORL's step counts k
    what = "" if choices is None else f" for k={','.join(map(str, choices))}"
    log.info(
        "Compiling the update%s (torch.compile mode %r: every loss, forward and backward, one "
        "graph per step count k it draws). The first run on a machine takes minutes on a CPU; "
        "later runs reuse inductor's on-disk cache. compile=false skips it.",
        what,
        update.compile_mode,
    )
    batch = buffer[torch.arange(batch_size) % len(buffer)]
    total = None if choices is None else len(choices)
    with tqdm(total=total, desc="compiling", unit="k", disable=not progress) as bar:

        def compiled(k: int) -> None:
            bar.set_postfix(k=k)
            bar.update()

        seconds = update.precompile(batch, progress=compiled)
    state = "compiled" if update.is_compiled else f"fell back to eager ({update.compile_failures})"
    log.info("The update %s in %.1f s.", state, seconds)
    return seconds


def grid_metrics(rows: list[dict], metric: str = "success_rate") -> dict[str, float]:
    """``{"success_k<k>_n<N>": rate}`` (or ``return_k<k>_n<N>``) of a grid, for ``log_group``."""
    name = "success" if metric == "success_rate" else "return"
    return {f"{name}_k{r['inference_steps']}_n{r['num_candidates']}": r[metric] for r in rows}


def earlier_segments(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The training segments (``from_update``, ``to_update``) behind a checkpoint's weights.

    A checkpoint of an earlier version does not list them: one segment up to its update,
    of unknown start, stands for them.
    """
    if state is None:
        return []
    unknown = {"from_update": None, "to_update": state["step"], "started_at": None}
    return list(state.get("segments") or [unknown])


def stored_evaluations(run_dir: Path) -> list[dict]:
    """Every (k, N) evaluation written under ``run_dir/eval``, by step (survives a resume)."""
    evaluations = []
    for path in (run_dir / "eval").glob("scaling_step*.json"):
        step = int(path.stem.removeprefix("scaling_step"))
        evaluations.append({"step": step, "grid": json.loads(path.read_text())})
    return sorted(evaluations, key=lambda e: e["step"])


def record_evaluation_videos(
    cfg: DictConfig,
    modules: Any,
    data: Any,
    rows: list[dict],
    step: int,
    run_dir: Path,
    logger: Logger | None = None,
) -> list[dict]:
    """``eval.video_episodes`` rendered episodes of the grid's best ``(k, N)`` at ``step``.

    Written as MP4 files under ``run_dir/videos`` (and to a TensorBoard or W&B ``logger``),
    described in ``run_dir/eval/videos_step<step>.json``. The episodes are seeded
    ``eval.seed + i``, as the grid's; recording leaves the random stream as it was. Only an
    OGBench env renders here: for another dataset the videos are skipped with a warning.
    """
    episodes = int(cfg.eval.get("video_episodes") or 0)
    if not episodes or not rows:
        return []
    if data.description.get("prefix") != "ogbench":
        log.warning("eval.video_episodes=%d: only OGBench envs are rendered; no video.", episodes)
        return []
    best = max(rows, key=lambda row: row[data.metric])
    k, n = best["inference_steps"], best["num_candidates"]
    factory = functools.partial(data.env_factory, max_episode_steps=cfg.eval.max_episode_steps)
    videos = record_videos(
        modules.sampler(k, n),
        factory,
        num_episodes=episodes,
        seed=int(cfg.eval.seed),
        out_dir=run_dir / "videos",
        step=step,
        logger=logger,
        size=tuple(cfg.eval.video_size),
        fps=int(cfg.eval.video_fps),
        tag=f"k{k}_n{n}_episode",
    )
    for video in videos:
        video.update(step=step, inference_steps=k, num_candidates=n, path=str(video["path"]))
    atomic_write_text(run_dir / "eval" / f"videos_step{step}.json", json.dumps(videos, indent=2))
    seconds = sum(v["seconds"] for v in videos) / max(1, sum(v["frames"] for v in videos))
    log.info(
        "%d video(s) of k=%d, N=%d at step %d in %s (%.3f s per frame).",
        len(videos),
        k,
        n,
        step,
        run_dir / "videos",
        seconds,
    )
    return videos


def stored_videos(run_dir: Path) -> list[dict]:
    """Every video described under ``run_dir/eval`` (``videos_step*.json``), by step."""
    videos: list[dict] = []
    for path in sorted((run_dir / "eval").glob("videos_step*.json")):
        videos += json.loads(path.read_text())
    return sorted(videos, key=lambda video: video["step"])
