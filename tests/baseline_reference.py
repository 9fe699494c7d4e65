"""Independent NumPy references for the baseline losses (FQL, flow BC, ...) and Adam (float64).

Written from the equations of the released code (BASELINES_SPEC), not from the package's
code paths: plain MLP forwards of the torch weights, the loss terms by hand, an Euler loop
and the Adam formula of their own. Shared by the tests of every baseline.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from reference import EnsembleCritic, gelu_tanh, layer_norm, to_np


class MLP:
    """``[Linear -> tanh-GELU (-> LayerNorm)] * L -> Linear`` on plain arrays.

    ``layers`` is a list of ``(W [out, in], b [out])``; ``norms`` (optional) a list of
    ``(scale, shift)`` per hidden layer.
    """

    def __init__(self, layers, norms=None, eps: float = 1e-6) -> None:
        self.layers = [(to_np(w), to_np(b)) for w, b in layers]
        self.norms = None if norms is None else [(to_np(s), to_np(b)) for s, b in norms]
        self.eps = eps

    @classmethod
    def from_params(cls, params, prefix) -> MLP:
        """Every ``nn.Linear`` of an ``nn.Sequential`` stored under ``prefix`` in ``params``."""
        network = params.get(prefix)
        indices = sorted(int(key) for key in network.keys())
        return cls(
            [(network.get((str(i), "weight")), network.get((str(i), "bias"))) for i in indices]
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if i < len(self.layers) - 1:
                x = gelu_tanh(x)
                if self.norms is not None:
                    x = layer_norm(x, *self.norms[i], self.eps)
        return x


class OneStep:
    """``mu(s, z) = MLP([s, z])`` (raw, not clipped)."""

    def __init__(self, mlp: MLP) -> None:
        self.mlp = mlp

    def __call__(self, s: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.mlp(np.concatenate([s, z], -1))


class FlowField:
    """FQL's ``f(s, x, t) = MLP([s, x, t])``, from a velocity MLP on ``[s, x, t, d]``.

    The step-code column of the first layer is dropped: FQL's network has no step input.
    """

    def __init__(self, mlp: MLP) -> None:
        first_w, first_b = mlp.layers[0]
        self.mlp = copy.copy(mlp)
        self.mlp.layers = [(first_w[:, :-1], first_b), *mlp.layers[1:]]

    def __call__(self, s: np.ndarray, x: np.ndarray, t) -> np.ndarray:
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape[:-1] + (1,))
        return self.mlp(np.concatenate([s, x, t], -1))


def critic_of(critic_module: torch.nn.Module, params) -> EnsembleCritic:
    """The NumPy ensemble of ``critic_module`` with ``params`` (online or target) in it."""
    critic = copy.deepcopy(critic_module)
    params.to_module(critic)
    return EnsembleCritic.from_module(critic)


# --- FQL, from the equations ----------------------------------------------------------------


def euler_flow(f: FlowField, s: np.ndarray, z: np.ndarray, steps: int) -> np.ndarray:
    """``x = z; for i < K: x = x + f(s, x, i / K) / K``, clipped to ``[-1, 1]``."""
    x = z.copy()
    for i in range(steps):
        x = x + f(s, x, i / steps) / steps
    return np.clip(x, -1.0, 1.0)


def fql_td_loss(mu, critic, target_critic, s, a, s2, r, m, z2, discount, agg):
    """``mean_{E,B} (Q_e(s, a) - y)^2``, ``y = r + discount m agg_e Qbar_e(s', a')``.

    ``a' = clip(mu(s', z'))``.
    """
    next_q = target_critic(s2, np.clip(mu(s2, z2), -1, 1), None)  # [E, B, 1]
    bootstrap = next_q.min(0) if agg == "min" else next_q.mean(0)
    y = r + discount * m * bootstrap
    q = critic(s, a, None)
    return float(np.mean((q - y[None]) ** 2)), y


def fql_bc_flow_loss(f, s, a, x0, t) -> float:
    """``mean (f(s, (1 - t) x0 + t a, t) - (a - x0))^2``."""
    x_t = (1 - t) * x0 + t * a
    return float(np.mean((f(s, x_t, t) - (a - x0)) ** 2))


def fql_distillation_loss(mu, f, s, z, steps) -> float:
    """``mean (mu(s, z) - euler_flow(s, z))^2`` (``mu`` not clipped)."""
    return float(np.mean((mu(s, z) - euler_flow(f, s, z, steps)) ** 2))


def fql_q_loss(mu, critic, s, z, normalize, agg="mean", clip=True) -> tuple[float, np.ndarray]:
    """``-mean q`` (over ``mean |q|`` if normalised), ``q = mean_e Q_e(s, clip(mu(s, z)))``.

    ``agg="min"`` takes the members' minimum; ``clip=False`` scores the unclipped ``mu``.
    """
    action = mu(s, z)
    qs = critic(s, np.clip(action, -1, 1) if clip else action, None)
    q = qs.min(0) if agg == "min" else qs.mean(0)
    value = -q.mean()
    return float(value / np.abs(q).mean() if normalize else value), q


# --- Adam, from its formula -----------------------------------------------------------------


class Adam:
    """Adam on plain arrays: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``."""

    def __init__(self, lr=3e-4, b1=0.9, b2=0.999, eps=1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m: dict[int, np.ndarray] = {}
        self.v: dict[int, np.ndarray] = {}
        self.t = 0

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> list[np.ndarray]:
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            m = self.b1 * self.m.get(i, np.zeros_like(p)) + (1 - self.b1) * g
            v = self.b2 * self.v.get(i, np.zeros_like(p)) + (1 - self.b2) * g * g
            self.m[i], self.v[i] = m, v
            m_hat, v_hat = m / (1 - self.b1**self.t), v / (1 - self.b2**self.t)
            out.append(p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps))
        return out
