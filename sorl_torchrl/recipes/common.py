"""Pieces shared by the training and evaluation recipes.

The dataset a config names (and its sizes, from the dataset spec), the modules built from a
config, and the checks that keep a checkpoint from being resumed or evaluated as another run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import CheckpointError
from sorl_torchrl.data.specs import DATASETS, DatasetSpec, _unknown, get_dataset_spec
from sorl_torchrl.recipes.run_record import CHECKPOINT_NAME, record_identity, resume_differences

__all__ = [
    "CHECKPOINT_NAME",
    "build_modules",
    "check_resumable",
    "dataset_id",
    "dataset_spec",
    "env_names",
    "load_weights",
    "select_device",
]


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


def build_modules(cfg: DictConfig) -> tuple[ShortcutActor, QEnsemble, ShortcutLoss, SORLUpdateStep]:
    """Actor, critic, loss and update step from the config groups, on ``cfg.device``.

    The observation and action sizes come from the dataset spec of ``env.name``; ``network``,
    ``loss``, ``optim`` and ``compile`` give the rest.
    """
    spec = dataset_spec(cfg)
    obs_dim, act_dim = spec.observation_dim, spec.action_dim
    net = cfg.network
    actor = ShortcutActor(obs_dim, act_dim, num_cells=tuple(net.actor_cells))
    critic = QEnsemble(
        obs_dim,
        act_dim,
        int(net.num_critics),
        num_cells=tuple(net.critic_cells),
        condition_on_steps=bool(net.condition_on_steps),
        step_feature=net.step_feature,
        layer_norm=bool(net.critic_layer_norm),
    )
    actor, critic = actor.to(cfg.device), critic.to(cfg.device)
    # The replay buffer checked the dataset's values once when it was built, so the loss
    # checks only keys and shapes per batch (no device synchronisation per update).
    loss = ShortcutLoss(
        actor, critic, validate_inputs=False, **OmegaConf.to_container(cfg.loss, resolve=True)
    )
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
    saved, expected = state["loss"], loss.state_dict()
    problems = [f"missing from the checkpoint: {key}" for key in expected if key not in saved]
    problems += [f"not in the model: {key}" for key in saved if key not in expected]
    problems += [
        f"{key}: checkpoint {tuple(saved[key].shape)}, model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in saved and tuple(saved[key].shape) != tuple(value.shape)
    ]
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if problems[10:] else [])
        raise CheckpointError(
            f"The weights in {path} do not fit the networks its config builds:\n  "
            + "\n  ".join(shown)
            + "\nThe checkpoint was written by other code or edited; evaluate it with the "
            "sorl-torchrl version that wrote it."
        )
    loss.load_state_dict(saved)


def select_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device.")
    return device
