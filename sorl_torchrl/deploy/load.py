"""A trained policy from its checkpoint in one call, without Hydra or the recipes.

A checkpoint of the training recipe records the config of its run. :func:`load_networks`
rebuilds the networks that config describes (:mod:`sorl_torchrl.deploy.build`), loads their
weights (every tensor with its shape) and puts them in eval mode on the device, without
gradients; :func:`load_policy` wraps them as a TorchRL policy for a given ``(k, N)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sorl_torchrl._validation import check_device
from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint, load_module_state
from sorl_torchrl.deploy.build import build_sorl_modules
from sorl_torchrl.modules import QEnsemble, ShortcutActor, VerifierSampler

__all__ = [
    "POLICY_BUILDERS",
    "TrainedNetworks",
    "algorithm_of",
    "load_networks",
    "load_policy",
]

#: The builder of each algorithm's networks, by the name of the algorithm (``algo``).
#: A builder takes a run config and ``device=`` and returns ``(actor, critic, module)``,
#: ``module`` being the one whose state dict the checkpoint holds under ``"loss"``. A new
#: algorithm adds its builder here.
#:
#: :meta hide-value:
POLICY_BUILDERS: dict[str, Callable[..., tuple[ShortcutActor, QEnsemble, nn.Module]]] = {
    "sorl": build_sorl_modules,
}


def algorithm_of(config: Mapping[str, Any]) -> str:
    """The algorithm a run config trained (``"sorl"`` when the config does not say).

    ``config["algo"]`` is the algorithm's name, or a config group with a ``name``.

    Examples:
        >>> algorithm_of({}), algorithm_of({"algo": "fql"}), algorithm_of({"algo": {"name": "iql"}})
        ('sorl', 'fql', 'iql')
    """
    algo = config.get("algo", "sorl")
    if isinstance(algo, Mapping):
        algo = algo.get("name", "sorl")
    return str(algo)


@dataclass(frozen=True)
class TrainedNetworks:
    """The actor and critic of a checkpoint, in eval mode on ``device``, without gradients.

    Attributes:
        actor: the shortcut actor.
        critic: the Q ensemble (the verifier's scorer).
        q_agg: how the verifier aggregates the critic's members (the run's ``loss.q_agg``).
        config: the run config recorded in the checkpoint.
        step: the update the checkpoint was written at (``None`` if it does not say).
        path: the checkpoint file.
        device: where the networks are.
    """

    actor: ShortcutActor
    critic: QEnsemble
    q_agg: str
    config: dict[str, Any]
    step: int | None
    path: Path
    device: torch.device

    def sampler(
        self, inference_steps: int = 1, num_candidates: int = 1, *, compile: bool | str = False
    ) -> VerifierSampler:
        """A :class:`VerifierSampler` of these networks (it checks ``k``, ``N`` and ``compile``)."""
        return VerifierSampler(
            self.actor,
            self.critic,
            num_candidates,
            inference_steps,
            q_agg=self.q_agg,
            compile=compile,
        )

    def policy(
        self, inference_steps: int = 1, num_candidates: int = 1, *, compile: bool | str = False
    ) -> VerifierSampler | ShortcutActor:
        """The TorchRL policy for ``(k, N)``: see :func:`load_policy`."""
        sampler = self.sampler(inference_steps, num_candidates, compile=compile)
        if sampler.num_candidates > 1 or sampler.compile_mode is not None:
            return sampler
        # N = 1, eager: the bare actor (sharing the trained velocity network), default k set.
        return ShortcutActor(
            self.actor.observation_dim,
            self.actor.action_dim,
            network=self.actor.module.network,
            inference_steps=sampler.inference_steps,
            in_keys=self.actor.in_keys,
            out_keys=self.actor.out_keys,
        ).eval()


def load_networks(
    path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> TrainedNetworks:
    """Rebuild a checkpoint's networks from its recorded config and load their weights.

    The checkpoint is read with ``torch.load(weights_only=True)``
    (:func:`~sorl_torchrl.checkpoint.load_checkpoint`). Building the networks draws their
    (overwritten) initial weights under a forked RNG, so loading leaves the caller's random
    stream as it was.

    Args:
        path: a checkpoint written by the training recipe (or by
            :func:`~sorl_torchrl.checkpoint.save_checkpoint` with ``config`` and ``loss``).
        device: where to put the networks; it must exist on this machine.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``device`` does not exist here.
        CheckpointError: the file is corrupt or not a sorl-torchrl checkpoint; it records
            no config or the config of another algorithm; or its weights do not fit.
    """
    path = Path(path)
    torch_device = check_device(device)
    state = load_checkpoint(path, map_location=torch_device)
    config = state.get("config")
    if not isinstance(config, Mapping) or "loss" not in state:
        raise CheckpointError(
            f"{path} records no run config and network weights (its keys: "
            f"{', '.join(map(str, state))}): a policy loads from a checkpoint of the training "
            "recipe, or one saved with {'config': ..., 'loss': loss.state_dict()}."
        )
    algo = algorithm_of(config)
    builder = POLICY_BUILDERS.get(algo)
    if builder is None:
        raise CheckpointError(
            f"{path} holds a policy of algo={algo!r}; this version loads "
            f"{', '.join(sorted(POLICY_BUILDERS))} policies. Load it with the sorl-torchrl "
            "version that trained it."
        )
    forked = [torch_device.index or 0] if torch_device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=forked):
            actor, critic, module = builder(config, device=torch_device)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"The config recorded in {path} does not describe networks this version builds "
            f"({type(err).__name__}: {err}). Load it with the sorl-torchrl version that "
            "trained it."
        ) from err
    load_module_state(module, state["loss"], path)
    for network in (actor, critic):
        network.eval().requires_grad_(False)
    return TrainedNetworks(
        actor=actor,
        critic=critic,
        q_agg=str(getattr(module, "q_agg", "mean")),
        config=dict(config),
        step=state.get("step"),
        path=path,
        device=torch_device,
    )


def load_policy(
    path: str | os.PathLike,
    *,
    inference_steps: int = 1,
    num_candidates: int = 1,
    device: str | torch.device = "cpu",
    compile: bool | str = False,
) -> VerifierSampler | ShortcutActor:
    """A trained policy, ready for ``env.rollout(policy=...)``, from its checkpoint.

    Args:
        path: the checkpoint (``checkpoint.pt`` of a training run).
        inference_steps: ``k``, Euler steps per action (a power of two).
        num_candidates: ``N``, candidates per observation, the best kept by the critic.
        device: where the policy runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        compile: compile the step with ``torch.compile`` (``True``, a mode name, or
            ``False``); see :meth:`sorl_torchrl.VerifierSampler.compile_select`.

    Returns:
        A :class:`VerifierSampler` with ``N`` candidates and ``k`` steps; for ``N = 1``
        without compilation, the bare :class:`ShortcutActor` with ``k`` steps (the same
        actions for the same noise, without the verifier's bookkeeping).

    Raises:
        ValueError: ``k`` is not a power of two, ``N < 1``, an unknown compile mode, or a
            device this machine does not have.
        FileNotFoundError: no file at ``path``.
        CheckpointError: see :func:`load_networks`.

    Examples:
        >>> import tempfile, pathlib
        >>> from tensordict import TensorDict
        >>> from sorl_torchrl.checkpoint import save_checkpoint
        >>> from sorl_torchrl.deploy import build_sorl_modules
        >>> config = {"sizes": {"observation_dim": 3, "action_dim": 2},
        ...           "network": {"actor_cells": [16], "critic_cells": [16], "num_critics": 2,
        ...                       "critic_layer_norm": True, "condition_on_steps": True,
        ...                       "step_feature": "steps"}}
        >>> _, _, loss = build_sorl_modules(config)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = save_checkpoint(path, {"step": 0, "config": config, "loss": loss.state_dict()})
        >>> policy = load_policy(path, inference_steps=4, num_candidates=8)
        >>> type(policy).__name__, policy.inference_steps, policy.num_candidates
        ('VerifierSampler', 4, 8)
        >>> policy(TensorDict(observation=torch.randn(5, 3), batch_size=[5]))["action"].shape
        torch.Size([5, 2])
        >>> type(load_policy(path, inference_steps=2)).__name__
        'ShortcutActor'
        >>> try:
        ...     load_policy(path, inference_steps=3)
        ... except ValueError as err:
        ...     print(err)
        inference_steps must be a positive power of two (1, 2, 4, 8, ...), got 3. ...
    """
    networks = load_networks(path, device=device)
    return networks.policy(inference_steps, num_candidates, compile=compile)
