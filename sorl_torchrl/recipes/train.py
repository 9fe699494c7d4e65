"""Train SORL offline on an OGBench singletask problem, then evaluate it over (k, N).

    sorl-train                                          # cube-single-play task 2, paper size
    sorl-train env=scene-play env.task=4 seed=3         # any group or value
    sorl-train +experiment=paper                        # the full paper configuration
    sorl-train resume=true run_dir=runs/...             # continue (or extend) a run
    sorl-train -m env.task=1,2,3,4,5 seed=1,2 launcher=local  # a local sweep

``sorl-train`` is ``python -m sorl_torchrl.recipes.train``.

Rerunning a command never loses work: with the default ``resume=auto`` a run dir that holds a
finished run of the same run identity (:mod:`sorl_torchrl.recipes.run_record`: the settings,
the seed and the data's content hash) is skipped, one that holds only a checkpoint resumes
from it, and a resume under another identity is refused.

A loss or gradient norm that goes NaN or infinite stops the run (``on_divergence=stop``, the
default) at the next log, evaluation or checkpoint with a
:class:`~sorl_torchrl.recipes.divergence.DivergenceError` naming the update, the terms and
the last good checkpoint; the record says ``status: diverged``. No checkpoint is ever written
of weights trained past a non-finite value.

Reads top to bottom: data and which run this is, the run record (``status: running``),
modules, then the loop (sample, update, watch for divergence, feed a prioritized sampler its
TD errors, log, validate, evaluate, checkpoint), then the final (k, N) evaluation, its plot
and the finished record.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from sorl_torchrl._cli import hydra_command
from sorl_torchrl._io import atomic_write_text
from sorl_torchrl._threads import configure_threads
from sorl_torchrl.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from sorl_torchrl.data.online import OnlineTransitions
from sorl_torchrl.deploy.build import model_sizes
from sorl_torchrl.recipes.algorithms import AlgorithmModules, build_algorithm
from sorl_torchrl.recipes.common import (
    CHECKPOINT_NAME,
    check_resumable,
    load_init_checkpoint,
    load_weights,
)
from sorl_torchrl.recipes.config_checks import validate_config
from sorl_torchrl.recipes.divergence import (
    DivergenceError,
    DivergenceMonitor,
    describe_divergence,
    divergence_fields,
    refuse_diverged,
)
from sorl_torchrl.recipes.loggers import log_group, make_logger
from sorl_torchrl.recipes.loop_parts import (
    earlier_segments,
    grid_metrics,
    precompile_update,
    priority_writer,
    record_evaluation_videos,
    stored_evaluations,
    stored_videos,
)
from sorl_torchrl.recipes.online import OnlinePhase, run_online
from sorl_torchrl.recipes.run_record import (
    RunRecord,
    finished_results,
    git_revision,
    register_resolvers,
    run_identity,
    utc_now,
    versions,
    with_dataset,
    writing,
)
from sorl_torchrl.recipes.runtime import resolve_runtime
from sorl_torchrl.recipes.training_data import TrainingData, open_training_data
from sorl_torchrl.scaling import (
    evaluate_scaling_grid,
    format_scaling_table,
    plot_scaling,
    write_scaling_results,
)

log = logging.getLogger("sorl.train")
register_resolvers()  # hydra.sweep.subdir names each sweep job with sorl.run_dirname


def evaluate(
    cfg: DictConfig,
    modules: AlgorithmModules,
    data: TrainingData,
    step: int,
    run_dir: Path,
    logger: Any = None,
) -> list[dict]:
    """The (k, N) grid at ``step``: results file, plot, a Markdown table in the log, videos.

    Best-of-N with the algorithm's own critic (its ``q_agg``) for every ``(k, N)``, on
    ``eval.num_envs`` envs stepped side by side. No rows when the dataset has no env. The
    plot shows success rates; a grid of returns (an env without success) is tabulated only.
    ``eval.video_episodes`` episodes of the best cell are recorded as videos
    (:func:`~sorl_torchrl.recipes.loop_parts.record_evaluation_videos`).
    """
    if data.env_factory is None:
        return []
    factory = data.env_factory
    if data.description.get("prefix") == "ogbench":
        factory = functools.partial(factory, parallel=cfg.eval.parallel)
    rows = evaluate_scaling_grid(
        modules.policy,
        modules.critic,
        factory,
        inference_steps=list(cfg.eval.inference_steps),
        num_candidates=list(cfg.eval.num_candidates),
        num_episodes=cfg.eval.num_episodes,
        seed=cfg.eval.seed,
        q_agg=modules.q_agg,
        max_episode_steps=cfg.eval.max_episode_steps,
        num_envs=cfg.eval.num_envs,
        progress=cfg.progress,
    )
    for row in rows:
        row["step"] = step
    write_scaling_results(rows, run_dir / "eval", stem=f"scaling_step{step}")
    if data.metric == "success_rate":
        plot_scaling(
            rows, run_dir / "eval" / f"scaling_step{step}.png", title=f"{data.name}, step {step}"
        )
    log.info(
        "%s at step %d, k rows x N columns:\n%s",
        "Success (%)" if data.metric == "success_rate" else "Mean return",
        step,
        format_scaling_table(rows, data.metric),
    )
    record_evaluation_videos(cfg, modules, data, rows, step, run_dir, logger)
    return rows


@torch.no_grad()
def validation_losses(modules: AlgorithmModules, val_buffer, num_batches: int) -> dict[str, float]:
    """Mean loss terms over ``num_batches`` validation batches (RNG state restored after).

    The terms are the algorithm's :attr:`~AlgorithmModules.validation_keys`.
    """
    totals: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for _ in range(num_batches):
            terms = modules.validation_terms(modules.loss(val_buffer.sample()))
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + value / num_batches
    return totals


def resume_from_checkpoint(cfg: DictConfig, checkpoint_path: Path) -> bool:
    """Whether to resume, from ``cfg.resume`` (true / false / auto) and the run dir's state."""
    exists = checkpoint_path.exists()
    if exists and cfg.resume is False:
        raise FileExistsError(
            f"{checkpoint_path.parent} already holds a run ({checkpoint_path}). Pass "
            "resume=true (or auto) to continue it, or choose another run_dir."
        )
    if not exists and cfg.resume is True:
        raise FileNotFoundError(
            f"resume=true but {checkpoint_path} does not exist: nothing to resume. Check "
            "run_dir, or use resume=auto to start a new run there."
        )
    return exists and cfg.resume is not False


