"""NumPy (float64) references for the IQL and ReBRAC terms, written from the baselines spec.

The networks are read out of their torch weights and re-run in NumPy (the shared
``baseline_reference.MLP`` and, in the tests, ``critic_of``); the terms are written from
the equations of the released code (FQL repository, ``agents/iql.py`` and
``agents/rebrac.py``), not from the package's code paths. A plain training loop (the
released iteration: every term at the same pre-step weights, one Adam step, targets from
the pre-step weights) is at the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from baseline_reference import MLP

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------- networks
def policy_mlp(params) -> MLP:
    """``mu(s)`` of an actor's parameters (the Linear layers of ``module.network``)."""
    return MLP.from_params(params, ("module", "network"))


def state_value(value, s: np.ndarray) -> np.ndarray:
    """``V(s)`` ``[B, 1]`` from the one-member NumPy MLP fed ``s`` alone."""
    return value(s, np.zeros(s.shape[:-1] + (0,)), None)[0]


# ----------------------------------------------------------------------- IQL
def iql_value_loss(target_critic, value, s, a, expectile) -> float:
    """``mean_b |tau - 1(u < 0)| u^2``, ``u = min_e Qbar_e(s, a) - V(s)``."""
    u = target_critic(s, a, None).min(0) - state_value(value, s)
    weight = np.where(u >= 0, expectile, 1.0 - expectile)
    return float(np.mean(weight * u**2))


def iql_critic_loss(critic, value, s, a, s2, r, m, discount, reduction="sum"):
    """``mean_b sum_e (Q_e(s, a) - y)^2``, ``y = r + discount m V(s')``; returns (loss, y)."""
    y = r + discount * m * state_value(value, s2)
    errors = (critic(s, a, None) - y[None]) ** 2
    per_sample = errors.sum(0) if reduction == "sum" else errors.mean(0)
    return float(per_sample.mean()), y


def gaussian_log_prob(mean: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``log N(a; mean, I)`` summed over action dims, ``[B]``."""
    return -0.5 * ((a - mean) ** 2).sum(-1) - 0.5 * a.shape[-1] * LOG_2PI


def iql_awr_loss(actor, critic, value, s, a, alpha, max_weight=100.0):
    """``-mean_b min(exp(alpha adv), max_w) log pi(a|s)``; returns (loss, weights [B])."""
    adv = (critic(s, a, None).min(0) - state_value(value, s))[:, 0]
    weight = np.minimum(np.exp(alpha * adv), max_weight)
    return float(-np.mean(weight * gaussian_log_prob(actor(s), a))), weight


def iql_ddpgbc_loss(actor, critic, s, a, alpha) -> float:
    """``-mean q / mean|q| - alpha mean log pi(a|s)``, ``q = min_e Q_e(s, clip(mu(s)))``."""
    mean = actor(s)
    q = critic(s, np.clip(mean, -1.0, 1.0), None).min(0)
    return float(-q.mean() / np.abs(q).mean() - alpha * gaussian_log_prob(mean, a).mean())


# ----------------------------------------------------------------------- ReBRAC
def rebrac_critic_loss(
    target_actor, critic, target_critic, s, a, s2, r, m, a2, eps, discount, alpha_critic,
    noise=0.2, noise_clip=0.5, reduction="mean",
):  # fmt: skip
    """``mean_{e,b} (Q_e(s, a) - y)^2`` with the smoothed, BC-penalised target; (loss, y)."""
    smoothed = np.clip(
        np.tanh(target_actor(s2)) + np.clip(noise * eps, -noise_clip, noise_clip), -1.0, 1.0
    )
    next_q = target_critic(s2, smoothed, None).min(0)
    penalty = ((smoothed - a2) ** 2).sum(-1, keepdims=True)
    y = r + discount * m * (next_q - alpha_critic * penalty)
    errors = (critic(s, a, None) - y[None]) ** 2
    per_sample = errors.mean(0) if reduction == "mean" else errors.sum(0)
    return float(per_sample.mean()), y


def rebrac_actor_loss(actor, critic, s, a, alpha_actor) -> float:
    """``-mean(q / mean|q|) + alpha_actor mean_b |tanh(mu(s)) - a|^2``, ``q = min_e Q_e``."""
    policy_action = np.tanh(actor(s))
    q = critic(s, policy_action, None).min(0)
    bc = ((policy_action - a) ** 2).sum(-1).mean()
    return float(-np.mean(q / np.abs(q).mean()) + alpha_actor * bc)


# ----------------------------------------------------------------------- training
def plain_training_loop(loss, batches, lr=3e-4, tau=0.005) -> list[dict[str, float]]:
    """The released code's iteration with a hand-written loop (``torch.optim.Adam``).

    Every ``loss_*`` term at the same weights is summed (a ``DELAYED_TERMS`` term only on
    1-based steps ``i`` with ``i % delay == 0``), one Adam step over ``loss.parameters()``,
    then on those same full steps ``target <- tau online_old + (1 - tau) target`` with the
    pre-step online weights. Returns each step's loss terms as floats.
    """
    params = list(loss.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    delayed = set(getattr(loss, "DELAYED_TERMS", ()))
    delay = getattr(loss, "delay", 1)
    pairs = [
        (getattr(loss, name), getattr(loss, name[len("target_") :]))
        for name, _ in loss.named_children()
        if name.startswith("target_") and name.endswith("_params")
    ]
    history = []
    for step, batch in enumerate(batches, start=1):
        full = step % delay == 0
        out = loss(batch)
        terms = [k for k in out.keys() if k.startswith("loss_") and (full or k not in delayed)]
        total = sum(out[k] for k in terms)
        optimizer.zero_grad()
        total.backward()
        for param in params:  # one Adam over everything: unreached parameters get zeros
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        if full:
            with torch.no_grad():
                for target, online in pairs:
                    for key, value in target.items(True, True):
                        value.lerp_(online.get(key).detach(), tau)
        optimizer.step()
        history.append({k: float(out[k].detach()) for k in out.keys() if k.startswith("loss_")})
    return history
