"""What the SORL losses read from a TED batch, and the diagnostics they report."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import unravel_key

from sorl_torchrl._tensor_checks import (
    as_model_dtype,
    check_binary,
    check_feature_dim,
    check_finite,
)

__all__ = ["actor_diagnostics", "critic_diagnostics", "read_ted_batch"]


def read_ted_batch(
    tensordict: TensorDictBase,
    keys: Any,
    observation_dim: int,
    action_dim: int,
    *,
    check_values: bool = True,
    dtype: torch.dtype | None = None,
    owner: str = "ShortcutLoss",
) -> dict[str, torch.Tensor]:
    """The tensors of a TED batch that the losses read, flattened to one batch dim.

    Keys, shapes and dtypes are always checked (host-side metadata: no device
    synchronisation). With ``check_values`` the values are also checked: observations,
    actions and rewards finite, ``terminated`` only 0 and 1 (one synchronisation per tensor
    on a GPU). ``terminated`` (bool, or numeric 0/1) becomes the float
    ``mask = 1 - terminated``.

    Args:
        tensordict: the batch, in the TED layout (``("next", key)`` for next-step keys).
        keys: the loss's ``tensor_keys`` (``observation``, ``action``, ``reward``,
            ``terminated``).
        observation_dim: expected observation size.
        action_dim: expected action size.
        check_values: check the values (see above).
        dtype: the dtype the networks compute in: floating-point observations, actions and
            rewards of another precision are converted to it, integer or bool ones are
            refused (``sorl_torchrl._tensor_checks.as_model_dtype``). ``None``: the
            observations' dtype.
        owner: the loss that reads the batch, as a missing key's message names it.

    Returns:
        ``{"observation", "action", "next_observation", "reward", "mask"}``.

    Examples:
        >>> from types import SimpleNamespace
        >>> from tensordict import TensorDict
        >>> keys = SimpleNamespace(observation="observation", action="action",
        ...                        reward="reward", terminated="terminated")
        >>> batch = TensorDict({"observation": torch.zeros(4, 3), "action": torch.zeros(4, 2),
        ...     "next": {"observation": torch.zeros(4, 3), "reward": torch.ones(4, 1),
        ...              "terminated": torch.tensor([[True], [False], [False], [True]])}},
        ...     batch_size=[4])
        >>> read_ted_batch(batch, keys, 3, 2)["mask"].flatten().tolist()
        [0.0, 1.0, 1.0, 0.0]
        >>> batch["next", "terminated"] = torch.tensor([[2], [0], [0], [1]])
        >>> read_ted_batch(batch, keys, 3, 2)
        Traceback (most recent call last):
        ...
        ValueError: terminated holds 1 value(s) other than 0 and 1 ...
    """
    wanted = {
        "observation": keys.observation,
        "action": keys.action,
        "next_observation": ("next", keys.observation),
        "reward": ("next", keys.reward),
        "terminated": ("next", keys.terminated),
    }
    present = set(tensordict.keys(True, True))
    missing = [unravel_key(k) for k in wanted.values() if unravel_key(k) not in present]
    if missing:
        raise KeyError(
            f"{owner} is missing the keys {missing} in its input tensordict "
            f"(it has {sorted(map(str, present))}). Rename the data or call "
            "loss.set_keys(observation=..., action=..., reward=..., terminated=...)."
        )
    batch = {name: tensordict.get(key) for name, key in wanted.items()}
    if tensordict.batch_dims != 1:
        batch = {k: v.reshape(-1, *v.shape[tensordict.batch_dims :]) for k, v in batch.items()}
    check_feature_dim(batch["observation"], observation_dim, "observation")
    check_feature_dim(batch["next_observation"], observation_dim, "next observation")
    check_feature_dim(batch["action"], action_dim, "action")
    check_feature_dim(batch["reward"], 1, "reward")
    check_feature_dim(batch["terminated"], 1, "terminated")
    if dtype is None:
        observation = batch["observation"]
        dtype = observation.dtype if observation.is_floating_point() else torch.get_default_dtype()
    for name in ("observation", "action", "next_observation", "reward"):
        batch[name] = as_model_dtype(batch[name], dtype, name)
    terminated = batch.pop("terminated")
    if check_values:
        for name in ("observation", "action", "next_observation", "reward"):
            check_finite(batch[name], name)
        check_binary(terminated, "terminated")
    batch["mask"] = 1.0 - terminated.to(dtype)
    return batch


def critic_diagnostics(
    q: torch.Tensor, target: torch.Tensor, num_steps: int
) -> dict[str, torch.Tensor]:
    """Detached critic diagnostics, with the per-sample ``td_error`` ``[B]``.

    Args:
        q: ``Q(s, a, k)`` of every member, ``[E, B, 1]``.
        target: the TD target ``y``, ``[B, 1]``.
        num_steps: the ``k`` of the batch.

    Examples:
        >>> out = critic_diagnostics(torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]]),
        ...                          torch.tensor([[0.0], [0.0]]), 4)
        >>> out["td_error"].tolist(), float(out["q_mean"])
        ([2.0, 3.0], 2.5)
    """
    td_error = (q - target).detach()
    return {
        "q_mean": q.detach().mean(),
        "q_min": q.detach().min(),
        "q_max": q.detach().max(),
        "td_error_mean": td_error.mean(),
        "td_error_std": td_error.std(),
        "target_value": target.detach().mean(),
        "critic_bptt_steps": torch.full((), float(num_steps), device=q.device),
        "td_error": td_error.abs().mean(0).squeeze(-1),
    }


def actor_diagnostics(terms: tuple[torch.Tensor, ...], num_steps: int) -> dict[str, torch.Tensor]:
    """Detached actor diagnostics from the ``(fm, sc, q_loss, q, lam)`` terms.

    Examples:
        >>> terms = tuple(torch.tensor(v) for v in (1.0, 2.0, -0.5, [3.0, 5.0], 0.25))
        >>> float(actor_diagnostics(terms, 2)["q_policy"])
        4.0
    """
    fm, sc, q_loss, q, lam = terms
    return {
        "fm_loss": fm.detach(),
        "sc_loss": sc.detach(),
        "q_loss": q_loss.detach(),
        "q_policy": q.detach().mean(),
        "lambda": lam.detach(),
        "actor_bptt_steps": torch.full((), float(num_steps), device=fm.device),
    }
