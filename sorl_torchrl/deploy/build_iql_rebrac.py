"""The IQL and ReBRAC baselines' networks and losses from a run config (plain dicts).

Like :func:`~sorl_torchrl.deploy.build.build_sorl_modules`: the sizes come from
``config["sizes"]`` or the dataset ``env.name`` (:func:`~sorl_torchrl.deploy.build.model_sizes`),
the networks from ``config["network"]`` and the loss's keyword arguments from
``config["loss"]``. The networks are always built in the same order (actor, critic, then
IQL's value network), so the initial weights depend on the seed alone.

``config["network"]`` (every key optional; the released FQL-repository defaults):

- ``actor_cells`` (4 x 512), ``critic_cells`` (4 x 512; IQL's ``V(s)`` uses them too, as
  the released ``value_hidden_dims`` serves both);
- ``num_critics`` (2), ``critic_layer_norm`` (True), ``actor_mean_head_scale`` (0.01);
- ReBRAC only: ``actor_noise`` (0.2), ``actor_noise_clip`` (0.5);
- ``condition_on_steps`` may be given as ``False`` (a SORL network config's key;
  ``step_feature`` is then ignored): the baselines' critic is ``Q(s, a)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sorl_torchrl._validation import FLAG, Choice, Number, Settings
from sorl_torchrl.deploy.build import model_sizes
from sorl_torchrl.modules.baseline_actors import GaussianActor, TanhActor
from sorl_torchrl.modules.critic import QEnsemble
from sorl_torchrl.modules.networks import DEFAULT_NUM_CELLS, LAYER_SIZES, SIZE
from sorl_torchrl.modules.value import StateValue
from sorl_torchrl.objectives.iql import IQLLoss
from sorl_torchrl.objectives.rebrac import ReBRACLoss

__all__ = [
    "BASELINE_NETWORK_DEFAULTS",
    "BASELINE_NETWORK_SETTINGS",
    "build_iql_modules",
    "build_rebrac_modules",
]

#: The released defaults of ``config["network"]`` (FQL repository, ``get_config``).
BASELINE_NETWORK_DEFAULTS: dict[str, Any] = {
    "actor_cells": list(DEFAULT_NUM_CELLS),
    "critic_cells": list(DEFAULT_NUM_CELLS),
    "num_critics": 2,
    "critic_layer_norm": True,
    "actor_mean_head_scale": 0.01,
    "actor_noise": 0.2,
    "actor_noise_clip": 0.5,
    "condition_on_steps": False,
    "step_feature": "steps",
}
#: The checks of ``config["network"]`` for the baselines.
BASELINE_NETWORK_SETTINGS = Settings(
    "network",
    {
        "actor_cells": LAYER_SIZES,
        "critic_cells": LAYER_SIZES,
        "num_critics": SIZE,
        "critic_layer_norm": FLAG,
        "actor_mean_head_scale": Number("(0, inf)"),
        "actor_noise": Number("[0, inf)"),
        "actor_noise_clip": Number("[0, inf)"),
        "condition_on_steps": Choice(False),
        "step_feature": Choice("steps", "log2"),
    },
)


def _network_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(config.get("network") or {})
    return BASELINE_NETWORK_SETTINGS.check({**BASELINE_NETWORK_DEFAULTS, **given})


def _critic(obs_dim: int, act_dim: int, net: Mapping[str, Any]) -> QEnsemble:
    return QEnsemble(
        obs_dim,
        act_dim,
        net["num_critics"],
        num_cells=net["critic_cells"],
        condition_on_steps=False,
        layer_norm=net["critic_layer_norm"],
    )


def build_iql_modules(
    config: Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    validate_inputs: bool = True,
) -> tuple[GaussianActor, QEnsemble, IQLLoss]:
    """IQL's Gaussian actor, its critic and the :class:`~sorl_torchrl.objectives.iql.IQLLoss`.

    The value network ``V(s)`` is the loss's ``value_network``.

    Args:
        config: a run config (plain dicts): ``network`` (see the module docstring),
            ``loss`` (keyword arguments of :class:`~sorl_torchrl.objectives.iql.IQLLoss`)
            and the sizes.
        device: where to put the networks.
        validate_inputs: passed to the loss.

    Raises:
        ValueError: a network or loss setting is invalid, or the sizes are unknown.
        TypeError: ``config["loss"]`` names a setting the loss does not have.

    Examples:
        >>> config = {"sizes": {"observation_dim": 3, "action_dim": 2},
        ...           "network": {"actor_cells": [16], "critic_cells": [16]},
        ...           "loss": {"discount": 0.995, "alpha": 10.0}}
        >>> actor, critic, loss = build_iql_modules(config)
        >>> loss.discount, actor.temperature, critic.num_members
        (0.995, 0.0, 2)
    """
    obs_dim, act_dim = model_sizes(config)
    net = _network_settings(config)
    actor = GaussianActor(
        obs_dim,
        act_dim,
        num_cells=net["actor_cells"],
        mean_head_scale=net["actor_mean_head_scale"],
    )
    critic = _critic(obs_dim, act_dim, net)
    value = StateValue(obs_dim, num_cells=net["critic_cells"], layer_norm=net["critic_layer_norm"])
    if device is not None:
        actor, critic, value = actor.to(device), critic.to(device), value.to(device)
    settings = dict(config.get("loss") or {})
    loss = IQLLoss(actor, critic, value, validate_inputs=validate_inputs, **settings)
    return actor, critic, loss


def build_rebrac_modules(
    config: Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    validate_inputs: bool = True,
) -> tuple[TanhActor, QEnsemble, ReBRACLoss]:
    """ReBRAC's tanh actor, its critic and the :class:`~sorl_torchrl.objectives.rebrac.ReBRACLoss`.

    Args:
        config: a run config (plain dicts): ``network`` (see the module docstring),
            ``loss`` (keyword arguments of
            :class:`~sorl_torchrl.objectives.rebrac.ReBRACLoss`) and the sizes.
        device: where to put the networks.
        validate_inputs: passed to the loss.

    Raises:
        ValueError: a network or loss setting is invalid, or the sizes are unknown.
        TypeError: ``config["loss"]`` names a setting the loss does not have.

    Examples:
        >>> config = {"env": {"name": "cube-single-play"},
        ...           "network": {"actor_cells": [16], "critic_cells": [16]},
        ...           "loss": {"alpha_actor": 0.01, "alpha_critic": 0.01}}
        >>> actor, critic, loss = build_rebrac_modules(config)
        >>> actor.observation_dim, actor.action_dim, loss.delay
        (28, 5, 2)
    """
    obs_dim, act_dim = model_sizes(config)
    net = _network_settings(config)
    actor = TanhActor(
        obs_dim,
        act_dim,
        num_cells=net["actor_cells"],
        mean_head_scale=net["actor_mean_head_scale"],
        noise_scale=net["actor_noise"],
        noise_clip=net["actor_noise_clip"],
    )
    critic = _critic(obs_dim, act_dim, net)
    if device is not None:
        actor, critic = actor.to(device), critic.to(device)
    settings = dict(config.get("loss") or {})
    loss = ReBRACLoss(actor, critic, validate_inputs=validate_inputs, **settings)
    return actor, critic, loss
