"""The joint update of the released FQL, IQL and ReBRAC code: one gradient, one Adam step.

Every ``loss_*`` term of a loss is evaluated at the same pre-step parameters and summed; one
backward pass, one Adam step over every trainable parameter, then the targets move toward
the online weights from *before* the step. A loss may declare terms that only count on
every ``delay``-th update (ReBRAC's actor, ``actor_freq = 2``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.objectives import SoftUpdate
from torchrl.objectives.common import LossModule

from sorl_torchrl._compile import CompiledMethod
from sorl_torchrl._validation import FLAG, Number, Settings, check_compile
from sorl_torchrl.objectives.update import default_adam

__all__ = ["JOINT_UPDATE_SETTINGS", "JointUpdateStep"]

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

#: The checks of :class:`JointUpdateStep`'s settings.
JOINT_UPDATE_SETTINGS = Settings(
    "JointUpdateStep",
    {
        "lr": Number("(0, inf)"),
        "tau": Number("(0, 1]"),
        "grad_clip_norm": Number("[0, inf)", optional=True, meaning="None or 0: no clipping"),
        "target_from_pre_step": FLAG,
        "compile": check_compile,
    },
)
_DELAY = Number("[1, inf)", integer=True)
_STEP = Number("[0, inf)", integer=True)
#: The methods a loss implements so that the step can draw its randomness outside a compiled
#: graph and compile the rest: ``read_batch(td)``, ``draw_randomness(batch)`` and
#: ``compute_terms(batch, draws) -> dict`` (``loss_*`` terms, diagnostics, ``td_error``).
_TERM_PROTOCOL = ("read_batch", "draw_randomness", "compute_terms")


class JointUpdateStep:
    """One training iteration of the released FQL / IQL / ReBRAC code on a batch.

    ``sum of the loss terms -> zero_grad -> backward -> (clip) -> Adam step -> targets``:

    - every ``loss_*`` entry of the loss's output is evaluated at the same pre-step
      parameters and summed (no critic-then-actor order);
    - one Adam (default: lr 3e-4, betas (0.9, 0.999), eps 1e-8, the fused kernel where
      :func:`~sorl_torchrl.objectives.update.default_adam` finds it) over every trainable
      parameter of the loss. A parameter the summed loss does not reach gets a zero
      gradient, not none, so Adam still steps it with its decayed momentum (quirk (f));
    - quirk (b) ``target_from_pre_step=True``: ``target <- tau * online_old + (1 - tau) *
      target`` with ``online_old`` the weights *before* the Adam step (computed between the
      backward pass and the step, so no copy is kept). ``False`` uses torchrl's
      :class:`~torchrl.objectives.SoftUpdate` after the step. Every ``target_*_params``
      of the loss is updated.

    Delayed terms: a loss that declares ``DELAYED_TERMS`` (names of ``loss_*`` entries) and
    ``delay`` (an integer >= 1; ReBRAC's ``actor_freq``) has them summed only on updates
    ``i`` (1-based, counting every update, kept in :meth:`state_dict`) with
    ``i % delay == 0``; on the other updates they are left out of the sum (their values
    are still reported) and no target moves, while Adam steps every parameter. Losses
    without these attributes have no delayed terms.

    The loss: a TorchRL ``LossModule`` whose output holds ``loss_*`` terms. Losses that also
    implement ``read_batch``, ``draw_randomness`` and ``compute_terms`` (the package's
    FQL, flow-BC, IQL and ReBRAC losses) are evaluated through them, with the draws made
    outside the loss body so that ``compile=`` can compile it; any other loss is called
    on the batch (eagerly). The per-sample TD error is written into the batch under the
    loss's priority key when the loss reports one.

    Args:
        loss: the loss module.
        lr: learning rate of the default Adam, finite and ``> 0`` (released code 3e-4).
        tau: target update rate, in ``(0, 1]`` (released code 0.005).
        grad_clip_norm: max global gradient norm, or ``None``/``0`` for none (released code:
            none).
        target_from_pre_step: quirk (b), see above (a bool).
        optimizer_factory: builds the optimizer from the parameters (default Adam above).
        compile: compile the loss body (forward, and its backward through AOTAutograd) with
            ``torch.compile``: ``False`` (default) eager, ``True`` mode ``"default"``, or a
            mode name. The draws, the summation, ``backward()``, the Adam step and the
            target updates stay eager, as in
            :class:`~sorl_torchrl.objectives.update.SORLUpdateStep`. A graph that fails to
            compile warns and runs eagerly from then on.

    Build the step after the networks are restored from a checkpoint or before: targets
    are kept as they are (torchrl's ``SoftUpdate`` would copy the online weights into them).

    Examples:
        >>> from sorl_torchrl import QEnsemble
        >>> from sorl_torchrl.modules.actor import ShortcutModel
        >>> from sorl_torchrl.modules.networks import VelocityMLP
        >>> from sorl_torchrl.modules.one_step_policy import OneStepPolicy
        >>> from sorl_torchrl.objectives.fql import FQLLoss
        >>> from sorl_torchrl.toy import bimodal_bandit_batch
        >>> loss = FQLLoss(OneStepPolicy(1, 2, num_cells=(16,)),
        ...                ShortcutModel(VelocityMLP(1, 2, (16,)), 1, 2),
        ...                QEnsemble(1, 2, num_cells=(16,), condition_on_steps=False))
        >>> update = JointUpdateStep(loss)
        >>> info = update(bimodal_bandit_batch(8))
        >>> sorted(key for key in info.keys() if key.startswith("loss_"))
        ['loss_actor', 'loss_bc_flow', 'loss_qvalue']
        >>> update.state_dict()["step"]
        1
        >>> JointUpdateStep(loss, tau=0)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: tau must be a finite number in (0, 1], got 0.
    """

    SETTINGS: ClassVar[Settings] = JOINT_UPDATE_SETTINGS

    def __init__(
        self,
        loss: LossModule,
        *,
        lr: float = 3e-4,
        tau: float = 0.005,
        grad_clip_norm: float | None = None,
        target_from_pre_step: bool = True,
        optimizer_factory: OptimizerFactory | None = None,
        compile: bool | str = False,
    ) -> None:
        if not isinstance(loss, LossModule):
            raise TypeError(f"loss must be a torchrl LossModule, got {type(loss).__name__}.")
        settings = self.SETTINGS.check(
            {
                "lr": lr,
                "tau": tau,
                "grad_clip_norm": grad_clip_norm,
                "target_from_pre_step": target_from_pre_step,
                "compile": compile,
            }
        )
        self.loss = loss
        self.tau = settings["tau"]
        self.grad_clip_norm = settings["grad_clip_norm"] or None
        self.target_from_pre_step = settings["target_from_pre_step"]
        self.delay = _DELAY(getattr(loss, "delay", 1), f"{type(loss).__name__}.delay")
        self.delayed_terms = tuple(getattr(loss, "DELAYED_TERMS", ()))
        bad = [name for name in self.delayed_terms if not str(name).startswith("loss_")]
        if bad:
            raise ValueError(
                f"{type(loss).__name__}.DELAYED_TERMS must name loss_* terms of its output, "
                f"got {bad}."
            )
        self.uses_term_protocol = all(hasattr(loss, name) for name in _TERM_PROTOCOL)
        self.compile_mode = settings["compile"]
        if self.compile_mode is not None and not self.uses_term_protocol:
            raise ValueError(
                f"compile={compile!r} needs a loss with {', '.join(_TERM_PROTOCOL)} "
                f"(the package's losses); {type(loss).__name__} has not: use compile=False."
            )
        self._compiled = CompiledMethod(
            "_compute_terms", self.compile_mode, what="JointUpdateStep.compute_terms"
        )
        params = list(loss.parameters())
        if not params:
            raise ValueError(f"{type(loss).__name__} has no trainable parameters.")
        factory = optimizer_factory or (lambda p: default_adam(p, settings["lr"]))
        self.optimizer = factory(params)
        targets = {
            name: module
            for name, module in loss.named_children()
            if name.startswith("target_") and name.endswith("_params")
        }
        self.target_names = list(targets)
        # SoftUpdate marks the targets as updated (no torchrl warning) and does the plain
        # soft update (quirk (b) off); its constructor copies the online weights into the
        # targets, which must keep what they hold (a restored checkpoint).
        self.target_updater = None
        if targets:
            kept = {name: target.data.clone() for name, target in targets.items()}
            self.target_updater = SoftUpdate(loss, tau=self.tau)
            for name, target in targets.items():
                target.data.update_(kept[name])
        self.num_updates = 0
        self._bind()

    # ------------------------------------------------------------------ bound lists
    def _bind(self) -> None:
        """The lists of parameters and target pairs (rebuilt after unpickling)."""
        loss = self.loss
        self.params = list(loss.parameters())
        self._targets: list[torch.Tensor] = []
        self._sources: list[torch.Tensor] = []
        for name in self.target_names:
            target, source = getattr(loss, name), getattr(loss, name[len("target_") :])
            for key, value in target.items(True, True):
                self._targets.append(value.data)
                self._sources.append(source.get(key).detach())

    _BOUND = ("params", "_targets", "_sources")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._BOUND}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()

    def __deepcopy__(self, memo: dict) -> JointUpdateStep:
        # The loss first, its parameters entered in the memo, so that the copied optimizer
        # steps the copied parameters.
        loss = copy.deepcopy(self.loss, memo)
        for old, new in zip(self.loss.parameters(), loss.parameters()):
            memo[id(old)] = new
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        twin.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return twin

    @property
    def is_compiled(self) -> bool:
        """Whether the loss body runs compiled (``False`` when eager or after a fallback)."""
        return self._compiled.is_compiled

    @property
    def compile_failures(self) -> dict[str, str]:
        """Why the loss body fell back to eager (empty when it did not)."""
        failure = self._compiled.failure
        return {} if failure is None else {"compute_terms": failure}

    # ------------------------------------------------------------------ the pieces
    def _compute_terms(
        self, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return self.loss.compute_terms(batch, draws)

    def evaluate(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """The loss's terms and diagnostics on ``batch`` at the current weights, fresh draws.

        Writes the per-sample TD error into ``batch`` when the loss reports one.
        """
        loss = self.loss
        if not self.uses_term_protocol:
            return dict(loss(batch).items())
        inputs = loss.read_batch(batch)
        out = dict(self._compiled(self, inputs, loss.draw_randomness(inputs)))
        td_error = out.pop("td_error", None)
        if td_error is not None and batch.batch_dims == 1:
            batch.set(loss.tensor_keys.priority, td_error)
        return out

    def summed_terms(self, terms: dict[str, torch.Tensor], full_update: bool) -> list[str]:
        """The ``loss_*`` terms an update sums (delayed ones only on full updates).

        Raises:
            ValueError: no term is left to sum.
        """
        names = [
            name
            for name in terms
            if name.startswith("loss_") and (full_update or name not in self.delayed_terms)
        ]
        if not names:
            raise ValueError(
                f"{type(self.loss).__name__} returned no loss_* term to sum "
                f"(got {sorted(terms)}, delayed {list(self.delayed_terms)})."
            )
        return names

    # ------------------------------------------------------------------ one iteration
    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Run one update on ``batch``; returns the detached terms and diagnostics.

        Besides the loss's own entries: ``total_loss`` (the sum that was minimised),
        ``grad_norm`` (global gradient norm before any clipping) and ``full_update``
        (1.0 when the delayed terms counted and the targets moved). Nothing is read back
        to the host.
        """
        step = self.num_updates + 1
        full_update = step % self.delay == 0
        terms = self.evaluate(batch)
        total = sum(terms[name] for name in self.summed_terms(terms, full_update))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = self._optimizer_step(full_update)
        self.num_updates = step
        out = {name: value.detach() for name, value in terms.items()}
        out["total_loss"] = total.detach()
        out["grad_norm"] = grad_norm.detach()
        out["full_update"] = torch.full((), float(full_update), device=total.device)
        return TensorDict(out)

    @torch.no_grad()
    def _optimizer_step(self, full_update: bool) -> torch.Tensor:
        for param in self.params:  # a zero, not a missing, gradient: Adam steps everything
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        grads = [param.grad for param in self.params]
        if self.grad_clip_norm is not None:
            norm = nn.utils.clip_grad_norm_(self.params, self.grad_clip_norm, foreach=True)
        else:
            norm = nn.utils.get_total_norm(grads, foreach=True)
        if full_update and self.target_from_pre_step and self._targets:
            # Before the step the online weights are still the pre-step ones (quirk (b)).
            torch._foreach_lerp_(self._targets, self._sources, self.tau)
        self.optimizer.step()
        if full_update and not self.target_from_pre_step and self.target_updater is not None:
            self.target_updater.step()
        return norm

    # ------------------------------------------------------------------ compilation
    def _graph_draws(self, inputs: dict[str, torch.Tensor]) -> Iterator[tuple[int, dict]]:
        """``(k, draws)`` for every graph of the loss body: one per value of its step count.

        Tensors are shapes to a compiled graph, Python integers constants: a loss whose
        draws hold an integer (flow BC's critic draws the step count ``k``) builds one graph
        per ``k`` of its ``bptt_step_choices``; any other loss one graph (``k = 1``).
        """
        draws = self.loss.draw_randomness(inputs)
        counts = [key for key, value in draws.items() if type(value) is int]
        if not counts:
            yield 1, draws
            return
        choices = getattr(self.loss, "bptt_step_choices", None)
        if choices is None:
            raise TypeError(
                f"{type(self.loss).__name__}.draw_randomness returns the integers {counts}, "
                "step counts, but the loss has no bptt_step_choices to compile them for."
            )
        for k in choices:
            yield k, {**draws, **dict.fromkeys(counts, k)}

    def precompile(
        self, batch: TensorDictBase, *, progress: Callable[[int], None] | None = None
    ) -> float:
        """Compile every graph now, on ``batch``, without training; returns the seconds taken.

        Runs the loss body forward and backward once per graph (one per step count ``k``
        for a loss that draws one, see :meth:`_graph_draws`), with its draws made under
        :func:`torch.random.fork_rng`, so the random stream, the weights, the targets, the
        optimizer state and the update count are as before the call (the gradients are
        cleared; ``batch`` is not written to). A training run then pays no compilation
        inside its loop and can report compile time apart from training time. An eager
        step returns ``0.0`` at once.

        Args:
            batch: a batch of the shapes and device training will use.
            progress: called with each graph's ``k`` after it compiled.

        Examples:
            >>> from sorl_torchrl.objectives.flow_bc import FlowBCLoss
            >>> from sorl_torchrl import ShortcutActor
            >>> from sorl_torchrl.toy import bimodal_bandit_batch
            >>> JointUpdateStep(FlowBCLoss(ShortcutActor(1, 2, num_cells=(8,)))).precompile(
            ...     bimodal_bandit_batch(8))
            0.0
        """
        if self.compile_mode is None:
            return 0.0
        start = time.perf_counter()
        inputs = self.loss.read_batch(batch)
        device = inputs["observation"].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for k, draws in self._graph_draws(inputs):
                terms = self._compiled(self, inputs, draws)
                total = sum(terms[name] for name in self.summed_terms(terms, full_update=True))
                total.backward()
                if progress is not None:
                    progress(k)
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer": ..., "step": updates so far}`` (the networks are the loss's)."""
        return {"optimizer": self.optimizer.state_dict(), "step": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote (the next update is ``step + 1``)."""
        if set(state) != {"optimizer", "step"}:
            raise ValueError(
                f"A JointUpdateStep state has the entries 'optimizer' and 'step', got "
                f"{sorted(state)}."
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = _STEP(state["step"], "step")
