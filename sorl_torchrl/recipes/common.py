"""Pieces shared by the training and evaluation recipes.

The dataset a config names (its sizes, from the dataset spec; its files, generated if asked),
the modules built from a config, and the checks that keep a checkpoint from being resumed or
evaluated as another run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint, load_module_state
from sorl_torchrl.data.specs import DATASETS, DatasetSpec, _unknown, get_dataset_spec
from sorl_torchrl.deploy.build import build_sorl_modules
from sorl_torchrl.recipes.run_record import CHECKPOINT_NAME, record_identity, resume_differences
from sorl_torchrl.recipes.runtime import Runtime, resolve_runtime

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
    """The dataset dir, holding the dataset's two files from ``data.source``.

    ``data.root`` (null: the source's default dir, ``~/.ogbench/data`` for official data,
    ``~/.sorl_torchrl/regenerated`` for regenerated data). With ``data.download_if_missing``
    missing official files are downloaded; with ``data.generate_if_missing`` a missing
    dataset is generated, and an interrupted generation finished. An existing file is never
    replaced: a dataset with only one of its two files is an error that gives the command
    regenerating both. Each file's provenance must match ``data.source`` (a regenerated file
    never passes for official data); see :mod:`sorl_torchrl.recipes.dataset_source`.
    """
    from sorl_torchrl.recipes.dataset_source import obtain_dataset

    return obtain_dataset(cfg, dataset_spec(cfg))


def build_modules(
    cfg: DictConfig, runtime: Runtime | None = None
) -> tuple[ShortcutActor, QEnsemble, ShortcutLoss, SORLUpdateStep]:
    """Actor, critic, loss and update step from the config groups.

    The observation and action sizes come from the dataset spec of ``env.name``; ``network``,
    ``loss`` and ``optim`` give the rest; ``runtime`` (default: resolved from ``cfg`` by
    :func:`~sorl_torchrl.recipes.runtime.resolve_runtime`) the device and compile mode.
    """
    runtime = runtime or resolve_runtime(cfg)
    sections = ("env", "network", "loss")
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in sections}
    if cfg.get("sizes") is not None:  # read from the data (data.dataset=<prefix>:<id>)
        config["sizes"] = OmegaConf.to_container(cfg.sizes, resolve=True)
    else:
        dataset_spec(cfg)  # env.name is known (the error lists the known names)
    # The replay buffer checked the dataset's values once when it was built, so the loss
    # checks only keys and shapes per batch (no device synchronisation per update).
    actor, critic, loss = build_sorl_modules(config, device=runtime.device, validate_inputs=False)
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    update = SORLUpdateStep(loss, compile=runtime.compile_mode or False, **optim)
    return actor, critic, loss, update


def check_resumable(
    state: dict[str, Any],
    identity: dict[str, Any],
    num_updates: int,
    path: Path,
    online_steps: int = 0,
) -> None:
    """Refuse to continue the run in checkpoint ``state`` as a run of ``identity``.

    Raises:
        CheckpointError: The identities differ in more than the run's length and evaluation
            (every difference is named), ``num_updates`` or ``online_steps`` is below the
            checkpoint's, or ``num_updates`` is raised after the online phase began.
    """
    diffs = resume_differences(record_identity(state), identity, f"Checkpoint {path}")
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} was written by another run:\n  "
            + "\n  ".join(diffs)
            + "\nA resume may only raise num_updates or online_steps, or change eval.*. Use "
            "the checkpoint's settings, or a new run_dir for a new run."
        )
    if num_updates < state["step"]:
        raise CheckpointError(
            f"num_updates={num_updates} is below update {state['step']} that checkpoint {path} "
            f"holds: a resume extends a run, it cannot shorten it. Pass num_updates>="
            f"{state['step']}, or use a new run_dir."
        )
    online = (state.get("online") or {}).get("step", 0)
    if online_steps < online:
        raise CheckpointError(
            f"online_steps={online_steps} is below the {online} online steps that checkpoint "
            f"{path} holds: pass online_steps>={online}, or use a new run_dir."
        )
    if online and num_updates != state["step"]:
        raise CheckpointError(
            f"num_updates={num_updates}, but checkpoint {path} is {online} steps into the "
            f"online phase that followed update {state['step']}: offline updates cannot follow "
            f"online ones. Pass num_updates={state['step']}, or use a new run_dir."
        )


def trained_updates(state: dict[str, Any]) -> int:
    """The updates behind a checkpoint's weights: offline ones plus one per online step.

    Examples:
        >>> trained_updates({"step": 15000, "online": {"step": 10}})
        15010
    """
    return int(state["step"]) + int((state.get("online") or {}).get("step", 0))


def load_init_checkpoint(
    cfg: DictConfig, device: torch.device
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint ``init_from`` names (a run dir or a ``checkpoint.pt``), checked.

    A run started from it takes its weights, optimiser state and update count, and trains
    from there (offline up to ``num_updates``, then ``online_steps`` online); its online
    transitions, random state and sampler position are not carried over.

    Returns:
        ``(state, init)``: the checkpoint, and the run record's ``init_from`` entry (path,
        update, algorithm, the run identity it was written under).

    Raises:
        FileNotFoundError: nothing at ``init_from``.
        CheckpointError: the file is not a checkpoint, was written by another algorithm, or
            holds more updates than ``num_updates``.
    """
    path = Path(str(cfg.init_from)).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"init_from={cfg.init_from}: no checkpoint at {path}. Pass a run dir that holds "
            f"{CHECKPOINT_NAME}, or the checkpoint file itself."
        )
    state = load_checkpoint(path, map_location=device)
    stored = (state.get("config") or {}).get("algo", {}).get("name", "sorl")
    wanted = cfg.algo.name if "algo" in cfg else "sorl"
    if stored != wanted:
        raise CheckpointError(
            f"init_from={path} holds a {stored} model, but this run is algo={wanted}: pass "
            f"algo={stored}, or a checkpoint of a {wanted} run."
        )
    if cfg.num_updates < state["step"]:
        raise CheckpointError(
            f"init_from={path} holds update {state['step']}, above num_updates="
            f"{cfg.num_updates}: pass num_updates={state['step']} (no more offline updates) "
            "or more."
        )
    init = {
        "path": str(path.resolve()),
        "update": int(state["step"]),
        "online_steps": int((state.get("online") or {}).get("step", 0)),
        "algo": stored,
        "run_key": state.get("run_key"),
    }
    return state, init


def load_weights(loss: ShortcutLoss, state: dict[str, Any], path: Path) -> None:
    """Load the loss's networks and targets from a checkpoint, every tensor with its shape.

    Raises:
        CheckpointError: A weight is missing, unexpected or of another shape (each named).
    """
    load_module_state(loss, state["loss"], path)
