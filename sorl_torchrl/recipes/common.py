"""Pieces shared by the training and evaluation recipes.

Building modules from a config, checkpoint contents, and the checks that keep an
incompatible checkpoint from being used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.checkpoint import CheckpointError

#: Config groups that define the model: a checkpoint only resumes under the same values.
MODEL_GROUPS = ("env", "network", "loss", "optim")
CHECKPOINT_NAME = "checkpoint.pt"


def dataset_id(cfg: DictConfig) -> str:
    """The singletask id, e.g. ``cube-single-play-singletask-task2-v0``."""
    task = int(cfg.env.task)
    if not 1 <= task <= 5:
        raise ValueError(f"env.task must be 1-5, got {task}.")
    return f"{cfg.env.name}-singletask-task{task}-v0"


def build_modules(cfg: DictConfig) -> tuple[ShortcutActor, QEnsemble, ShortcutLoss, SORLUpdateStep]:
    """Actor, critic, loss and update step from the config groups, on ``cfg.device``.

    Reads ``env`` (sizes), ``network``, ``loss``, ``optim`` and ``compile``.
    """
    obs_dim, act_dim = int(cfg.env.observation_dim), int(cfg.env.action_dim)
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
    loss = ShortcutLoss(actor, critic, **OmegaConf.to_container(cfg.loss, resolve=True))
    update = SORLUpdateStep(
        loss, compile=cfg.get("compile", False), **OmegaConf.to_container(cfg.optim, resolve=True)
    )
    return actor, critic, loss, update


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved model-defining part of ``cfg`` (what a checkpoint must match)."""
    return {group: OmegaConf.to_container(cfg[group], resolve=True) for group in MODEL_GROUPS}


def check_compatible(saved: dict[str, Any], cfg: DictConfig, path: Path) -> None:
    """Raise :class:`CheckpointError` naming every setting that differs from the checkpoint."""
    current = model_config(cfg)
    diffs = []
    for group in MODEL_GROUPS:
        old, new = saved.get(group, {}), current[group]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(f"{group}.{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}")
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} was written with another configuration:\n  "
            + "\n  ".join(diffs)
            + "\nUse the checkpoint's settings, or a new run_dir for a new run."
        )


def load_weights(loss: ShortcutLoss, state: dict[str, Any]) -> None:
    """Load the loss's networks and targets from a checkpoint state."""
    loss.load_state_dict(state["loss"])


def select_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch sees no CUDA device.")
    return device
