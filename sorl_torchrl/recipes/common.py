"""Pieces shared by the training and evaluation recipes.

The dataset a config names (its sizes, from the dataset spec; its files, generated if asked),
the modules built from a config, and the checks that keep a checkpoint from being resumed or
evaluated as another run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import CheckpointError, load_module_state
from sorl_torchrl.data.generate import default_dataset_dir, generate_command, generate_dataset
from sorl_torchrl.data.provenance import interrupted_generation, shard_dir
from sorl_torchrl.data.specs import DATASETS, DatasetSpec, _unknown, get_dataset_spec
from sorl_torchrl.deploy.build import build_sorl_modules
from sorl_torchrl.recipes.run_record import CHECKPOINT_NAME, record_identity, resume_differences

__all__ = [
    "CHECKPOINT_NAME",
    "build_modules",
    "check_resumable",
    "dataset_id",
    "dataset_spec",
    "env_names",
    "load_weights",
    "prepare_dataset",
]

log = logging.getLogger("sorl.train")


def env_names() -> list[str]:
    """The values ``env.name`` accepts: every known dataset, without its ``-v0``.

    Examples:
        >>> "puzzle-4x4-play" in env_names() and "cube-single-play" in env_names()
        True
    """
    return sorted(name.removesuffix("-v0") for name in DATASETS)


def dataset_spec(cfg: DictConfig) -> DatasetSpec:
    """The spec of the dataset ``env.name`` names (its sizes, horizon, files).

    Raises:
        ValueError: ``env.name`` is unknown; the message lists the known names.

    Examples:
        >>> spec = dataset_spec(OmegaConf.create({"env": {"name": "puzzle-4x4-play"}}))
        >>> spec.name, spec.observation_dim, spec.action_dim
        ('puzzle-4x4-play-v0', 83, 5)
    """
    name = str(cfg.env.name)
    if name not in env_names():
        raise _unknown("env.name", name, env_names())
    return get_dataset_spec(f"{name}-v0")


def dataset_id(cfg: DictConfig) -> str:
    """The singletask id, e.g. ``cube-single-play-singletask-task2-v0``.

    Raises:
        ValueError: ``env.name`` is unknown or ``env.task`` is outside 1-5.

    Examples:
        >>> dataset_id(OmegaConf.create({"env": {"name": "scene-play", "task": 4}}))
        'scene-play-singletask-task4-v0'
    """
    dataset_spec(cfg)
    task = int(cfg.env.task)
    if not 1 <= task <= 5:
        raise ValueError(f"env.task must be 1-5, got {task}.")
    return f"{cfg.env.name}-singletask-task{task}-v0"


def prepare_dataset(cfg: DictConfig) -> Path:
    """The dataset dir; with ``data.generate_if_missing`` generates the dataset there first.

    Generation runs when neither file exists, and finishes an interrupted generation (its
    ``<name>.partial`` dir). It never replaces an existing file: a dataset with only one of
    its two files is an error that gives the command regenerating both.
    """
    root = Path(cfg.data.root).expanduser() if cfg.data.root else default_dataset_dir()
    name = dataset_spec(cfg).name
    if not cfg.data.generate_if_missing:
        return root
    files = [root / f"{name}.npz", root / f"{name}-val.npz"]
    interrupted = interrupted_generation(files[0]) is not None
    present = [path for path in files if path.exists()]
    if len(present) == 2 and not interrupted:
        return root
    sizes = "" if cfg.data.num_episodes is None else f" --num-episodes {cfg.data.num_episodes}"
    regenerate = f"{generate_command(name, root)} --seed {cfg.seed}{sizes} --overwrite"
    if present and not interrupted:
        missing = ", ".join(path.name for path in files if path not in present)
        raise FileNotFoundError(
            f"The dataset {name} in {root} is incomplete: {present[0].name} exists but "
            f"{missing} does not, and data.generate_if_missing=true never replaces an "
            f"existing file. Regenerate both with `{regenerate}` and run this command again, "
            f"or move {present[0]} away to let this command generate the dataset."
        )
    log.info("Dataset %s not found in %s: generating it locally.", name, root)
    try:
        generate_dataset(
            name,
            out_dir=root,
            num_episodes=cfg.data.num_episodes,
            seed=cfg.seed,
            workers=cfg.data.workers,
            progress=cfg.progress,
        )
    except FileExistsError as err:  # the interrupted generation had other settings
        raise FileExistsError(
            f"data.generate_if_missing=true cannot finish the dataset {name}: "
            f"{shard_dir(files[0])} holds an interrupted generation with other settings "
            f"than this run's (seed={cfg.seed}, data.num_episodes={cfg.data.num_episodes}). "
            "Finish it with the `sorl-data generate` command that started it, or discard it "
            f"and generate the dataset with this run's settings: `{regenerate}`."
        ) from err
    return root


def build_modules(cfg: DictConfig) -> tuple[ShortcutActor, QEnsemble, ShortcutLoss, SORLUpdateStep]:
    """Actor, critic, loss and update step from the config groups, on ``cfg.device``.

    The observation and action sizes come from the dataset spec of ``env.name``; ``network``,
    ``loss``, ``optim`` and ``compile`` give the rest.
    """
    dataset_spec(cfg)  # env.name is known (the error lists the known names)
    sections = ("env", "network", "loss")
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in sections}
    # The replay buffer checked the dataset's values once when it was built, so the loss
    # checks only keys and shapes per batch (no device synchronisation per update).
    actor, critic, loss = build_sorl_modules(config, device=cfg.device, validate_inputs=False)
    update = SORLUpdateStep(
        loss, compile=cfg.get("compile", False), **OmegaConf.to_container(cfg.optim, resolve=True)
    )
    return actor, critic, loss, update


def check_resumable(
    state: dict[str, Any], identity: dict[str, Any], num_updates: int, path: Path
) -> None:
    """Refuse to continue the run in checkpoint ``state`` as a run of ``identity``.

    Raises:
        CheckpointError: The identities differ in more than the run's length and evaluation
            (every difference is named), or ``num_updates`` is below the checkpoint's update.
    """
    diffs = resume_differences(record_identity(state), identity, f"Checkpoint {path}")
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} was written by another run:\n  "
            + "\n  ".join(diffs)
            + "\nA resume may only raise num_updates or change eval.*. Use the checkpoint's "
            "settings, or a new run_dir for a new run."
        )
    if num_updates < state["step"]:
        raise CheckpointError(
            f"num_updates={num_updates} is below update {state['step']} that checkpoint {path} "
            f"holds: a resume extends a run, it cannot shorten it. Pass num_updates>="
            f"{state['step']}, or use a new run_dir."
        )


def load_weights(loss: ShortcutLoss, state: dict[str, Any], path: Path) -> None:
    """Load the loss's networks and targets from a checkpoint, every tensor with its shape.

    Raises:
        CheckpointError: A weight is missing, unexpected or of another shape (each named).
    """
    load_module_state(loss, state["loss"], path)
