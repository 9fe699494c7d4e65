"""The shared SORL update step: critic step, target update, actor step, target update."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate

from sorl_torchrl.objectives.shortcut import ShortcutLoss

__all__ = ["SORLUpdateStep", "default_adam"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def default_adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where the device supports it (one pass per tensor).

    The fused implementation computes the same update as the for-loop one up to float
    rounding; devices without it get the ``foreach`` implementation.

    Examples:
        >>> opt = default_adam([nn.Parameter(torch.zeros(3))], lr=1e-4)
        >>> opt.defaults["lr"]
        0.0001
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class SORLUpdateStep:
    """One SORL training iteration on a batch, in the order of the released code.

    ``critic step -> critic target update -> actor step -> actor target update``. Each step
    is ``zero_grad -> backward -> clip global grad norm -> optimizer.step``.

    The released-code quirks that concern optimisation are reproduced by default, each
    behind a switch (quirks (a), (e), (f) are switches of :class:`ShortcutLoss` and
    :class:`~sorl_torchrl.QEnsemble`):

    - quirk (b) ``shared_optimizer=True``: one Adam state over actor and critic, stepped at
      both steps; the gradient clip covers all parameters, and parameters with zero gradient
      (the critic during the actor step) still move through Adam momentum. ``False``: one
      optimizer (and one clip) per network, each stepped once per iteration.
    - quirk (c) ``actor_uses_pre_step_critic=True``: the actor step scores its actions with
      the critic from *before* the critic step (the target actor is also the pre-iteration
      one, as it is only updated afterwards). ``False`` uses the updated critic.
    - quirk (d) ``targets_track_pre_step_weights=True``: the target updates average the
      online weights from *before* the iteration's steps. ``False`` uses a plain
      :class:`torchrl.objectives.SoftUpdate` after both steps.

    Args:
        loss: the SORL loss.
        lr: learning rate of the default Adam (paper 1e-4).
        tau: target update rate (paper 0.005).
        grad_clip_norm: max global gradient norm; ``None`` or ``0`` disables clipping.
        optimizer_factory: builds an optimizer from parameters (default
            :func:`~sorl_torchrl.objectives.update.default_adam`, Adam with the fused
            kernel where available).
        shared_optimizer: quirk (b).
        actor_uses_pre_step_critic: quirk (c).
        targets_track_pre_step_weights: quirk (d).
        compile: compile the loss bodies with ``torch.compile`` (see
            :meth:`ShortcutLoss.compile_terms`): ``False`` (default) runs eagerly on the
            fast path, ``True`` uses mode ``"default"``, a string names the mode (e.g.
            ``"max-autotune-no-cudagraphs"``, or ``"reduce-overhead"`` for CUDA graphs on a
            GPU). Compilation takes tens of seconds per step count ``k`` on a CPU; a
            failure warns and falls back to eager.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
        >>> loss = ShortcutLoss(ShortcutActor(3, 2, num_cells=(16,)),
        ...                     QEnsemble(3, 2, num_cells=(16,)))
        >>> update = SORLUpdateStep(loss)
        >>> batch = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": -torch.ones(8, 1),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)}}, batch_size=[8])
        >>> info = update(batch)
        >>> sorted(k for k in info.keys() if k.startswith("loss_"))
        ['loss_actor', 'loss_qvalue']
    """

    def __init__(
        self,
        loss: ShortcutLoss,
        *,
        lr: float = 1e-4,
        tau: float = 0.005,
        grad_clip_norm: float | None = 1.0,
        optimizer_factory: OptimizerFactory | None = None,
        shared_optimizer: bool = True,
        actor_uses_pre_step_critic: bool = True,
        targets_track_pre_step_weights: bool = True,
        compile: bool | str = False,
    ) -> None:
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}.")
        self.loss = loss
        self.tau = tau
        self.grad_clip_norm = grad_clip_norm or None
        self.shared_optimizer = shared_optimizer
        self.actor_uses_pre_step_critic = actor_uses_pre_step_critic
        self.targets_track_pre_step_weights = targets_track_pre_step_weights
        factory = optimizer_factory or (lambda params: default_adam(params, lr))
        self.actor_params = list(loss.actor_network_params.values(True, True))
        self.critic_params = list(loss.qvalue_network_params.values(True, True))
        if shared_optimizer:
            self.optimizers = {"shared": factory(self.actor_params + self.critic_params)}
        else:
            self.optimizers = {
                "critic": factory(self.critic_params),
                "actor": factory(self.actor_params),
            }
        # Marks the loss's target params as updated (and does the plain soft update).
        self.target_updater = SoftUpdate(loss, tau=tau)
        self._target_actor = list(loss.target_actor_network_params.values(True, True))
        self._target_critic = list(loss.target_qvalue_network_params.values(True, True))
        # Buffers for the pre-step weights (quirks (c) and (d)); allocated once.
        self._pre_critic = loss.qvalue_network_params.data.clone()
        self._pre_critic_list = list(self._pre_critic.values(True, True))
        self._pre_actor_list = [p.detach().clone() for p in self.actor_params]
        # Detached views of the online weights (optimizers update them in place), and the
        # parameters each step clips, built once rather than in every iteration.
        self._critic_data = [p.detach() for p in self.critic_params]
        self._actor_data = [p.detach() for p in self.actor_params]
        everything = self.actor_params + self.critic_params
        self._clipped = {
            "critic": everything if shared_optimizer else self.critic_params,
            "actor": everything if shared_optimizer else self.actor_params,
        }
        self.compile_mode = ("default" if compile is True else compile) or None
        if self.compile_mode is not None:
            if not hasattr(torch, "compile"):
                warnings.warn("torch.compile is unavailable: running eagerly.", stacklevel=2)
            else:
                loss.compile_terms(self.compile_mode)

    def _step(self, which: str, loss_value: torch.Tensor) -> None:
        name = "shared" if self.shared_optimizer else which
        optimizer = self.optimizers[name]
        # Gradients are set to None rather than zeroed, so that backward stores the new
        # gradients instead of adding them to zero-filled buffers.
        for opt in self.optimizers.values():  # also drops cross-network grads (quirk (a))
            opt.zero_grad(set_to_none=True)
        loss_value.backward()
        if self.shared_optimizer:
            # A zero (not a missing) gradient for what the loss does not reach (the critic
            # in the actor step), so that every parameter takes every Adam step (quirk (b)).
            for param in self._clipped[which]:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self._clipped[which], self.grad_clip_norm, foreach=True)
        optimizer.step()

    @torch.no_grad()
    def _snapshot(self) -> None:
        if self.actor_uses_pre_step_critic or self.targets_track_pre_step_weights:
            torch._foreach_copy_(self._pre_critic_list, self._critic_data)
        if self.targets_track_pre_step_weights:
            torch._foreach_copy_(self._pre_actor_list, self._actor_data)

    @torch.no_grad()
    def _lerp_targets(self, targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
        torch._foreach_lerp_(targets, sources, self.tau)

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Run one iteration on ``batch``; returns the detached losses and diagnostics."""
        self._snapshot()
        loss_qvalue, meta_qvalue = self.loss.qvalue_loss(batch)
        self._step("critic", loss_qvalue)
        if self.targets_track_pre_step_weights:
            self._lerp_targets(self._target_critic, self._pre_critic_list)
        critic_params = self._pre_critic if self.actor_uses_pre_step_critic else None
        loss_actor, meta_actor = self.loss.actor_loss(batch, qvalue_params=critic_params)
        self._step("actor", loss_actor)
        if self.targets_track_pre_step_weights:
            self._lerp_targets(self._target_actor, self._pre_actor_list)
        else:
            self.target_updater.step()
        meta_qvalue.pop("td_error")
        return TensorDict(
            {
                "loss_qvalue": loss_qvalue.detach(),
                "loss_actor": loss_actor.detach(),
                **meta_qvalue,
                **meta_actor,
            }
        )

    def state_dict(self) -> dict:
        """Optimizer states (for checkpoints; the networks live in the loss's state dict)."""
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore optimizer states written by :meth:`state_dict`."""
        if set(state) != set(self.optimizers):
            raise ValueError(
                f"optimizer state has {sorted(state)}, this update step has "
                f"{sorted(self.optimizers)} (shared_optimizer={self.shared_optimizer})."
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
