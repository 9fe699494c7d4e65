"""Train SORL offline on an OGBench singletask problem, then evaluate it over (k, N).

    python -m recipes.train                                   # cube-single-play task 2, paper size
    python -m recipes.train env=scene-play env.task=4 seed=3  # any group or value
    python -m recipes.train +experiment=paper                 # the full paper configuration
    python -m recipes.train resume=true run_dir=runs/...      # continue an interrupted run

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
from omegaconf import DictConfig, OmegaConf
from torchrl.record.loggers import get_logger
from tqdm import tqdm

from recipes.common import (
    CHECKPOINT_NAME,
    build_modules,
    check_compatible,
    dataset_id,
    load_weights,
    model_config,
    select_device,
)
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


def run(cfg: DictConfig) -> dict:
    """Train and evaluate; returns the final results (also written to ``run_dir``)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if checkpoint_path.exists() and not cfg.resume:
        raise FileExistsError(
            f"{run_dir} already holds a run ({checkpoint_path}). Pass resume=true to continue "
            "it, or choose another run_dir."
        )
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)

    # --- data and modules
    root = prepare_dataset(cfg)
    train_buffer, val_buffer = make_replay_buffers(cfg, root)
    actor, critic, loss, update = build_modules(cfg)
    env = make_ogbench_env(dataset_id(cfg), success_timing=cfg.env.success_timing, device=device)

    start = 0
    if cfg.resume:
        state = load_checkpoint(checkpoint_path, map_location=device)
        check_compatible(state["model_config"], cfg, checkpoint_path)
        load_weights(loss, state)
        update.load_state_dict(state["optimizers"])
        train_buffer.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        start = state["step"]
        log.info("Resumed %s at update %d.", run_dir, start)
    else:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

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
                "config": OmegaConf.to_container(cfg, resolve=True),
                "loss": loss.state_dict(),
                "optimizers": update.state_dict(),
                "sampler": train_buffer.sampler.state_dict(),
                "rng": get_rng_state(),
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
    for step in bar:
        info = update(train_buffer.sample())
        done = step + 1
        if done % cfg.log_interval == 0 or done == cfg.num_updates:
            rate = (done - tick_step) / (time.perf_counter() - tick)
            tick, tick_step = time.perf_counter(), done
            for key, value in info.items():
                logger.log_scalar(f"train/{key}", value.item(), step=done)
            logger.log_scalar("train/updates_per_second", rate, step=done)
            bar.set_postfix(loss_actor=f"{info['loss_actor'].item():.3f}", ups=f"{rate:.1f}")
        if val_buffer is not None and done % cfg.val_interval == 0:
            for key, value in validation_losses(loss, val_buffer, cfg.val_batches).items():
                logger.log_scalar(f"val/{key}", value, step=done)
        if cfg.eval.interval and done % cfg.eval.interval == 0 and done != cfg.num_updates:
            for row in evaluate(cfg, actor, critic, env, done, run_dir):
                tag = f"eval/success_k{row['inference_steps']}_n{row['num_candidates']}"
                logger.log_scalar(tag, row["success_rate"], step=done)
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0:
            save(done)
    bar.close()
    save(cfg.num_updates)

    # --- final evaluation over (k, N)
    rows = evaluate(cfg, actor, critic, env, cfg.num_updates, run_dir)
    env.close()
    results = {"dataset_id": dataset_id(cfg), "num_updates": cfg.num_updates, "grid": rows}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    plot_scaling(rows, run_dir / "scaling.png", title=dataset_id(cfg))
    print(f"\nSuccess (%) on {dataset_id(cfg)} after {cfg.num_updates} updates:")
    print(format_scaling_table(rows))
    print(f"Results: {run_dir / 'results.json'}  Plot: {run_dir / 'scaling.png'}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``python -m recipes.train`` or ``sorl-train``)."""
    run(cfg)


if __name__ == "__main__":
    main()
