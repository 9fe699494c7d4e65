"""The shared SORL update step: critic step, target update, actor step, target update."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate

from sorl_torchrl._compile import CompiledMethod
from sorl_torchrl._validation import FLAG, Number, Settings, check_compile
from sorl_torchrl.objectives.batch import actor_diagnostics, critic_diagnostics
from sorl_torchrl.objectives.shortcut import ShortcutLoss

__all__ = ["SORLUpdateStep", "default_adam"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

#: The checks of :class:`SORLUpdateStep`'s settings (the recipes' config check reuses them).
UPDATE_SETTINGS = Settings(
    "SORLUpdateStep",
    {
        "lr": Number("(0, inf)"),
        "tau": Number("(0, 1]"),
        "grad_clip_norm": Number("[0, inf)", optional=True, meaning="None or 0: no clipping"),
        "shared_optimizer": FLAG,
        "actor_uses_pre_step_critic": FLAG,
        "targets_track_pre_step_weights": FLAG,
        "compile": check_compile,
    },
)


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
        lr: learning rate of the default Adam, finite and ``> 0`` (paper 1e-4; also checked
            when an ``optimizer_factory`` is given).
        tau: target update rate, in ``(0, 1]`` (paper 0.005; 1 copies the online weights).
        grad_clip_norm: max global gradient norm, finite and ``> 0``; ``None`` or ``0``
            disables clipping. A negative value is refused (it would flip every gradient).
        optimizer_factory: builds an optimizer from parameters (default
            :func:`~sorl_torchrl.objectives.update.default_adam`, Adam with the fused
            kernel where available).
        shared_optimizer: quirk (b) (a bool, as are the next two).
        actor_uses_pre_step_critic: quirk (c).
        targets_track_pre_step_weights: quirk (d).
        compile: compile the training iteration with ``torch.compile``: ``False`` (default)
            runs eagerly, ``True`` uses mode ``"default"``, a string names the mode (e.g.
            ``"max-autotune-no-cudagraphs"``, or ``"reduce-overhead"`` for CUDA graphs on a
            GPU). See "Compilation" below.

    Compilation:
        The critic loss and the actor loss each run as one compiled graph per step count
        ``k`` (at most ``log2(M_BTT) + 1`` graphs each), forward and, through AOTAutograd,
        backward. What stays outside the graphs, and why:

        - the random draws (``k``, noise, times), so that a compiled step consumes the
          random stream exactly like an eager one and gives the same values up to float
          rounding; ``k`` chooses the graph;
        - the ``backward()`` calls: dynamo cannot trace ``Tensor.backward`` into a graph,
          so each runs the backward graph compiled with its forward;
        - the optimizer steps (gradient clip, Adam, target updates): ``Optimizer.step``
          breaks dynamo's graph on purpose, so it could only be a graph of its own, and the
          fused Adam kernel with the ``foreach`` clip and target updates runs faster eagerly
          than inductor's compiled optimizer (``benchmarks/optimizer_step.py``);
        - reading and checking the batch, and the zero gradients that quirk (b) gives the
          parameters a loss does not reach: plain Python.

        Each graph is built with ``fullgraph=True``: it compiles before any of it runs or
        not at all, and a graph that fails to compile warns and runs eagerly from then on
        (:attr:`compile_failures` says why). Compiled functions belong to their instance: a
        copy, or an unpickled update step, compiles its own on its first call.

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
        >>> SORLUpdateStep(loss, grad_clip_norm=-1)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: grad_clip_norm must be None or a finite number ...
    """

    SETTINGS: ClassVar[Settings] = UPDATE_SETTINGS

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
        if not isinstance(loss, ShortcutLoss):
            raise TypeError(f"loss must be a ShortcutLoss, got {type(loss).__name__}.")
        settings = self.SETTINGS.check(
            {
                "lr": lr,
                "tau": tau,
                "grad_clip_norm": grad_clip_norm,
                "shared_optimizer": shared_optimizer,
                "actor_uses_pre_step_critic": actor_uses_pre_step_critic,
                "targets_track_pre_step_weights": targets_track_pre_step_weights,
                "compile": compile,
            }
        )
        self.loss = loss
        self.tau = settings["tau"]
        self.grad_clip_norm = settings["grad_clip_norm"] or None
        self.shared_optimizer = settings["shared_optimizer"]
        self.actor_uses_pre_step_critic = settings["actor_uses_pre_step_critic"]
        self.targets_track_pre_step_weights = settings["targets_track_pre_step_weights"]
        lr = settings["lr"]
        factory = optimizer_factory or (lambda params: default_adam(params, lr))
        actor = list(loss.actor_network_params.values(True, True))
        critic = list(loss.qvalue_network_params.values(True, True))
        if shared_optimizer:
            self.optimizers = {"shared": factory(actor + critic)}
        else:
            self.optimizers = {"critic": factory(critic), "actor": factory(actor)}
        # Marks the loss's target params as updated; does the plain soft update (quirk (d) off).
        self.target_updater = SoftUpdate(loss, tau=self.tau)
        # Buffers for the pre-step weights (quirks (c) and (d)); allocated once.
        self._pre_critic = loss.qvalue_network_params.data.clone()
        self._pre_actor = loss.actor_network_params.data.clone()
        self._bind()
        self.compile_mode = settings["compile"]
        self._compiled = {
            name: CompiledMethod(name, self.compile_mode, what=f"SORLUpdateStep.{name}")
            for name in ("_critic_forward", "_actor_forward")
        }

    def _bind(self) -> None:
        """The lists of parameters, targets and views the iteration works on.

        Built once (not in every iteration), and again after unpickling, since views of
        the online weights do not survive a pickle as views.
        """
        loss = self.loss
        self.actor_params = list(loss.actor_network_params.values(True, True))
        self.critic_params = list(loss.qvalue_network_params.values(True, True))
        self._target_actor = list(loss.target_actor_network_params.values(True, True))
        self._target_critic = list(loss.target_qvalue_network_params.values(True, True))
        self._pre_critic_list = list(self._pre_critic.values(True, True))
        self._pre_actor_list = list(self._pre_actor.values(True, True))
        # Detached views of the online weights (the optimizers update them in place).
        self._critic_data = [p.detach() for p in self.critic_params]
        self._actor_data = [p.detach() for p in self.actor_params]
        everything = self.actor_params + self.critic_params
        self._clipped = {
            "critic": everything if self.shared_optimizer else self.critic_params,
            "actor": everything if self.shared_optimizer else self.actor_params,
        }

    _BOUND = (
        "actor_params",
        "critic_params",
        "_target_actor",
        "_target_critic",
        "_pre_critic_list",
        "_pre_actor_list",
        "_critic_data",
        "_actor_data",
        "_clipped",
    )

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._BOUND}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind()

    def __deepcopy__(self, memo: dict) -> SORLUpdateStep:
        # The loss first, then its parameters entered in the memo, so that the copied
        # optimizers step the copied parameters: a TensorDictParams' copy does not leave
        # its final leaves in the memo.
        loss = copy.deepcopy(self.loss, memo)
        for old, new in zip(self.loss.parameters(), loss.parameters()):
            memo[id(old)] = new
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        twin.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return twin

    @property
    def is_compiled(self) -> bool:
        """Whether both losses run compiled (``False`` when eager or after a fallback)."""
        return all(compiled.is_compiled for compiled in self._compiled.values())

    @property
    def compile_failures(self) -> dict[str, str]:
        """Why each graph that fell back to eager failed to compile (empty when none did)."""
        return {name: c.failure for name, c in self._compiled.items() if c.failure is not None}

    def _run(self, name: str, *args):
        return self._compiled[name](self, *args)

    # ------------------------------------------------------------------ the pieces
    def _critic_forward(self, observation, action, next_observation, reward, mask, noise, k):
        loss_value, q, target = self.loss._critic_objective(
            observation, action, next_observation, reward, mask, noise, k
        )
        return loss_value, critic_diagnostics(q, target, k)

    def _actor_forward(self, observation, action, draws: dict, k: int):
        critic = self._pre_critic if self.actor_uses_pre_step_critic else None
        terms = self.loss._actor_objective(
            observation, action, **draws, num_steps=k, qvalue_params=critic
        )
        return self.loss.combine_actor_terms(terms), actor_diagnostics(terms, k)

    def _backward(self, which: str, loss_value: torch.Tensor) -> None:
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

    def _optimizer_step(self, which: str) -> torch.Tensor:
        """Clip and step; returns the global gradient norm before clipping (a 0-d tensor)."""
        params = self._clipped[which]
        if self.grad_clip_norm is not None:
            norm = nn.utils.clip_grad_norm_(params, self.grad_clip_norm, foreach=True)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        self.optimizers["shared" if self.shared_optimizer else which].step()
        return norm

    @torch.no_grad()
    def _critic_step(self) -> torch.Tensor:
        norm = self._optimizer_step("critic")
        if self.targets_track_pre_step_weights:
            torch._foreach_lerp_(self._target_critic, self._pre_critic_list, self.tau)
        return norm

    @torch.no_grad()
    def _actor_step(self) -> torch.Tensor:
        norm = self._optimizer_step("actor")
        if self.targets_track_pre_step_weights:
            torch._foreach_lerp_(self._target_actor, self._pre_actor_list, self.tau)
        else:  # both targets toward the online weights after both steps
            self.target_updater.step()
        return norm

    @torch.no_grad()
    def _snapshot(self) -> None:
        if self.actor_uses_pre_step_critic or self.targets_track_pre_step_weights:
            torch._foreach_copy_(self._pre_critic_list, self._critic_data)
        if self.targets_track_pre_step_weights:
            torch._foreach_copy_(self._pre_actor_list, self._actor_data)

    # ------------------------------------------------------------------ one iteration
    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Run one iteration on ``batch``; returns the detached losses and diagnostics.

        The diagnostics include the global gradient norm of each step before clipping
        (``grad_norm_critic``, ``grad_norm_actor``).

        The per-sample TD error ``|Q - y|`` (mean over members, ``[B]``) is written into
        ``batch`` under the loss's priority key, for a prioritized sampler's
        ``update_tensordict_priority``.
        """
        loss = self.loss
        inputs = loss.read_batch(batch)
        critic_draws = loss.draw_critic_randomness(inputs)
        actor_draws = loss.draw_actor_randomness(inputs)
        k_critic, k_actor = critic_draws.pop("num_steps"), actor_draws.pop("num_steps")
        self._snapshot()
        loss_qvalue, meta_qvalue = self._run(
            "_critic_forward", *inputs.values(), critic_draws["noise"], k_critic
        )
        self._backward("critic", loss_qvalue)
        grad_norm_critic = self._critic_step()
        obs, action = inputs["observation"], inputs["action"]
        loss_actor, meta_actor = self._run("_actor_forward", obs, action, actor_draws, k_actor)
        self._backward("actor", loss_actor)
        grad_norm_actor = self._actor_step()
        td_error = meta_qvalue.pop("td_error")
        if batch.batch_dims == 1:
            batch.set(loss.tensor_keys.priority, td_error)
        return TensorDict(
            {
                "loss_qvalue": loss_qvalue.detach(),
                "loss_actor": loss_actor.detach(),
                "grad_norm_critic": grad_norm_critic.detach(),
                "grad_norm_actor": grad_norm_actor.detach(),
                **meta_qvalue,
                **meta_actor,
            }
        )

    def precompile(
        self, batch: TensorDictBase, *, progress: Callable[[int], None] | None = None
    ) -> float:
        """Compile every graph now, on ``batch``, without training; returns the seconds taken.

        Runs the critic and the actor loss, forward and backward, once for each step count
        ``k`` the loss draws, with random draws made under :func:`torch.random.fork_rng`, so
        the random stream, the weights and the optimizer states are as before the call (the
        gradients are cleared). A training run then pays no compilation inside its loop and
        can report compile time apart from training time. Eager update steps return ``0.0``
        at once.

        Args:
            batch: a batch of the shapes and device training will use.
            progress: called with each ``k`` after its graphs compiled.
        """
        if self.compile_mode is None:
            return 0.0
        start = time.perf_counter()
        loss = self.loss
        inputs = loss.read_batch(batch)
        device = inputs["observation"].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for k in loss.bptt_step_choices:
                noise = loss.draw_critic_randomness(inputs)["noise"]
                loss_qvalue, _ = self._run("_critic_forward", *inputs.values(), noise, k)
                self._backward("critic", loss_qvalue)
                draws = loss.draw_actor_randomness(inputs)
                draws.pop("num_steps")
                obs, action = inputs["observation"], inputs["action"]
                loss_actor, _ = self._run("_actor_forward", obs, action, draws, k)
                self._backward("actor", loss_actor)
                if progress is not None:
                    progress(k)
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

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
