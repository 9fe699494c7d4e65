"""Small checkpoints for the deploy tests, written the way the training recipe writes them."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from helpers import make_batch

from sorl_torchrl import SORLUpdateStep
from sorl_torchrl.checkpoint import get_rng_state, save_checkpoint
from sorl_torchrl.deploy import build_sorl_modules

OBS, ACT = 28, 5  # cube-single-play, the dataset the config names

TINY_NETWORK = {
    "actor_cells": [16, 16],
    "critic_cells": [16, 16],
    "num_critics": 2,
    "critic_layer_norm": True,
    "condition_on_steps": True,
    "step_feature": "steps",
}


def run_config(**changes) -> dict:
    """A recorded run config as train.py stores it (the parts the networks depend on)."""
    config = {
        "seed": 0,
        "env": {"name": "cube-single-play", "task": 2, "discount": 0.99, "q_agg": "min"},
        "network": copy.deepcopy(TINY_NETWORK),
        "loss": {"discount": 0.99, "q_agg": "min", "q_loss_coef": 10.0, "alpha": 10.0},
        "optim": {"lr": 1e-3},
        "num_updates": 2,
    }
    config.update(changes)
    return config


def write_checkpoint(path: Path, config: dict | None = None, updates: int = 2):
    """Train ``updates`` steps on random batches and save as train.py does; returns the modules.

    The returned actor and critic are the trained originals (their weights equal the saved
    ones), so a test can compare a loaded policy with them.
    """
    config = config or run_config()
    torch.manual_seed(1)
    actor, critic, loss = build_sorl_modules(config)
    update = SORLUpdateStep(loss, **config.get("optim", {}))
    for step in range(updates):
        update(make_batch(32, actor.observation_dim, actor.action_dim, seed=step))
    save_checkpoint(
        path,
        {
            "step": updates,
            "run_key": {"seed": config["seed"]},
            "config": config,
            "loss": loss.state_dict(),
            "optimizers": update.state_dict(),
            "rng": get_rng_state(),
            "wall_time_s": 1.0,
        },
    )
    return actor.eval(), critic.eval()
