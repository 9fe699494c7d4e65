"""ReBRAC, as the FQL repository implements it (``agents/rebrac.py``), as a TorchRL loss.

Paper: Tarasov, Kurenkov, Nikulin, Kolesnikov, *Revisiting the Minimalist Approach to Offline
Reinforcement Learning* (NeurIPS 2023, https://arxiv.org/abs/2305.09836); the released code
this loss follows is the FQL baseline (Park, Li, Levine, *Flow Q-Learning*, ICML 2025,
https://arxiv.org/abs/2502.02538).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey, unravel_key

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim, check_finite
from sorl_torchrl._validation import FLAG, Choice, Number, Settings
from sorl_torchrl.modules.baseline_actors import TanhActor
from sorl_torchrl.modules.critic import QEnsemble, policy_q_term
from sorl_torchrl.objectives._baseline_common import TEDKeys, TEDLoss, check_critic

__all__ = ["REBRAC_SETTINGS", "ReBRACLoss"]

#: The checks of :class:`ReBRACLoss`'s settings.
REBRAC_SETTINGS = Settings(
    "ReBRACLoss",
    {
        "discount": Number("[0, 1]"),
        "alpha_actor": Number("[0, inf)"),
        "alpha_critic": Number("[0, inf)"),
        "actor_freq": Number("[1, inf)", integer=True),
        "qvalue_member_reduction": Choice("mean", "sum"),
        "bc_action_reduction": Choice("sum", "mean"),
        "validate_inputs": FLAG,
    },
)


class ReBRACLoss(TEDLoss):
    r"""ReBRAC: TD3+BC with BC penalties in the actor and the critic, and LayerNorm critics.

    With ``m = 1 - terminated``, ``pi(s) = tanh(mu(s))`` the actor, ``pi_bar`` the target
    actor and ``Q_e`` / ``Q̄_e`` the online / target critic members (the released code):

    - ``loss_qvalue`` (:meth:`td_loss`): ``eps ~ N(0, I)``, ``a' = clip(pi_bar(s') +
      clip(noise_scale eps, +-noise_clip), -1, 1)`` (the target actor's
      :meth:`~sorl_torchrl.modules.baseline_actors.TanhPolicy.sample` at temperature 1),
      ``y = r + discount m (min_e Q̄_e(s', a') - alpha_critic |a' - a'_D|^2)`` with ``a'_D``
      the dataset's next action, ``mean_{e,b} (Q_e(s, a) - y)^2``. Gradient: critic only.
    - ``loss_actor`` (:meth:`policy_loss`): ``a_pi = pi(s)``, ``q = min_e Q_e(s, a_pi)``
      (online critic, frozen), ``-mean_b(sg(1 / mean_b |q|) q) + alpha_actor mean_b
      |a_pi - a|^2``. Gradient: actor only.

    Squared distances sum over action dimensions (quirk (h); ``bc_action_reduction="mean"``
    averages them, TD3+BC's scale). Both networks have targets
    (``target_actor_network_params``, ``target_qvalue_network_params``).

    Delayed actor updates: the class declares ``DELAYED_TERMS = ("loss_actor",)`` and
    :attr:`delay` ``= actor_freq``; an update step (``JointUpdateStep``) leaves the actor
    term out and skips the target updates on 1-based steps ``i`` with ``i % delay != 0``.
    The loss itself always returns both terms.

    The dataset's next action ``a'_D`` is read from the key ``next_action`` (default
    ``("next", "action")``). The released code takes ``actions[min(i + 1, N - 1)]`` over the
    dataset's transitions, which is the next episode's first action at an episode's end
    (quirk (g)); which action the key holds is the replay buffer's choice.

    Why TorchRL's :class:`~torchrl.objectives.TD3BCLoss` is not used as is. What differs
    from the released code, and what this class does:

    1. Its actor loss is ``-alpha Q_1 / mean|Q_1| + mse(pi(s), a)`` on the *first* critic
       member with the BC term averaged over action dims; the released code normalises
       ``min_e Q_e`` and weights the summed squared BC distance by ``alpha_actor``.
    2. Its critic has no BC penalty (``alpha_critic``), and it needs no next actions.
    3. Its critic loss sums the members (``.sum(0)``, with ``smooth_l1`` by default); the
       released code averages squared errors over members. Switch
       ``qvalue_member_reduction`` (default ``"mean"``; ``"sum"`` is TorchRL's and the
       ReBRAC authors' CORL code's scale, quirk (a)).
    4. It draws the target policy noise inside :meth:`~torchrl.objectives.TD3BCLoss.qvalue_loss`;
       here the noise is an argument of :meth:`td_loss` (drawn by :meth:`draw_randomness`).
       Its noise formula ``clip(clip(0.2 eps, +-0.5) + pi_bar(s'), bounds)`` is the same.
    5. Its actor is a generic deterministic module, and its critic a TorchRL vmap ensemble;
       the package's critic is :class:`~sorl_torchrl.QEnsemble` (all members in one call).
    6. It has no notion of delayed actor terms (TorchRL leaves that to the training loop);
       here ``DELAYED_TERMS`` and :attr:`delay` tell the update step.
    7. Its ``forward`` writes ``td_error`` into the input tensordict; this loss leaves its
       input untouched.

    Points 1-5 change every term method, so a subclass would override all of them. (The
    ReBRAC authors' CORL code also steps the actor against the *updated* critic; that order
    is the update step's business: ``JointUpdateStep`` evaluates both terms at the same
    pre-step weights, as the FQL repository does.)

    Args:
        actor_network: the tanh actor
            (:class:`~sorl_torchrl.modules.baseline_actors.TanhActor`); its ``noise_scale``
            and ``noise_clip`` (released 0.2, 0.5) are the target policy noise.
        qvalue_network: the critic, a :class:`~sorl_torchrl.QEnsemble` with
            ``condition_on_steps=False`` (released: 2 members, LayerNorm).
        discount: ``gamma``, in ``[0, 1]``.
        alpha_actor: actor BC coefficient, ``>= 0`` (released default 0: set per env).
        alpha_critic: critic BC coefficient, ``>= 0`` (released default 0: set per env).
        actor_freq: the actor term and the target updates run every ``actor_freq`` steps
            (an integer >= 1; released 2).
        qvalue_member_reduction: ``"mean"`` or ``"sum"`` over critic members, see point 3.
        bc_action_reduction: ``"sum"`` or ``"mean"`` of squared action distances.
        validate_inputs: also check batch values (finite, ``terminated`` binary).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from sorl_torchrl import QEnsemble
        >>> from sorl_torchrl.modules.baseline_actors import TanhActor
        >>> actor = TanhActor(3, 2, num_cells=(16,))
        >>> critic = QEnsemble(3, 2, num_cells=(16,), condition_on_steps=False)
        >>> loss = ReBRACLoss(actor, critic, alpha_actor=0.01, alpha_critic=0.01)
        >>> _ = SoftUpdate(loss, tau=0.005)
        >>> batch = TensorDict({
        ...     "observation": torch.randn(8, 3), "action": torch.rand(8, 2) * 2 - 1,
        ...     "next": {"observation": torch.randn(8, 3), "reward": -torch.ones(8, 1),
        ...              "terminated": torch.zeros(8, 1, dtype=torch.bool),
        ...              "action": torch.rand(8, 2) * 2 - 1},
        ... }, batch_size=[8])
        >>> out = loss(batch)
        >>> sorted(key for key in out.keys() if key.startswith("loss_")), loss.delay
        (['loss_actor', 'loss_qvalue'], 2)
    """

    @dataclass
    class _AcceptedKeys(TEDKeys):
        """:class:`~sorl_torchrl.objectives._baseline_common.TEDKeys` and ``next_action``.

        Attributes:
            next_action: the dataset's next action ``a'_D`` (a full key, not read under
                ``"next"``). Defaults to ``("next", "action")``.
        """

        next_action: NestedKey = ("next", "action")

    DELAYED_TERMS: ClassVar[tuple[str, ...]] = ("loss_actor",)
    EXTRA_IN_KEYS: ClassVar[tuple[str, ...]] = ("next_action",)
    SETTINGS: ClassVar[Settings] = REBRAC_SETTINGS
    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    out_keys = [
        "loss_actor",
        "loss_qvalue",
        "q_mean",
        "q_min",
        "q_max",
        "target_value",
        "td_error_mean",
        "critic_bc_distance",
        "q_policy",
        "bc_distance",
        "lambda",
    ]

    actor_network: TanhActor
    qvalue_network: QEnsemble
    actor_network_params: TensorDictParams
    qvalue_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TanhActor,
        qvalue_network: QEnsemble,
        *,
        discount: float = 0.99,
        alpha_actor: float = 0.0,
        alpha_critic: float = 0.0,
        actor_freq: int = 2,
        qvalue_member_reduction: Literal["mean", "sum"] = "mean",
        bc_action_reduction: Literal["sum", "mean"] = "sum",
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(actor_network, TanhActor):
            raise TypeError(
                f"actor_network must be a TanhActor, got {type(actor_network).__name__}."
            )
        check_critic(qvalue_network, actor_network, "ReBRACLoss")
        settings = self.SETTINGS.check(
            {
                "discount": discount,
                "alpha_actor": alpha_actor,
                "alpha_critic": alpha_critic,
                "actor_freq": actor_freq,
                "qvalue_member_reduction": qvalue_member_reduction,
                "bc_action_reduction": bc_action_reduction,
                "validate_inputs": validate_inputs,
            }
        )
        for name, value in settings.items():
            setattr(self, name, value)
        self.observation_dim = actor_network.observation_dim
        self.action_dim = actor_network.action_dim
        self.convert_to_functional(actor_network, "actor_network", create_target_params=True)
        self.convert_to_functional(qvalue_network, "qvalue_network", create_target_params=True)

    @property
    def delay(self) -> int:
        """Every how many steps the delayed terms and the target updates run (``actor_freq``)."""
        return self.actor_freq

    def _distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``|x - y|^2`` summed (or averaged) over action dims, ``[B, act] -> [B, 1]``."""
        squared = (x - y).pow(2)
        if self.bc_action_reduction == "sum":
            return squared.sum(-1, keepdim=True)
        return squared.mean(-1, keepdim=True)

    # ------------------------------------------------------------------ loss terms
    def td_loss(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        reward: torch.Tensor,
        mask: torch.Tensor,
        next_action: torch.Tensor,
        target_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``mean_{e,b} (Q_e(s, a) - y)^2`` with the BC-penalised target ``y`` (grad: critic).

        Args:
            observation: ``[B, obs]``.
            action: dataset actions, ``[B, act]``.
            next_observation: ``[B, obs]``.
            reward: ``[B, 1]``.
            mask: ``1 - terminated``, ``[B, 1]``.
            next_action: the dataset's next action ``a'_D``, ``[B, act]``.
            target_noise: ``eps`` of the target policy smoothing, ``[B, act]``.

        Returns:
            ``(loss, {"q" [E, B, 1], "target" [B, 1], "critic_bc_distance" [B, 1]})``
            (detached).
        """
        actor, critic = self.actor_network, self.qvalue_network
        with torch.no_grad():
            with self._swap(self.target_actor_network_params, actor):
                smoothed = actor.module.sample(next_observation, target_noise, temperature=1.0)
            with self._swap(self.target_qvalue_network_params, critic):
                next_q = critic.values(next_observation, smoothed).amin(0)
            distance = self._distance(smoothed, next_action)
            target = reward + self.discount * mask * (next_q - self.alpha_critic * distance)
        with self._swap(self.qvalue_network_params, critic):
            q = critic.values(observation, action)
        errors = (q - target).pow(2)
        per_sample = errors.mean(0) if self.qvalue_member_reduction == "mean" else errors.sum(0)
        detail = {"q": q.detach(), "target": target, "critic_bc_distance": distance}
        return per_sample.mean(), detail

    def policy_loss(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-mean_b(sg(1 / mean|q|) q) + alpha_actor mean_b |pi(s) - a|^2`` (grad: actor).

        ``q = min_e Q_e(s, pi(s))`` from the online critic, frozen.

        Returns:
            ``(loss, {"q" [B, 1], "bc_distance" [B, 1], "lambda" []})`` (detached).
        """
        with self._swap(self.actor_network_params, self.actor_network):
            policy_action = self.actor_network.mode(observation)
        with self._swap(self.qvalue_network_params.detach(), self.qvalue_network):
            values = self.qvalue_network.values(observation, policy_action)
        q_loss, q, lam = policy_q_term(values, "min")
        distance = self._distance(policy_action, action)
        loss = q_loss + self.alpha_actor * distance.mean()
        return loss, {"q": q.detach(), "bc_distance": distance.detach(), "lambda": lam}

    def draw_randomness(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The critic term's draw: the target policy noise ``eps ~ N(0, I)``, ``[B, act]``."""
        return {"target_noise": torch.randn_like(batch["action"])}

    # ------------------------------------------------------------------ tensordict losses
    def read_batch(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor]:
        """The TED batch (see :meth:`TEDLoss.read_batch`) plus ``next_action`` ``[B, act]``."""
        batch = super().read_batch(tensordict)
        key = self.tensor_keys.next_action
        if unravel_key(key) not in set(tensordict.keys(True, True)):
            raise KeyError(
                f"ReBRACLoss needs the dataset's next action under {unravel_key(key)!r}: "
                "a'_D = action of transition i + 1 (the released code takes "
                "actions[min(i + 1, N - 1)]). Add it to the replay buffer's TED data, or "
                "point loss.set_keys(next_action=...) at it."
            )
        next_action = tensordict.get(key)
        if tensordict.batch_dims != 1:
            next_action = next_action.reshape(-1, *next_action.shape[tensordict.batch_dims :])
        check_feature_dim(next_action, self.action_dim, "next action")
        next_action = as_model_dtype(next_action, self.dtype, "next action")
        if self.validate_inputs:
            check_finite(next_action, "next action")
        batch["next_action"] = next_action
        return batch

    def _qvalue_terms(self, batch: dict, draws: dict) -> tuple[torch.Tensor, dict]:
        loss, detail = self.td_loss(**batch, **draws)
        q, target = detail["q"], detail["target"]
        return loss, {
            "q_mean": q.mean(),
            "q_min": q.min(),
            "q_max": q.max(),
            "target_value": target.mean(),
            "td_error_mean": (q - target).abs().mean(),
            "critic_bc_distance": detail["critic_bc_distance"].mean(),
        }

    def _actor_terms(self, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, detail = self.policy_loss(batch["observation"], batch["action"])
        return loss, {
            "q_policy": detail["q"].mean(),
            "bc_distance": detail["bc_distance"].mean(),
            "lambda": detail["lambda"],
        }

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """:meth:`td_loss` on a TED batch with fresh noise: ``(loss, detached diagnostics)``."""
        batch = self.read_batch(tensordict)
        return self._qvalue_terms(batch, self.draw_randomness(batch))

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """:meth:`policy_loss` on a TED batch: ``(loss, detached diagnostics)``."""
        return self._actor_terms(self.read_batch(tensordict))

    def compute_terms(
        self, batch: dict[str, torch.Tensor], draws: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Both terms on one batch with given draws (the body an update step compiles).

        Args:
            batch: from :meth:`read_batch`.
            draws: from :meth:`draw_randomness`.

        Returns:
            ``loss_qvalue``, ``loss_actor`` and detached diagnostics.
        """
        loss_qvalue, meta_qvalue = self._qvalue_terms(batch, draws)
        loss_actor, meta_actor = self._actor_terms(batch)
        return {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, **meta_qvalue, **meta_actor}

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Both losses on one batch (read once) with the same parameters and fresh noise.

        Returns:
            A TensorDict with ``loss_qvalue``, ``loss_actor`` and detached diagnostics; the
            input tensordict is not modified.
        """
        batch = self.read_batch(tensordict)
        return TensorDict(self.compute_terms(batch, self.draw_randomness(batch)))
