r"""Evaluate a checkpoint over the (k, N) test-time-compute grid, and record rollout videos.

    sorl-evaluate runs/cube-single-play-task2/seed0/checkpoint.pt \
        --inference-steps 1 2 4 8 --num-candidates 1 4 16 64 --episodes 50 --num-envs 4
    sorl-evaluate runs/fql/cube-single-play-task2/seed0/checkpoint.pt --video-episodes 1

Any algorithm's checkpoint (``algo=sorl|fql|iql|rebrac|bc``): the grid is best-of-N with the
algorithm's own critic; by default it is the run's own ``eval.inference_steps`` and
``eval.num_candidates``. ``--video-episodes V`` renders V episodes of the grid's best cell as
MP4 files under ``<out>/videos`` (:func:`~sorl_torchrl.envs.video.record_videos`).

Before evaluating, the checkpoint is checked against its run dir's ``results.json`` (when there
is one): its run identity must be the one recorded there, up to the run's length and
evaluation settings. The networks are built from the checkpoint's config, with the sizes of
its dataset, and every weight must load with its shape. The grid's envs are stepped
``--num-envs`` at a time (default: the run's ``eval.num_envs``, as training evaluated), with a
progress bar on stderr. Writes ``<out>/scaling.json``, ``.csv`` and ``.png`` (default
``<checkpoint dir>/evaluate``) and prints the success table.
``sorl-evaluate`` is ``python -m sorl_torchrl.recipes.evaluate``.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import torch
from omegaconf import OmegaConf

from sorl_torchrl._cli import EXIT_STATUS_HELP, add_debug_option, console_command
from sorl_torchrl._validation import FLAG, Choice, Number, Settings, check_compile, check_device
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint
from sorl_torchrl.envs import make_ogbench_env
from sorl_torchrl.envs.ogbench import SuccessTiming
from sorl_torchrl.envs.video import VIDEO_SETTINGS, record_videos
from sorl_torchrl.recipes.algorithms import build_algorithm
from sorl_torchrl.recipes.common import dataset_id, load_weights, trained_updates
from sorl_torchrl.recipes.config_checks import EVAL_SETTINGS
from sorl_torchrl.recipes.run_record import (
    read_record,
    record_identity,
    resume_differences,
)
from sorl_torchrl.recipes.runtime import Runtime
from sorl_torchrl.scaling import (
    evaluate_scaling_grid,
    format_scaling_table,
    plot_scaling,
    write_scaling_results,
)


def check_against_record(state: dict, checkpoint: Path) -> None:
    """Refuse a checkpoint whose run identity is not the one its run dir's record holds.

    Raises:
        CheckpointError: The record names another run; every difference is listed (``stored``:
            the record, ``now``: the checkpoint).
    """
    try:
        record = read_record(checkpoint.parent)
    except FileExistsError as err:
        warnings.warn(f"{err} The checkpoint is evaluated without that check.", stacklevel=2)
        return
    if record is None or not (record.get("run_key") or record.get("config")):
        return
    where = f"The record {checkpoint.parent / 'results.json'}"
    diffs = resume_differences(record_identity(record), record_identity(state), where)
    if diffs:
        raise CheckpointError(
            f"{checkpoint} does not belong to the run recorded in its dir (stored: the record, "
            "now: the checkpoint):\n  "
            + "\n  ".join(diffs)
            + "\nThe checkpoint was copied from another run or the record is from another run: "
            "move one of them."
        )


#: The checks of :func:`evaluate_checkpoint`'s arguments: those of the config's ``eval.*``
#: and of the verifier, so that ``sorl-evaluate`` accepts what training evaluates with.
def _or_run_value(check: Any) -> Any:
    """``check``, or ``None`` (the run's own value, read from the checkpoint's config)."""

    def checked(value: Any, name: str) -> Any:
        return None if value is None else check(value, name)

    return checked


EVALUATE_SETTINGS = Settings(
    "sorl-evaluate",
    {
        "inference_steps": _or_run_value(EVAL_SETTINGS["inference_steps"]),
        "num_candidates": _or_run_value(EVAL_SETTINGS["num_candidates"]),
        "episodes": EVAL_SETTINGS["num_episodes"],
        "seed": EVAL_SETTINGS["seed"],
        "max_episode_steps": EVAL_SETTINGS["max_episode_steps"],
        "num_envs": Number(
            "[1, inf)",
            integer=True,
            optional=True,
            meaning="None: the run's eval.num_envs, 1 for a run without one",
        ),
        "parallel": Choice(None, True, False),
        "success_timing": Choice(None, *get_args(SuccessTiming)),
        "device": check_device,
        "compile": check_compile,
        "threads": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: the package default"
        ),
        "progress": FLAG,
        "video_episodes": Number("[0, inf)", integer=True, meaning="0: no video"),
        "video_size": VIDEO_SETTINGS["size"],
    },
)


def set_threads(threads: int | None, device: object = "cpu") -> None:
    """Set torch's intra-op thread count: ``threads``, or the package default for ``None``.

    Without a package default (``sorl_torchrl._threads``), ``None`` leaves torch's own.
    """
    if threads is None:
        try:
            from sorl_torchrl._threads import default_threads
        except ImportError:
            return
        threads = default_threads(device)
    if threads:
        torch.set_num_threads(int(threads))


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    inference_steps: Sequence[int] | None = None,
    num_candidates: Sequence[int] | None = None,
    episodes: int = 50,
    seed: int = 1000,
    max_episode_steps: int | None = None,
    num_envs: int | None = None,
    parallel: bool | None = None,
    success_timing: str | None = None,
    device: str = "cpu",
    compile: bool = False,
    threads: int | None = None,
    progress: bool = False,
    out: Path | None = None,
    video_episodes: int = 0,
    video_size: Sequence[int] = (256, 256),
) -> list[dict]:
    """Check, load and evaluate a checkpoint; returns the grid rows (also written to ``out``).

    The arguments are checked first (:data:`EVALUATE_SETTINGS`), before the checkpoint is
    read: a device this machine does not have is reported as such. ``num_envs``,
    ``parallel`` and ``success_timing`` default to the run's config (``eval.num_envs``,
    ``eval.parallel``, ``env.success_timing``; 1 env in this process for a run that predates
    them), so the grid is the one training recorded; so do ``inference_steps`` and
    ``num_candidates`` (the run's ``eval.*``; ``[1, 2, 4, 8]`` x ``[1, 4, 16]`` for a run
    without them, ``k = 1`` for an algorithm without steps). ``threads`` sets torch's thread
    count for the evaluation (:func:`set_threads`); it is restored afterwards.
    ``video_episodes`` episodes of the best cell are rendered at ``video_size`` into
    ``out/videos``.

    Raises:
        ValueError: An argument is not allowed (every one is named, with its range).
        FileNotFoundError: No checkpoint at ``checkpoint``.
        CheckpointError: The checkpoint cannot be read, belongs to another run than its run
            dir's record, or its weights do not fit the networks its config builds.
    """
    settings = EVALUATE_SETTINGS.check(
        {
            "inference_steps": inference_steps,
            "num_candidates": num_candidates,
            "episodes": episodes,
            "seed": seed,
            "max_episode_steps": max_episode_steps,
            "num_envs": num_envs,
            "parallel": parallel,
            "success_timing": success_timing,
            "device": device,
            "compile": compile,
            "threads": threads,
            "progress": progress,
            "video_episodes": video_episodes,
            "video_size": video_size,
        }
    )
    checkpoint = Path(checkpoint)
    torch_device = settings["device"]
    state = load_checkpoint(checkpoint, map_location=torch_device)
    check_against_record(state, checkpoint)
    cfg = OmegaConf.create(state["config"])
    cfg.device = str(torch_device)
    modules = build_algorithm(cfg, Runtime(torch_device, None, "evaluation", False, None))
    load_weights(modules.loss, state, checkpoint)
    run_eval = cfg.get("eval") or {}
    steps = [1, 2, 4, 8] if modules.has_steps else [1]  # for a run that recorded none
    for key, default in (("inference_steps", steps), ("num_candidates", [1, 4, 16])):
        if settings[key] is None:
            settings[key] = list(run_eval.get(key) or default)
    if settings["parallel"] is None:
        settings["parallel"] = run_eval.get("parallel", False)
    make_env = functools.partial(
        make_ogbench_env,
        dataset_id(cfg),
        parallel=settings["parallel"],
        success_timing=success_timing or cfg.env.success_timing,
        device=torch_device,
    )
    threads_before = torch.get_num_threads()
    set_threads(settings["threads"], torch_device)
    try:
        rows = evaluate_scaling_grid(
            modules.policy,
            modules.critic,
            make_env,
            inference_steps=settings["inference_steps"],
            num_candidates=settings["num_candidates"],
            num_episodes=settings["episodes"],
            seed=settings["seed"],
            q_agg=modules.q_agg,
            max_episode_steps=settings["max_episode_steps"],
            num_envs=settings["num_envs"] or run_eval.get("num_envs", 1),
            progress=settings["progress"],
            compile=settings["compile"] or False,
        )
    finally:
        torch.set_num_threads(threads_before)
    out = out or checkpoint.parent / "evaluate"
    write_scaling_results(rows, out)
    update = trained_updates(state)
    plot_scaling(rows, out / "scaling.png", title=f"{dataset_id(cfg)}, step {update}")
    print(f"Success (%) of {checkpoint} (step {update}):")
    print(format_scaling_table(rows))
    print(f"Results in {out}")
    if settings["video_episodes"]:
        best = max(rows, key=lambda row: row["success_rate"])
        k, n = best["inference_steps"], best["num_candidates"]
        videos = record_videos(
            modules.sampler(k, n),
            functools.partial(make_env, max_episode_steps=settings["max_episode_steps"]),
            num_episodes=settings["video_episodes"],
            seed=settings["seed"],
            out_dir=out / "videos",
            step=update,
            size=settings["video_size"],
            tag=f"k{k}_n{n}_episode",
        )
        for video in videos:
            print(
                f"Video (k={k}, N={n}): {video['path']}, {video['frames']} frames in "
                f"{video['seconds']:.1f} s ({video['seconds_per_frame']:.3f} s per frame), "
                f"return {video['episode_return']:.1f}, success {video['success']}"
            )
    return rows


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-evaluate``."""
    parser = argparse.ArgumentParser(
        prog="sorl-evaluate",
        description=__doc__.split("\n")[0],
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument(
        "checkpoint", type=Path, help="a checkpoint.pt written by sorl-train (in its run dir)"
    )
    parser.add_argument(
        "--inference-steps",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="Euler steps k per action, powers of two (default: the run's eval.inference_steps, "
        "1 for an algorithm without steps); more than the model's discretization_steps warns",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="verifier candidates N per state, integers >= 1 (default: the run's "
        "eval.num_candidates)",
    )
    parser.add_argument(
        "--episodes", type=int, default=50, help="episodes per (k, N) point (default: 50)"
    )
    parser.add_argument(
        "--seed", type=int, default=1000, help="evaluation seed: the same episodes for every point"
    )
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="episode cap (default: the environment's horizon)",
    )
    parser.add_argument(
        "--num-envs",
        type=int,
        default=None,
        metavar="N",
        help="envs stepped side by side, one batched policy call for all (default: the "
        "run's eval.num_envs, 1 for a run without one); episode i is seeded seed + i either "
        "way, but the verifier's noise is drawn per batch",
    )
    parser.add_argument(
        "--parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one worker process per env (TorchRL ParallelEnv) or, with --no-parallel, all "
        "in this process (SerialEnv); default: the run's eval.parallel, else --no-parallel",
    )
    parser.add_argument(
        "--success-timing",
        choices=["pre", "post"],
        default=None,
        help="when success is read: 'post' (ogbench 1.1, the published numbers, the "
        "package default) or 'pre' (ogbench >= 1.2); default: the checkpoint config's "
        "env.success_timing",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device to evaluate on, e.g. cpu or cuda"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the verifier (one graph per k and N; pays off for many episodes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="torch intra-op threads (default: the package default)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (default: one bar over the grid's episodes, on stderr)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output dir for scaling.json, .csv and .png (default: <checkpoint dir>/evaluate)",
    )
    parser.add_argument(
        "--video-episodes",
        type=int,
        default=0,
        metavar="V",
        help="render V episodes of the grid's best (k, N) as MP4 files in <out>/videos "
        "(default: 0)",
    )
    parser.add_argument(
        "--video-size",
        type=int,
        nargs=2,
        default=[256, 256],
        metavar=("W", "H"),
        help="video width and height (default: 256 256)",
    )
    add_debug_option(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``sorl-evaluate``, parsed."""
    return build_parser().parse_args(argv)


@console_command("sorl-evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``sorl-evaluate``); returns the exit status, 0 on success.

    A user error (a missing checkpoint, a bad option, a device this machine lacks) prints
    one message and returns 2; see :mod:`sorl_torchrl._cli`.
    """
    args = parse_args(argv)
    evaluate_checkpoint(
        args.checkpoint,
        inference_steps=args.inference_steps,
        num_candidates=args.num_candidates,
        episodes=args.episodes,
        seed=args.seed,
        max_episode_steps=args.max_episode_steps,
        num_envs=args.num_envs,
        parallel=args.parallel,
        success_timing=args.success_timing,
        device=args.device,
        compile=args.compile,
        threads=args.threads,
        progress=args.progress,
        out=args.out,
        video_episodes=args.video_episodes,
        video_size=args.video_size,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