def run(cfg: DictConfig) -> dict:
    """Train and evaluate; returns the final record (also ``run_dir/results.json``).

    A bad setting raises (every one listed) before anything is read or written. Skips the
    work and returns the stored record when ``run_dir`` already holds a finished run of the
    same identity (``resume=auto``, the default). A run that raises after it claimed its run
    dir leaves ``status: failed`` with the error and traceback there, and one whose losses or
    gradient norms went non-finite raises :class:`DivergenceError` and leaves
    ``status: diverged`` (with ``on_divergence=continue`` it trains on and returns that
    record, grid included).
    """
    validate_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    record = RunRecord(Path(cfg.run_dir), config)
    try:
        return _train(cfg, record)
    except DivergenceError as err:
        if (path := record.fail(err, status="diverged", divergence=err.fields)) is not None:
            log.error("Run diverged; details in %s", path)
        raise
    except Exception as err:
        if (path := record.fail(err)) is not None:
            log.error("Run failed; details in %s", path)
        raise


def _train(cfg: DictConfig, record: RunRecord) -> dict:
    run_dir = record.run_dir
    wall_start = time.perf_counter()
    runtime = resolve_runtime(cfg)
    device = runtime.device
    configure_threads(cfg.threads, device)  # null: one per idle core (sorl_torchrl._threads)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    torch.manual_seed(cfg.seed)

    # --- data, and which run this is
    data = open_training_data(cfg, runtime)
    train_buffer, val_buffer, dataset = data.train, data.val, data.description
    config = with_dataset(record.fields["config"], dataset["name"], dataset["fingerprint"])
    if data.sizes is not None:  # read from the data: the checkpoint's config must say them
        config["sizes"] = data.sizes
        OmegaConf.update(cfg, "sizes", data.sizes, force_add=True)
    record.fields["config"] = config
    identity = run_identity(config)
    if cfg.resume == "auto":
        if (stored := finished_results(run_dir, identity)) is not None:
            log.info("%s already holds a finished run of this config: skipped.", run_dir)
            print(f"Skipped: {run_dir} already finished (results: {record.path}).")
            return stored
        refuse_diverged(run_dir, identity)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    state, init = None, None
    if resume_from_checkpoint(cfg, checkpoint_path):
        state = load_checkpoint(checkpoint_path, map_location=device)
        if data.check_sizes is not None:  # before the identity check, whose diff hides sizes
            data.check_sizes(*model_sizes(state["config"]), f"Checkpoint {checkpoint_path}")
        check_resumable(state, identity, cfg.num_updates, checkpoint_path, cfg.online_steps)
    elif cfg.init_from is not None:  # another run's weights, optimiser and update count
        state, init = load_init_checkpoint(cfg, device)
        if data.check_sizes is not None:
            data.check_sizes(*model_sizes(state["config"]), f"Checkpoint {init['path']}")
    resumed = state is not None and init is None
    start = state["step"] if state else 0
    online_state = state.get("online") if resumed else None
    online_start = online_state["step"] if online_state else 0
    last_good = start + online_start if resumed else None  # the update checkpoint.pt holds
    wall_before = state.get("wall_time_s", 0.0) if resumed else 0.0
    segments = earlier_segments(state) + [
        {"from_update": start + online_start, "to_update": None, "started_at": utc_now()}
    ]
    record.start(
        dataset_id=dataset["id"],
        env=cfg.env.name,
        task=None if cfg.env.task is None else int(cfg.env.task),
        seed=int(cfg.seed),
        num_updates=cfg.num_updates,
        run_key=identity,
        dataset=dataset,
        resumed_from_update=start + online_start if resumed else None,
        init_from=init,
        last_checkpoint_update=last_good,
        segments=segments,
        git=git_revision(),
        versions=versions(),
        runtime=runtime.as_record(),
    )
    with writing(run_dir / "config.yaml", "resolved config"):
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    # --- modules
    modules = build_algorithm(cfg, runtime)
    loss, update = modules.loss, modules.update
    if state is not None:
        load_weights(loss, state, Path(init["path"]) if init else checkpoint_path)
        update.load_state_dict(state["optimizers"])
        train_buffer.sampler.load_state_dict(state["sampler"])
    if resumed:
        set_rng_state(state["rng"])
        log.info("Resumed %s at update %d.", run_dir, start + online_start)
    write_priorities = priority_writer(train_buffer, loss)

    # Rows an interrupted run logged past the checkpoint are dropped (CSV) or hidden
    # (TensorBoard); a new run starts its tables afresh (sorl_torchrl.recipes.loggers).
    logger = make_logger(
        cfg.logger, run_dir, data.name, resume_step=start + online_start if resumed else None
    )

    def until(step: int) -> list[dict]:
        return segments[:-1] + [{**segments[-1], "to_update": step}]

    def save(step: int, online: dict[str, Any] | None = None) -> None:
        """Checkpoint after offline update ``step`` and, in the online phase, its state."""
        nonlocal last_good
        total = step + (online["step"] if online else 0)
        kept = "" if last_good is None else f"The checkpoint of update {last_good} is intact. "
        with writing(checkpoint_path, "checkpoint", kept):
            save_checkpoint(
                checkpoint_path,
                {
                    "step": step,
                    "run_key": identity,
                    "config": config,
                    "dataset": dataset,
                    "segments": until(total),
                    "loss": loss.state_dict(),
                    "optimizers": update.state_dict(),
                    "sampler": train_buffer.sampler.state_dict(),
                    "rng": get_rng_state(),
                    "wall_time_s": wall_before + time.perf_counter() - wall_start,
                    **({"online": online} if online else {}),
                },
            )
        last_good = total
        record.note(last_checkpoint_update=total)  # the record names the checkpoint on disk

    # Non-finite losses and gradient norms: recorded on the device every update, read on
    # the host at each log, evaluation and checkpoint, so no checkpoint holds diverged weights.
    monitor, diverged = DivergenceMonitor(window=cfg.log_interval), None

    def watch() -> None:
        nonlocal diverged
        if diverged is not None or (found := monitor.check()) is None:
            return
        fields = divergence_fields(found, checkpoint_path, last_good)
        if cfg.on_divergence == "stop":
            raise DivergenceError(fields)
        diverged = fields
        what = f"Training diverged: {describe_divergence(fields)}"
        log.warning(
            "%s Training on (on_divergence=continue): no checkpoint is written from here, "
            "and the record will say status: diverged.",
            what,
        )
        record.note(divergence=fields, error=f"{what} Trained on (on_divergence=continue).")

    # --- compile every graph of the update before the loop, timed on its own
    compile_seconds = precompile_update(update, train_buffer, cfg.batch_size, cfg.progress)
    segments[-1]["compile_time_s"] = compile_seconds
    record.note(compile_time_s=compile_seconds)

    # --- the loop
    bar = tqdm(
        range(start, cfg.num_updates),
        initial=start,
        total=cfg.num_updates,
        desc="updates",
        disable=not cfg.progress,
        mininterval=1.0,
    )
    tick, tick_step = time.perf_counter(), start
    train_start, train_metrics, val_metrics = time.perf_counter(), {}, {}
    for step in bar:
        batch = train_buffer.sample()
        info = update(batch)
        done = step + 1
        if diverged is None:
            monitor.record(done, info)
        if write_priorities is not None:
            write_priorities(batch)
        log_now = done % cfg.log_interval == 0 or done == cfg.num_updates
        eval_now = cfg.eval.interval and done % cfg.eval.interval == 0 and done != cfg.num_updates
        save_now = cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0
        if log_now or eval_now or save_now:
            watch()
        if log_now:
            rate = (done - tick_step) / (time.perf_counter() - tick)
            tick, tick_step = time.perf_counter(), done
            train_metrics = {key: value.item() for key, value in info.items()}
            log_group(logger, "train", {**train_metrics, "updates_per_second": rate}, done)
            bar.set_postfix(loss_actor=f"{info['loss_actor'].item():.3f}", ups=f"{rate:.1f}")
        if val_buffer is not None and done % cfg.val_interval == 0:
            val_metrics = validation_losses(modules, val_buffer, cfg.val_batches)
            log_group(logger, "val", val_metrics, done)
        if eval_now:
            grid = evaluate(cfg, modules, data, done, run_dir, logger)
            log_group(logger, "eval", grid_metrics(grid, data.metric), done)
        if save_now and diverged is None:
            save(done)
    bar.close()
    trained = cfg.num_updates - start
    train_seconds = time.perf_counter() - train_start
    updates_per_second = trained / train_seconds if trained else None
    watch()
    if diverged is None and online_state is None:  # not over a checkpoint of the online phase
        save(cfg.num_updates)

    # --- the online phase (online_steps > 0): collect, one update per env step
    online_summary, final_step = None, cfg.num_updates + cfg.online_steps
    if cfg.online_steps:
        transitions = OnlineTransitions(
            train_buffer[torch.zeros(1, dtype=torch.long)], cfg.online_steps, device
        )
        if online_state is not None:
            transitions.load_state_dict(online_state["transitions"])

        def evaluate_at(step: int) -> list[dict]:
            rows = evaluate(cfg, modules, data, step, run_dir, logger)
            log_group(logger, "eval", grid_metrics(rows, data.metric), step)
            return rows

        def save_online(online_step: int) -> None:
            if diverged is None:
                online = {"step": online_step, "transitions": transitions.state_dict()}
                save(cfg.num_updates, online)

        def record_losses(step: int, info: Any) -> None:
            if diverged is None:
                monitor.record(step, info)

        phase = OnlinePhase(
            cfg, modules, data, logger, cfg.num_updates, online_start, transitions,
            evaluate_at, save_online, watch, record_losses, cfg.progress,
        )  # fmt: skip
        online_summary = run_online(phase)
        watch()
        save_online(cfg.online_steps)

    # --- final evaluation over (k, N)
    rows = evaluate(cfg, modules, data, final_step, run_dir, logger)
    log_group(logger, "eval", grid_metrics(rows, data.metric), final_step)
    logger.close()
    if rows and data.metric == "success_rate":
        plot_scaling(rows, run_dir / "scaling.png", title=data.name)
    best = max(rows, key=lambda r: r[data.metric]) if rows else None
    keys = ("inference_steps", "num_candidates", data.metric)
    results = record.finish(
        segments=until(final_step),
        grid=rows,
        evaluations=stored_evaluations(run_dir),
        videos=stored_videos(run_dir),
        final_metrics={
            "train": train_metrics,
            "val": val_metrics,
            "best": None if best is None else {k: best[k] for k in keys},
        },
        wall_time_s=wall_before + time.perf_counter() - wall_start,
        updates_per_second=updates_per_second,
        train_time_s=train_seconds,
        compile_time_s=compile_seconds,
        torch_threads=torch.get_num_threads(),
        compiled=getattr(update, "is_compiled", None),
        compile_mode=update.compile_mode,
        online=online_summary,
    )
    what = "Success (%)" if data.metric == "success_rate" else "Mean return"
    if rows:
        online = f" and {cfg.online_steps} online steps" if cfg.online_steps else ""
        print(f"\n{what} on {data.name} after {cfg.num_updates} updates{online}:")
        print(format_scaling_table(rows, data.metric))
    else:
        print(f"\nNo evaluation: {data.name} names no environment to evaluate in.")
    plotted = f"  Plot: {run_dir / 'scaling.png'}" if rows and data.metric == "success_rate" else ""
    print(f"Results: {record.path}{plotted}")
    if diverged is not None:
        print(f"Diverged: {describe_divergence(diverged)} This grid is of weights trained past it.")
    return results


@hydra_command("sorl-train")
@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``python -m sorl_torchrl.recipes.train`` or ``sorl-train``).

    A run that raises leaves ``status: failed`` (error, traceback, config) in the
    ``results.json`` of its run dir, so a sweep's report can name it (``status: diverged``
    for a divergence). The command then prints one message and exits with the status of
    :mod:`sorl_torchrl._cli` (1 for a divergence; ``--debug`` adds the traceback).
    """
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # the config itself failed to resolve: record it where Hydra ran
        config = OmegaConf.to_container(cfg, resolve=False)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if (path := RunRecord(run_dir, config).fail(err)) is not None:
            log.error("Run failed; details in %s", path)
        raise
    run(cfg)


if __name__ == "__main__":
    main()
