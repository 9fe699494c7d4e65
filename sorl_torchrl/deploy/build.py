"""The networks a run's config describes: one builder for training, evaluation and deployment.

A run's recorded config (its checkpoint and ``results.json`` hold it) names the dataset
(``env.name``), whose spec gives the observation and action sizes, and the ``network`` and
``loss`` settings. :func:`build_sorl_modules` turns them into the actor, the critic and the
loss, always in the same order, so the initial weights depend on the seed alone. The training
recipe builds its modules with it (and adds the update step); :func:`~sorl_torchrl.load_policy`
rebuilds a checkpoint's networks with it before loading their weights.

A model trained without an OGBench dataset (the toy bandit, your own data) names its sizes in
``config["sizes"]`` instead: ``{"observation_dim": ..., "action_dim": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sorl_torchrl.data.specs import get_dataset_spec
from sorl_torchrl.modules import QEnsemble, ShortcutActor
from sorl_torchrl.objectives import ShortcutLoss

__all__ = ["NETWORK_KEYS", "build_networks", "build_sorl_modules", "model_sizes"]

#: The settings of ``config["network"]`` (the recipes' ``network`` config group).
NETWORK_KEYS: tuple[str, ...] = (
    "actor_cells",
    "critic_cells",
    "num_critics",
    "critic_layer_norm",
    "condition_on_steps",
    "step_feature",
)


def model_sizes(config: Mapping[str, Any]) -> tuple[int, int]:
    """``(observation_dim, action_dim)``: ``config["sizes"]``, else the spec of ``env.name``.

    Raises:
        ValueError: The config gives neither, or ``env.name`` is no known dataset.

    Examples:
        >>> model_sizes({"env": {"name": "cube-single-play"}})
        (28, 5)
        >>> model_sizes({"sizes": {"observation_dim": 1, "action_dim": 2}})
        (1, 2)
    """
    sizes = config.get("sizes")
    if sizes is not None:
        return int(sizes["observation_dim"]), int(sizes["action_dim"])
    name = (config.get("env") or {}).get("name")
    if name is None:
        raise ValueError(
            "The config names neither a dataset (env.name) nor the model's sizes "
            "(sizes.observation_dim, sizes.action_dim): add one of them."
        )
    spec = get_dataset_spec(f"{name}-v0")
    return spec.observation_dim, spec.action_dim


def build_networks(
    config: Mapping[str, Any], *, device: str | torch.device | None = None
) -> tuple[ShortcutActor, QEnsemble]:
    """The actor and the critic of ``config["network"]``, sized by :func:`model_sizes`.

    Args:
        config: a run config (plain dicts), with ``network`` holding :data:`NETWORK_KEYS`.
        device: where to put the networks (default: where torch creates tensors).

    Raises:
        ValueError: A network setting is missing (each is named), or the sizes are unknown.

    Examples:
        >>> network = {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...            "critic_layer_norm": True, "condition_on_steps": True,
        ...            "step_feature": "steps"}
        >>> actor, critic = build_networks({"env": {"name": "scene-play"}, "network": network})
        >>> actor.observation_dim, actor.action_dim, critic.num_members
        (40, 5, 2)
    """
    obs_dim, act_dim = model_sizes(config)
    net = config.get("network") or {}
    missing = [key for key in NETWORK_KEYS if key not in net]
    if missing:
        raise ValueError(
            f"config.network lacks {', '.join(missing)}: a network config sets all of "
            f"{', '.join(NETWORK_KEYS)} (see the recipes' conf/network/*.yaml)."
        )
    actor = ShortcutActor(obs_dim, act_dim, num_cells=tuple(net["actor_cells"]))
    critic = QEnsemble(
        obs_dim,
        act_dim,
        int(net["num_critics"]),
        num_cells=tuple(net["critic_cells"]),
        condition_on_steps=bool(net["condition_on_steps"]),
        step_feature=net["step_feature"],
        layer_norm=bool(net["critic_layer_norm"]),
    )
    if device is not None:
        actor, critic = actor.to(device), critic.to(device)
    return actor, critic


def build_sorl_modules(
    config: Mapping[str, Any],
    *,
    device: str | torch.device | None = None,
    validate_inputs: bool = True,
) -> tuple[ShortcutActor, QEnsemble, ShortcutLoss]:
    """Actor, critic (:func:`build_networks`) and the :class:`ShortcutLoss` of ``config["loss"]``.

    Args:
        config: a run config (plain dicts): ``network``, ``loss`` (keyword arguments of
            :class:`ShortcutLoss`; absent ones keep their defaults) and the sizes.
        device: where to put the networks.
        validate_inputs: passed to the loss; the recipes switch it off for data that the
            replay buffer checked once when it was built.

    Raises:
        ValueError: A network setting is missing, the sizes are unknown, or a loss
            setting is invalid.
        TypeError: ``config["loss"]`` names a setting :class:`ShortcutLoss` does not have.

    Examples:
        >>> network = {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...            "critic_layer_norm": True, "condition_on_steps": True,
        ...            "step_feature": "steps"}
        >>> config = {"sizes": {"observation_dim": 1, "action_dim": 2}, "network": network,
        ...           "loss": {"q_agg": "min"}}
        >>> actor, critic, loss = build_sorl_modules(config)
        >>> loss.q_agg, actor.observation_dim, critic.action_dim
        ('min', 1, 2)
    """
    actor, critic = build_networks(config, device=device)
    settings = dict(config.get("loss") or {})
    return actor, critic, ShortcutLoss(actor, critic, validate_inputs=validate_inputs, **settings)
