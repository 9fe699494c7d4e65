"""Train SORL offline on an OGBench singletask problem, then evaluate it over (k, N).

    python -m sorl_torchrl.recipes.train                                   # cube-single-play task 2, paper size
    python -m sorl_torchrl.recipes.train env=scene-play env.task=4 seed=3  # any group or value
    python -m sorl_torchrl.recipes.train +experiment=paper                 # the full paper configuration
    python -m sorl_torchrl.recipes.train resume=true run_dir=runs/...      # continue (or extend) a run
    python -m sorl_torchrl.recipes.train -m env.task=1,2,3,4,5 seed=1,2 launcher=local  # a local sweep

Rerunning a command never loses work: with the default ``resume=auto`` a run dir that holds a
finished run of the same config is skipped, one that holds only a checkpoint resumes from it.

Reads top to bottom: data, modules, then the loop (sample, update, log, validate, evaluate,
checkpoint), then the final (k, N) evaluation with its results file and plot.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchrl.record.loggers import get_logger
from tqdm import tqdm

from sorl_torchrl.recipes.common import (
    CHECKPOINT_NAME,
    build_modules,
    check_compatible,
    dataset_id,
    load_weights,
    model_config,
    select_device,
)
from sorl_torchrl.recipes.run_record import (
    finished_results,
    git_revision,
    utc_now,
    versions,
    write_failure,
    write_results,
)
from sorl_torchrl._io import atomic_write_text
from sorl_torchrl.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from sorl_torchrl.data import OGBenchExperienceReplay, generate_dataset, parse_singletask_id
from sorl_torchrl.data.generate import default_dataset_dir
from sorl_torchrl.envs import make_ogbench_env
from sorl_torchrl.scaling import (
    evaluate_scaling_grid,
    format_scaling_table,
    plot_scaling,
    write_scaling_results,
)

log = logging.getLogger("sorl.train")


def prepare_dataset(cfg: DictConfig) -> Path:
    """The dataset dir; regenerates the dataset there first if asked and absent."""
    root = Path(cfg.data.root).expanduser() if cfg.data.root else default_dataset_dir()
    name = parse_singletask_id(dataset_id(cfg)).dataset_name
    if cfg.data.generate_if_missing and not (root / f"{name}-val.npz").exists():
        log.info("Dataset %s not found in %s: generating it locally.", name, root)
        generate_dataset(
            name,
            out_dir=root,
            num_episodes=cfg.data.num_episodes,
            seed=cfg.seed,
            workers=cfg.data.workers,
            progress=cfg.progress,
        )
    return root


def make_replay_buffers(
    cfg: DictConfig, root: Path
) -> tuple[OGBenchExperienceReplay, OGBenchExperienceReplay | None]:
    """Training and (if validation is on) validation replay buffers, TED batches."""
    device = None if cfg.device == "cpu" else cfg.device
    train = OGBenchExperienceReplay(
        dataset_id(cfg),
        batch_size=cfg.batch_size,
        root=root,
        prefetch=cfg.data.prefetch,
        device=device,
    )
    val = train.val_split(prefetch=None, device=device) if cfg.val_interval else None
    return train, val


def evaluate(cfg: DictConfig, actor, critic, env, step: int, run_dir: Path) -> list[dict]:
    """The (k, N) grid at ``step``: results file, plot and a Markdown table in the log."""
    rows = evaluate_scaling_grid(
        actor,
        critic,
        env,
        inference_steps=list(cfg.eval.inference_steps),
        num_candidates=list(cfg.eval.num_candidates),
        num_episodes=cfg.eval.num_episodes,
        seed=cfg.eval.seed,
        q_agg=cfg.loss.q_agg,
        max_episode_steps=cfg.eval.max_episode_steps,
    )
    for row in rows:
        row["step"] = step
    write_scaling_results(rows, run_dir / "eval", stem=f"scaling_step{step}")
    plot_scaling(
        rows, run_dir / "eval" / f"scaling_step{step}.png", title=f"{dataset_id(cfg)}, step {step}"
    )
    log.info("Success (%%) at step %d, k rows x N columns:\n%s", step, format_scaling_table(rows))
    return rows


@torch.no_grad()
def validation_losses(loss, val_buffer, num_batches: int) -> dict[str, float]:
    """Mean loss terms over ``num_batches`` validation batches (RNG state restored after)."""
    totals: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for _ in range(num_batches):
            out = loss(val_buffer.sample())
            for key in ("loss_actor", "loss_qvalue", "fm_loss", "sc_loss", "q_mean"):
                totals[key] = totals.get(key, 0.0) + out[key].item() / num_batches
    return totals


RESUME_MODES = (True, False, "auto")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def resume_from_checkpoint(cfg: DictConfig, checkpoint_path: Path) -> bool:
    """Whether to resume, from ``cfg.resume`` (true / false / auto) and the run dir's state."""
    if cfg.resume not in RESUME_MODES:
        raise ValueError(f"resume must be true, false or auto, got {cfg.resume!r}.")
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
    """Train and evaluate; returns the final results (also written to ``run_dir``).

    Skips the work and returns the stored results when ``run_dir`` already holds a finished
    run of the same config (``resume=auto``, the default).
    """
    run_dir = Path(cfg.run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if cfg.resume == "auto" and (stored := finished_results(run_dir, resolved)) is not None:
        log.info("%s already holds a finished run of this config: skipped.", run_dir)
        print(f"Skipped: {run_dir} already finished (results: {run_dir / 'results.json'}).")
        return stored
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    resuming = resume_from_checkpoint(cfg, checkpoint_path)
    started_at, wall_start = utc_now(), time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.matmul_precision not in MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)}, got "
            f"{cfg.matmul_precision!r} (see torch.set_float32_matmul_precision)."
        )
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)

    # --- data and modules
    root = prepare_dataset(cfg)
    train_buffer, val_buffer = make_replay_buffers(cfg, root)
    actor, critic, loss, update = build_modules(cfg)
    env = make_ogbench_env(dataset_id(cfg), success_timing=cfg.env.success_timing, device=device)

    start, wall_before = 0, 0.0
    if resuming:
        state = load_checkpoint(checkpoint_path, map_location=device)
        check_compatible(state["model_config"], cfg, checkpoint_path)
        load_weights(loss, state)
        update.load_state_dict(state["optimizers"])
        train_buffer.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        start, wall_before = state["step"], state.get("wall_time_s", 0.0)
        log.info("Resumed %s at update %d.", run_dir, start)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    logger = get_logger(
        cfg.logger.backend,
        logger_name=str(run_dir / "logs"),
        experiment_name=dataset_id(cfg),
        **({"project": cfg.logger.project} if cfg.logger.backend == "wandb" else {}),
    )

    def save(step: int) -> None:
        save_checkpoint(
            checkpoint_path,
            {
                "step": step,
                "model_config": model_config(cfg),
                "config": resolved,
                "loss": loss.state_dict(),
                "optimizers": update.state_dict(),
                "sampler": train_buffer.sampler.state_dict(),
                "rng": get_rng_state(),
                "wall_time_s": wall_before + time.perf_counter() - wall_start,
            },
        )

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
        info = update(train_buffer.sample())
        done = step + 1
        if done % cfg.log_interval == 0 or done == cfg.num_updates:
            rate = (done - tick_step) / (time.perf_counter() - tick)
            tick, tick_step = time.perf_counter(), done
            train_metrics = {key: value.item() for key, value in info.items()}
            for key, value in train_metrics.items():
                logger.log_scalar(f"train/{key}", value, step=done)
            logger.log_scalar("train/updates_per_second", rate, step=done)
            bar.set_postfix(loss_actor=f"{info['loss_actor'].item():.3f}", ups=f"{rate:.1f}")
        if val_buffer is not None and done % cfg.val_interval == 0:
            val_metrics = validation_losses(loss, val_buffer, cfg.val_batches)
            for key, value in val_metrics.items():
                logger.log_scalar(f"val/{key}", value, step=done)
        if cfg.eval.interval and done % cfg.eval.interval == 0 and done != cfg.num_updates:
            for row in evaluate(cfg, actor, critic, env, done, run_dir):
                tag = f"eval/success_k{row['inference_steps']}_n{row['num_candidates']}"
                logger.log_scalar(tag, row["success_rate"], step=done)
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0:
            save(done)
    bar.close()
    trained = cfg.num_updates - start
    updates_per_second = trained / (time.perf_counter() - train_start) if trained else None
    save(cfg.num_updates)

    # --- final evaluation over (k, N)
    rows = evaluate(cfg, actor, critic, env, cfg.num_updates, run_dir)
    env.close()
    plot_scaling(rows, run_dir / "scaling.png", title=dataset_id(cfg))
    best = max(rows, key=lambda r: r["success_rate"])
    results = {
        "dataset_id": dataset_id(cfg),
        "env": cfg.env.name,
        "task": int(cfg.env.task),
        "seed": int(cfg.seed),
        "num_updates": cfg.num_updates,
        "grid": rows,
        "evaluations": stored_evaluations(run_dir),
        "final_metrics": {
            "train": train_metrics,
            "val": val_metrics,
            "best": {k: best[k] for k in ("inference_steps", "num_candidates", "success_rate")},
        },
        "wall_time_s": wall_before + time.perf_counter() - wall_start,
        "updates_per_second": updates_per_second,
        "torch_threads": torch.get_num_threads(),
        "compiled_terms": list(loss.compiled_terms),
        "resumed_from_update": start if resuming else None,
        "started_at": started_at,
        "finished_at": utc_now(),
        "git": git_revision(),
        "versions": versions(),
        "config": resolved,
    }
    write_results(run_dir, results)
    print(f"\nSuccess (%) on {dataset_id(cfg)} after {cfg.num_updates} updates:")
    print(format_scaling_table(rows))
    print(f"Results: {run_dir / 'results.json'}  Plot: {run_dir / 'scaling.png'}")
    return results


def stored_evaluations(run_dir: Path) -> list[dict]:
    """Every (k, N) evaluation written under ``run_dir/eval``, by step (survives a resume)."""
    evaluations = []
    for path in (run_dir / "eval").glob("scaling_step*.json"):
        step = int(path.stem.removeprefix("scaling_step"))
        evaluations.append({"step": step, "grid": json.loads(path.read_text())})
    return sorted(evaluations, key=lambda e: e["step"])


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``python -m sorl_torchrl.recipes.train`` or ``sorl-train``).

    A run that raises leaves ``failed.json`` (error, traceback, config) in its run dir, so a
    sweep's report can name it; the error is then re-raised.
    """
    try:
        run(cfg)
    except Exception as err:
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # the config itself may be what failed to resolve
            config = OmegaConf.to_container(cfg, resolve=False)
        run_dir = config.get("run_dir")
        if not isinstance(run_dir, str) or "${" in run_dir:
            run_dir = HydraConfig.get().runtime.output_dir
        path = write_failure(Path(run_dir), err, config)
        log.error("Run failed; details in %s", path)
        raise


if __name__ == "__main__":
    main()
