"""Slow, independent NumPy references for the networks and losses (float64).

Written from the equations in the SORL paper/spec, not from the package's code paths.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-5


def to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + shift


class LinearVelocity:
    """v(s, x, t, d) = W [s, x, t, d] + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.W, self.b = to_np(weight), to_np(bias)

    def __call__(self, s, x, t, d):
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape[:-1] + (1,))
        d = np.broadcast_to(np.asarray(d, dtype=np.float64), x.shape[:-1] + (1,))
        return np.concatenate([s, x, t, d], -1) @ self.W.T + self.b


class MLPVelocity:
    """v(s, x, t, d) = MLP([s, x, t, d]): Linear -> tanh-GELU per hidden layer, then Linear."""

    def __init__(self, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.layers = [(to_np(w), to_np(b)) for w, b in weights]

    @classmethod
    def from_params(cls, params, prefix=("module", "network")) -> MLPVelocity:
        """Read ``(weight, bias)`` of every Linear from an actor's parameter TensorDict."""
        network = params.get(prefix)
        indices = sorted(int(key) for key in network.keys())
        return cls(
            [(network.get((str(i), "weight")), network.get((str(i), "bias"))) for i in indices]
        )

    def __call__(self, s, x, t, d):
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), x.shape[:-1] + (1,))
        d = np.broadcast_to(np.asarray(d, dtype=np.float64), x.shape[:-1] + (1,))
        s = np.broadcast_to(s, x.shape[:-1] + s.shape[-1:])
        z = np.concatenate([s, x, t, d], -1)
        for i, (weight, bias) in enumerate(self.layers):
            z = z @ weight.T + bias
            if i < len(self.layers) - 1:
                z = gelu_tanh(z)
        return z


def euler_sample(velocity, s: np.ndarray, noise: np.ndarray, k: int) -> np.ndarray:
    x = noise.copy()
    for i in range(k):
        x = x + velocity(s, x, i / k, math.log2(k)) / k
    return np.clip(x, -1.0, 1.0)


class EnsembleCritic:
    """Per-member loop: [Linear -> tanh-GELU -> LayerNorm] * L -> Linear."""

    def __init__(self, layers: list[dict[str, np.ndarray]], eps: float = 1e-6) -> None:
        self.layers, self.eps = layers, eps

    @classmethod
    def from_module(cls, critic: torch.nn.Module, eps: float = 1e-6) -> EnsembleCritic:
        """Read the weights of a QEnsemble, layer by layer, into plain arrays."""
        layers: list[dict[str, np.ndarray]] = []
        for layer in critic.network.layers:
            if not hasattr(layer, "weight"):  # the activations hold no parameters
                continue
            weight, bias = to_np(layer.weight), to_np(layer.bias)
            if weight.shape[1] == 1:  # per-member LayerNorm affine [E, 1, H]
                layers[-1]["ln_scale"], layers[-1]["ln_shift"] = weight, bias
            else:  # per-member Linear [E, in, out]
                layers.append({"W": weight, "b": bias})
        return cls(layers, eps)

    def __call__(self, s: np.ndarray, a: np.ndarray, k: float | None) -> np.ndarray:
        feats = [s, a]
        if k is not None:
            feats.append(np.full(a.shape[:-1] + (1,), float(k)))
        z0 = np.concatenate(feats, -1)
        members = self.layers[0]["W"].shape[0]
        out = []
        for e in range(members):
            z = z0
            for i, layer in enumerate(self.layers):
                z = z @ layer["W"][e] + layer["b"][e, 0]
                if i < len(self.layers) - 1:
                    z = gelu_tanh(z)
                    if "ln_scale" in layer:
                        z = layer_norm(
                            z, layer["ln_scale"][e, 0], layer["ln_shift"][e, 0], self.eps
                        )
            out.append(z)
        return np.stack(out)  # [E, B, 1]


# --- the SORL loss terms, written from the equations --------------------------------------


def interpolate(x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x_t = (1 - (1 - eps) t) x0 + t x1 and v* = x1 - (1 - eps) x0."""
    return (1 - (1 - EPS) * t) * x0 + t * x1, x1 - (1 - EPS) * x0


def flow_matching(f, s, x1, x0, t, code) -> float:
    x_t, v_star = interpolate(x0, x1, t)
    return float(np.mean((f(s, x_t, t, code) - v_star) ** 2))


def self_consistency(f, f_target, s, x1, x0, t, d) -> float:
    x_t, _ = interpolate(x0, x1, t)
    h = 2.0**-d
    v1 = f_target(s, x_t, t, d + 1)
    v2 = f_target(s, x_t + h / 2 * v1, t + h / 2, d + 1)
    return float(np.mean((f(s, x_t, t, d) - (v1 + v2) / 2) ** 2))


def q_loss(f, critic, s, x0, k, agg="mean", normalize=True) -> tuple[float, np.ndarray]:
    qs = critic(s, euler_sample(f, s, x0, k), k)
    q = qs.min(0) if agg == "min" else qs.mean(0)
    value = -q.mean()
    return float(value / np.abs(q).mean() if normalize else value), q


def td_loss(f, critic, target_critic, s, a, s2, r, m, x0, k, discount, agg):
    next_q = target_critic(s2, euler_sample(f, s2, x0, k), k)
    y = r + discount * m * (next_q.min(0) if agg == "min" else next_q.mean(0))
    q = critic(s, a, k)
    return float(np.mean((q - y[None]) ** 2)), y
