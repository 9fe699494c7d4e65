"""IQL, as the FQL repository implements it (``agents/iql.py``), as a TorchRL ``LossModule``.

Paper: Kostrikov, Nair, Levine, *Offline Reinforcement Learning with Implicit Q-Learning*
(ICLR 2022, https://arxiv.org/abs/2110.06169); the released code this loss follows is the
FQL baseline (Park, Li, Levine, *Flow Q-Learning*, ICML 2025,
https://arxiv.org/abs/2502.02538).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch

from sorl_torchrl._validation import FLAG, Choice, Number, Settings
from sorl_torchrl.modules.baseline_actors import GaussianActor, gaussian_log_prob
from sorl_torchrl.modules.critic import QEnsemble, policy_q_term
from sorl_torchrl.modules.value import StateValue
from sorl_torchrl.objectives._baseline_common import TEDKeys, TEDLoss, check_critic

__all__ = ["IQL_SETTINGS", "IQLLoss"]

#: The checks of :class:`IQLLoss`'s settings.
IQL_SETTINGS = Settings(
    "IQLLoss",
    {
        "discount": Number("[0, 1]"),
        "expectile": Number("(0, 1)"),
        "alpha": Number("[0, inf)"),
        "max_weight": Number("(0, inf)"),
        "actor_loss_type": Choice("awr", "ddpgbc"),
        "advantage_critic": Choice("online", "target"),
        "qvalue_member_reduction": Choice("sum", "mean"),
        "validate_inputs": FLAG,
    },
)


class IQLLoss(TEDLoss):
    r"""IQL: expectile value loss, TD critic loss on ``V(s')``, AWR (or DDPG+BC) actor loss.

    With ``m = 1 - terminated`` (OGBench: ``1 - success``), ``Q_e`` / ``Q̄_e`` the online /
    target critic members and ``sg`` stop-gradient (the released code):

    - ``loss_value`` (:meth:`expectile_value_loss`): ``u = min_e Q̄_e(s, a) - V(s)``,
      ``mean_b |tau - 1(u < 0)| u^2`` with ``tau = expectile``. Gradient: ``V`` only.
    - ``loss_qvalue`` (:meth:`td_loss`): ``y = r + discount m sg(V(s'))``,
      ``mean_b sum_e (Q_e(s, a) - y)^2``. Gradient: the critic only.
    - ``loss_actor`` (:meth:`awr_loss`): ``adv = min_e Q_e(s, a) - V(s)`` (online critic and
      ``V``, frozen), ``w = min(exp(alpha adv), max_weight)``,
      ``-mean_b w log pi(a | s)`` with ``pi = N(mu(s), I)``. Gradient: the actor only.
      ``actor_loss_type="ddpgbc"`` (:meth:`ddpgbc_loss`): ``a_pi = clip(mu(s))``,
      ``q = min_e Q_e(s, a_pi)`` (frozen critic), ``-mean q / sg(mean |q|) - alpha mean
      log pi(a | s)``.

    Only the critic has a target network (``target_qvalue_network_params``, made by
    ``convert_to_functional(..., create_target_params=True)``); no term draws random
    numbers (:meth:`draw_randomness` returns nothing).

    Why TorchRL's :class:`~torchrl.objectives.IQLLoss` is not used as is. It is the same
    algorithm; the differences from the released code, and what this class does:

    1. Its actor loss weights with the *target* critic (the IQL paper's ``Q̂``); the
       released code uses the *online* one. Switch ``advantage_critic`` (default
       ``"online"``, quirk (a); ``"target"`` is TorchRL's and the paper's choice).
    2. Its critic loss defaults to ``loss_function="smooth_l1"``; the released code is
       squared error. Both sum over members (``.sum(0)``), as here
       (``qvalue_member_reduction="sum"``, quirk (h); ``"mean"`` is FQL/ReBRAC's scale).
    3. Its value loss is the same (target critic, min over members, expectile weights), but
       its :meth:`~torchrl.objectives.IQLLoss.loss_value_diff` builds the weights with
       ``torch.where(diff > 0, tau, 1 - tau)`` from Python floats, i.e. in the default
       dtype: in a float64 loss the weights are float32-rounded (relative error ~4e-8).
       Here the weight is ``|tau - 1(u < 0)|`` in the batch's dtype. (It also weights
       ``u > 0`` with ``tau`` where the released code writes ``u >= 0``; at ``u = 0`` the
       term and its gradient are 0 either way.)
    4. Its AWR weight ``min(exp(temperature adv), 100)`` is this one with ``temperature =
       alpha`` and ``max_weight = 100``. It has no DDPG+BC actor loss.
    5. Its critic is a TorchRL ensemble built by ``vmap`` over ``num_qvalue_nets`` copies of
       one module; the package's critic is :class:`~sorl_torchrl.QEnsemble`, whose
       :meth:`~sorl_torchrl.QEnsemble.values` evaluates all members in one batched call.
       Feeding a QEnsemble through TorchRL's vmap would evaluate ``E x E`` members.
    6. Its actor must be a probabilistic TorchRL actor (``get_dist``), and its ``forward``
       writes ``td_error`` and ``_log_prob`` into the input tensordict. Here the actor's
       :meth:`~sorl_torchrl.modules.baseline_actors.GaussianPolicy.mean` feeds the one
       closed-form :func:`~sorl_torchrl.modules.baseline_actors.gaussian_log_prob`
       (sigma = 1, no tanh: the released ``const_std`` actor), and the input is left
       untouched (no prioritized replay).
    7. Its target ``V(s')`` goes through a TorchRL value estimator (TD(0) on ``terminated``),
       i.e. the same ``r + gamma (1 - terminated) V(s')``; here it is written out.

    Points 1, 5 and 6 change every term method, so a subclass would override all of them.

    Args:
        actor_network: the Gaussian actor
            (:class:`~sorl_torchrl.modules.baseline_actors.GaussianActor`).
        qvalue_network: the critic, a :class:`~sorl_torchrl.QEnsemble` with
            ``condition_on_steps=False`` (released: 2 members, LayerNorm).
        value_network: ``V(s)``, a :class:`~sorl_torchrl.modules.value.StateValue`.
        discount: ``gamma``, in ``[0, 1]``.
        expectile: ``tau``, in ``(0, 1)`` (released 0.9).
        alpha: AWR inverse temperature (TorchRL's ``temperature``, the paper's ``beta``), or
            the BC coefficient with ``actor_loss_type="ddpgbc"``; ``>= 0`` (released 10).
        max_weight: clip of the AWR weight, ``> 0`` (released 100).
        actor_loss_type: ``"awr"`` (released default) or ``"ddpgbc"``.
        advantage_critic: which critic the AWR advantage uses, see point 1.
        qvalue_member_reduction: ``"sum"`` or ``"mean"`` over critic members, see point 2.
        validate_inputs: also check batch values (finite, ``terminated`` binary).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from sorl_torchrl import QEnsemble
        >>> from sorl_torchrl.modules.baseline_actors import GaussianActor
        >>> from sorl_torchrl.modules.value import StateValue
        >>> actor = GaussianActor(3, 2, num_cells=(16,))
        >>> critic = QEnsemble(3, 2, num_cells=(16,), condition_on_steps=False)
        >>> loss = IQLLoss(actor, critic, StateValue(3, num_cells=(16,)))
        >>> _ = SoftUpdate(loss, tau=0.005)
        >>> batch = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": -torch.ones(8, 1),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool)},
        ... }, batch_size=[8])
        >>> out = loss(batch)
        >>> sorted(key for key in out.keys() if key.startswith("loss_"))
        ['loss_actor', 'loss_qvalue', 'loss_value']
        >>> IQLLoss(actor, critic, StateValue(3, num_cells=(16,)), expectile=1.0)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: expectile must be a finite number in (0, 1), ...
    """

    _AcceptedKeys = TEDKeys

    SETTINGS: ClassVar[Settings] = IQL_SETTINGS
    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "v_mean",
        "v_min",
        "v_max",
        "q_mean",
        "target_value",
        "td_error_mean",
        "advantage_mean",
        "weight_mean",
        "log_prob_mean",
        "action_mse",
    ]

    actor_network: GaussianActor
    qvalue_network: QEnsemble
    value_network: StateValue
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    value_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams  # no target: the detached online weights
    target_qvalue_network_params: TensorDictParams
    target_value_network_params: TensorDictParams  # no target: the detached online weights

    def __init__(
        self,
        actor_network: GaussianActor,
        qvalue_network: QEnsemble,
        value_network: StateValue,
        *,
        discount: float = 0.99,
        expectile: float = 0.9,
        alpha: float = 10.0,
        max_weight: float = 100.0,
        actor_loss_type: Literal["awr", "ddpgbc"] = "awr",
        advantage_critic: Literal["online", "target"] = "online",
        qvalue_member_reduction: Literal["sum", "mean"] = "sum",
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(actor_network, GaussianActor):
            raise TypeError(
                f"actor_network must be a GaussianActor, got {type(actor_network).__name__}."
            )
        if not isinstance(value_network, StateValue):
            raise TypeError(
                f"value_network must be a StateValue, got {type(value_network).__name__}."
            )
        check_critic(qvalue_network, actor_network, "IQLLoss")
        if value_network.observation_dim != actor_network.observation_dim:
            raise ValueError(
                f"value_network reads observations of size {value_network.observation_dim}, "
                f"the actor {actor_network.observation_dim}: build both for the same env."
            )
        settings = self.SETTINGS.check(
            {
                "discount": discount,
                "expectile": expectile,
                "alpha": alpha,
                "max_weight": max_weight,
                "actor_loss_type": actor_loss_type,
                "advantage_critic": advantage_critic,
                "qvalue_member_reduction": qvalue_member_reduction,
                "validate_inputs": validate_inputs,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.observation_dim = actor_network.observation_dim
        self.action_dim = actor_network.action_dim
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(value_network, "value_network")
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

    # ------------------------------------------------------------------ network calls
    def _q(self, params: TensorDictBase, observation, action) -> torch.Tensor:
        """``Q_e(s, a)`` of every member with ``params``, ``[E, B, 1]``."""
        with self._swap(params, self.qvalue_network):
            return self.qvalue_network.values(observation, action)

    def _v(self, params: TensorDictBase, observation: torch.Tensor) -> torch.Tensor:
        """``V(s)`` with ``params``, ``[B, 1]``."""
        with self._swap(params, self.value_network):
            return self.value_network.values(observation)

    def _advantage_params(self) -> TensorDictBase:
        if self.advantage_critic == "target":
            return self.target_qvalue_network_params
        return self.qvalue_network_params.detach()

    # ------------------------------------------------------------------ loss terms
    def expectile_value_loss(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_b |tau - 1(u < 0)| u^2``, ``u = min_e Q̄_e(s, a) - V(s)`` (grad: ``V``).

        Returns:
            ``(loss, V(s) [B, 1])``.
        """
        q = self._q(self.target_qvalue_network_params, observation, action).amin(0)
        v = self._v(self.value_network_params, observation)
        diff = q - v
        weight = (self.expectile - (diff < 0).to(diff.dtype)).abs()  # tau if u >= 0, else 1 - tau
        return (weight * diff.pow(2)).mean(), v

    def td_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mean_b sum_e (Q_e(s, a) - y)^2``, ``y = r + discount m sg(V(s'))`` (grad: critic).

        With ``qvalue_member_reduction="mean"`` the members are averaged instead.

        Returns:
            ``(loss, Q [E, B, 1], y [B, 1])``.
        """
        with torch.no_grad():
            target = reward + self.discount * mask * self._v(
                self.value_network_params.detach(), next_observation
            )
        q = self._q(self.qvalue_network_params, observation, action)
        errors = (q - target).pow(2)
        per_sample = errors.sum(0) if self.qvalue_member_reduction == "sum" else errors.mean(0)
        return per_sample.mean(), q, target

    def awr_loss(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-mean_b min(exp(alpha adv), max_weight) log pi(a | s)`` (grad: actor).

        ``adv = min_e Q_e(s, a) - V(s)`` from the frozen critic chosen by
        ``advantage_critic`` and the frozen ``V``.

        Returns:
            ``(loss, {"advantage", "weight", "log_prob", "mean"})``, detached: ``[B]`` each
            and ``mu(s)`` ``[B, act]``.
        """
        with torch.no_grad():
            q = self._q(self._advantage_params(), observation, action).amin(0)
            advantage = (q - self._v(self.value_network_params.detach(), observation))[:, 0]
            weight = torch.exp(advantage * self.alpha).clamp(max=self.max_weight)
        with self._swap(self.actor_network_params, self.actor_network):
            mean = self.actor_network.module.mean(observation)
        log_prob = gaussian_log_prob(mean, action)
        detail = {
            "advantage": advantage,
            "weight": weight,
            "log_prob": log_prob.detach(),
            "mean": mean.detach(),
        }
        return -(weight * log_prob).mean(), detail

    def ddpgbc_loss(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-mean q / sg(mean |q|) - alpha mean log pi(a | s)``, ``q = min_e Q_e(s, a_pi)``.

        ``a_pi = clip(mu(s), -1, 1)``; the critic is the online one, frozen (grad: actor).

        Returns:
            ``(loss, {"q", "log_prob", "mean"})``, detached: ``[B]`` each and ``mu(s)``.
        """
        with self._swap(self.actor_network_params, self.actor_network):
            mean = self.actor_network.module.mean(observation)
        log_prob = gaussian_log_prob(mean, action)
        policy_action = mean.clamp(-1.0, 1.0)
        values = self._q(self.qvalue_network_params.detach(), observation, policy_action)
        q_loss, q, _ = policy_q_term(values, "min")
        loss = q_loss - self.alpha * log_prob.mean()
        detail = {"q": q.detach()[:, 0], "log_prob": log_prob.detach(), "mean": mean.detach()}
        return loss, detail

    def draw_randomness(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """IQL's terms draw nothing (the Gaussian's ``log pi`` and mode are deterministic)."""
        return {}

    # ------------------------------------------------------------------ tensordict losses
    def _value_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss, v = self.expectile_value_loss(batch["observation"], batch["action"])
        v = v.detach()
        return loss, {"v_mean": v.mean(), "v_min": v.min(), "v_max": v.max()}

    def _qvalue_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        loss, q, target = self.td_loss(**batch)
        q = q.detach()
        return loss, {
            "q_mean": q.mean(),
            "target_value": target.mean(),
            "td_error_mean": (q - target).abs().mean(),
        }

    def _actor_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        observation, action = batch["observation"], batch["action"]
        if self.actor_loss_type == "awr":
            loss, detail = self.awr_loss(observation, action)
            extra = {
                "advantage_mean": detail["advantage"].mean(),
                "weight_mean": detail["weight"].mean(),
            }
        else:
            loss, detail = self.ddpgbc_loss(observation, action)
            extra = {"q_policy": detail["q"].mean()}
        mse = (detail["mean"] - action).pow(2).mean()
        return loss, {"log_prob_mean": detail["log_prob"].mean(), "action_mse": mse, **extra}

    def value_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """:meth:`expectile_value_loss` on a TED batch: ``(loss, detached diagnostics)``."""
        return self._value_terms(self.read_batch(tensordict))

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """:meth:`td_loss` on a TED batch: ``(loss, detached diagnostics)``."""
        return self._qvalue_terms(self.read_batch(tensordict))

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """The actor term of ``actor_loss_type`` on a TED batch: ``(loss, diagnostics)``."""
        return self._actor_terms(self.read_batch(tensordict))

    def compute_terms(
        self, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Every term on one batch (the body an update step compiles).

        Args:
            batch: from :meth:`read_batch`.
            draws: from :meth:`draw_randomness` (empty for IQL).

        Returns:
            ``loss_value``, ``loss_qvalue``, ``loss_actor`` and detached diagnostics.
        """
        loss_value, meta_value = self._value_terms(batch)
        loss_qvalue, meta_qvalue = self._qvalue_terms(batch)
        loss_actor, meta_actor = self._actor_terms(batch)
        return {
            "loss_actor": loss_actor,
            "loss_qvalue": loss_qvalue,
            "loss_value": loss_value,
            **meta_value,
            **meta_qvalue,
            **meta_actor,
        }

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The three losses on one batch (read once) with the same parameters.

        Returns:
            A TensorDict with ``loss_value``, ``loss_qvalue``, ``loss_actor`` and detached
            diagnostics; the input tensordict is not modified.
        """
        batch = self.read_batch(tensordict)
        return TensorDict(self.compute_terms(batch, self.draw_randomness(batch)))
