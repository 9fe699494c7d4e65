"""The FQL and flow-BC baselines' networks, losses and update step from a run config.

Like :func:`~sorl_torchrl.deploy.build.build_sorl_modules`: the sizes come from
``config["sizes"]`` or the dataset ``env.name`` (:func:`~sorl_torchrl.deploy.build.model_sizes`),
the networks from ``config["network"]`` and the loss's keyword arguments from
``config["loss"]``; the networks are always built in the same order, so the initial weights
depend on the seed alone. The module builders return ``(actor, critic, loss)`` as the
``POLICY_BUILDERS`` of :mod:`sorl_torchrl.deploy.load` do; :func:`build_joint_update` adds
the update step from ``config["optim"]``.

FQL's ``config["network"]`` (every key optional; the released defaults): ``actor_cells``
(4 x 512, the BC flow and the one-step policy), ``critic_cells`` (4 x 512), ``num_critics``
(2), ``critic_layer_norm`` (True), ``actor_layer_norm`` (False, the only value supported);
``condition_on_steps`` may be given as ``False`` (a SORL network config's key; then
``step_feature`` is ignored).

Flow BC's ``config["network"]`` is SORL's (:data:`~sorl_torchrl.deploy.build.NETWORK_KEYS`);
``num_critics: 0`` builds no critic at all (no verifier).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from sorl_torchrl._validation import FLAG, Choice, SettingError, Settings
from sorl_torchrl.deploy.build import build_networks, model_sizes
from sorl_torchrl.modules.actor import ShortcutActor, ShortcutModel
from sorl_torchrl.modules.critic import QEnsemble
from sorl_torchrl.modules.networks import DEFAULT_NUM_CELLS, LAYER_SIZES, SIZE, VelocityMLP
from sorl_torchrl.modules.one_step_policy import OneStepPolicy
from sorl_torchrl.objectives.flow_bc import FlowBCLoss
from sorl_torchrl.objectives.fql import FQLLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep

__all__ = [
    "FQL_NETWORK_DEFAULTS",
    "FQL_NETWORK_SETTINGS",
    "build_flow_bc_modules",
    "build_fql_modules",
    "build_fql_networks",
    "build_joint_update",
]

#: The released defaults of FQL's ``config["network"]`` (``agents/fql.py``, ``get_config``).
FQL_NETWORK_DEFAULTS: dict[str, Any] = {
    "actor_cells": list(DEFAULT_NUM_CELLS),
    "critic_cells": list(DEFAULT_NUM_CELLS),
    "num_critics": 2,
    "critic_layer_norm": True,
    "actor_layer_norm": False,
    "condition_on_steps": False,
    "step_feature": "steps",
}


def _no_actor_layer_norm(value: Any, name: str) -> bool:
    """``actor_layer_norm`` may only be ``False`` (the released default): a check."""
    if value is not False:
        raise SettingError(
            name,
            value,
            "False",
            "The actor MLPs (make_velocity_mlp, VelocityMLP) have no LayerNorm; the released "
            "FQL default is actor_layer_norm=False.",
        )
    return False


#: The checks of FQL's ``config["network"]``.
FQL_NETWORK_SETTINGS = Settings(
    "network",
    {
        "actor_cells": LAYER_SIZES,
        "critic_cells": LAYER_SIZES,
        "num_critics": SIZE,
        "critic_layer_norm": FLAG,
        "actor_layer_norm": _no_actor_layer_norm,
        "condition_on_steps": Choice(False),
        "step_feature": Choice("steps", "log2"),
    },
)


def build_fql_networks(
    config: Mapping[str, Any], device: str | torch.device | None = None
) -> tuple[OneStepPolicy, ShortcutModel, QEnsemble]:
    """FQL's one-step policy, BC flow and critic, in that order.

    The BC flow ``f(s, x, t)`` is a :class:`~sorl_torchrl.modules.ShortcutModel` on a
    :class:`~sorl_torchrl.modules.networks.VelocityMLP`, evaluated by the loss at a fixed
    step code (the network's step input is unused).

    Raises:
        ValueError: a network setting is invalid (each is named), or the sizes are unknown.

    Examples:
        >>> policy, flow, critic = build_fql_networks(
        ...     {"sizes": {"observation_dim": 3, "action_dim": 2},
        ...      "network": {"actor_cells": [16], "critic_cells": [16]}})
        >>> policy.action_dim, flow.observation_dim, critic.num_members
        (2, 3, 2)
        >>> build_fql_networks({"sizes": {"observation_dim": 3, "action_dim": 2},
        ...                     "network": {"actor_layer_norm": True}})
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: actor_layer_norm must be False, got True. ...
    """
    obs_dim, act_dim = model_sizes(config)
    given = dict(config.get("network") or {})
    net = FQL_NETWORK_SETTINGS.check({**FQL_NETWORK_DEFAULTS, **given})
    policy = OneStepPolicy(obs_dim, act_dim, num_cells=net["actor_cells"])
    flow = ShortcutModel(VelocityMLP(obs_dim, act_dim, net["actor_cells"]), obs_dim, act_dim)
    critic = QEnsemble(
        obs_dim,
        act_dim,
        net["num_critics"],
        num_cells=net["critic_cells"],
        condition_on_steps=False,
        layer_norm=net["critic_layer_norm"],
    )
    if device is not None:
        policy, flow, critic = policy.to(device), flow.to(device), critic.to(device)
    return policy, flow, critic


def build_fql_modules(
    config: Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    validate_inputs: bool = True,
) -> tuple[OneStepPolicy, QEnsemble, FQLLoss]:
    """FQL's one-step policy, critic and :class:`~sorl_torchrl.objectives.fql.FQLLoss`.

    The BC flow is the loss's ``bc_flow_network``.

    Args:
        config: a run config (plain dicts): ``network`` (see the module docstring),
            ``loss`` (keyword arguments of :class:`FQLLoss`, e.g. ``alpha``, ``q_agg``,
            ``discount`` per environment) and the sizes.
        device: where to put the networks.
        validate_inputs: passed to the loss.

    Raises:
        ValueError: a network or loss setting is invalid, or the sizes are unknown.
        TypeError: ``config["loss"]`` names a setting :class:`FQLLoss` does not have.

    Examples:
        >>> config = {"env": {"name": "cube-single-play"},
        ...           "network": {"actor_cells": [16], "critic_cells": [16]},
        ...           "loss": {"alpha": 300.0}}
        >>> policy, critic, loss = build_fql_modules(config)
        >>> loss.alpha, loss.flow_steps, policy.observation_dim, critic.action_dim
        (300.0, 10, 28, 5)
    """
    policy, flow, critic = build_fql_networks(config, device)
    settings = dict(config.get("loss") or {})
    loss = FQLLoss(policy, flow, critic, validate_inputs=validate_inputs, **settings)
    return policy, critic, loss


def build_flow_bc_modules(
    config: Mapping[str, Any],
    device: str | torch.device | None = None,
    *,
    validate_inputs: bool = True,
) -> tuple[ShortcutActor, QEnsemble | None, FlowBCLoss]:
    """The shortcut actor, its critic (or none) and the :class:`FlowBCLoss`.

    Args:
        config: a run config (plain dicts): ``network`` with SORL's network keys
            (``num_critics: 0``: no critic, no verifier), ``loss`` (keyword arguments of
            :class:`~sorl_torchrl.objectives.flow_bc.FlowBCLoss`) and the sizes.
        device: where to put the networks.
        validate_inputs: passed to the loss.

    Raises:
        ValueError: a network or loss setting is invalid, or the sizes are unknown.
        TypeError: ``config["loss"]`` names a setting the loss does not have.

    Examples:
        >>> network = {"actor_cells": [16], "critic_cells": [16], "num_critics": 0,
        ...            "critic_layer_norm": True, "condition_on_steps": True,
        ...            "step_feature": "steps"}
        >>> config = {"sizes": {"observation_dim": 3, "action_dim": 2}, "network": network}
        >>> actor, critic, loss = build_flow_bc_modules(config)
        >>> critic is None, loss.has_critic, actor.trained_steps
        (True, False, 8)
    """
    network = dict(config.get("network") or {})
    with_critic = network.get("num_critics") != 0
    if not with_critic:  # the builder of SORL's networks needs a valid ensemble size
        network["num_critics"] = 1
    actor, critic = build_networks({**config, "network": network}, device=device)
    if not with_critic:
        critic = None
    settings = dict(config.get("loss") or {})
    loss = FlowBCLoss(actor, critic, validate_inputs=validate_inputs, **settings)
    return actor, critic, loss


def build_joint_update(
    loss: FQLLoss | FlowBCLoss, config: Mapping[str, Any], *, compile: bool | str = False
) -> JointUpdateStep:
    """The :class:`~sorl_torchrl.objectives.joint_update.JointUpdateStep` of ``config["optim"]``.

    ``config["optim"]`` holds its keyword arguments (``lr``, ``tau``, ``grad_clip_norm``,
    ``target_from_pre_step``); absent ones keep the released defaults (3e-4, 0.005, none,
    True). It works for every loss of the joint update (FQL, flow BC, IQL, ReBRAC).

    Examples:
        >>> _, _, loss = build_fql_modules({"sizes": {"observation_dim": 3, "action_dim": 2},
        ...     "network": {"actor_cells": [8], "critic_cells": [8]}})
        >>> update = build_joint_update(loss, {"optim": {"lr": 1e-3}})
        >>> update.optimizer.defaults["lr"], update.tau
        (0.001, 0.005)
    """
    settings = dict(config.get("optim") or {})
    return JointUpdateStep(loss, compile=compile, **settings)
