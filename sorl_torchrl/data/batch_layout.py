"""What a SORL training batch holds, and the sample-time transform that makes one.

Every batch holds float32 ``observation``, ``action``, ``("next", "observation")`` and
``("next", "reward")`` ``[B, 1]``, and bool ``("next", "terminated")`` (the loss's mask is
``1 - terminated``) and ``("next", "done")``. :func:`check_ted_storage` checks that layout on
a dataset's stored transitions and reads the sizes from it; :func:`check_values` checks, once,
the values the loss then no longer checks per batch.

Actions: SORL's actor acts in ``[-1, 1]``. A dataset whose action space is a Box with other
finite bounds ``[low, high]`` is rescaled per dimension on sampling,
``a' = (a - loc) / scale`` with ``loc = (high + low) / 2`` and ``scale = (high - low) / 2``,
then clipped to ``±(1 - 1e-5)`` (so ``atanh`` stays finite, as for OGBench). The evaluation
env applies the inverse map, ``a = a' * scale + loc``, before the action reaches the
simulator: both sides use TorchRL's :class:`~torchrl.envs.transforms.ActionScaling` with the
same ``loc`` and ``scale`` (:func:`unit_box_scaling`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase, is_tensor_collection
from torchrl.envs.transforms import (
    ActionScaling,
    ClipTransform,
    Compose,
    DeviceCastTransform,
    Transform,
)

from sorl_torchrl._tensor_checks import check_binary, check_finite
from sorl_torchrl.data.ted import DEFAULT_ACTION_CLIP

__all__ = [
    "FLAG_KEYS",
    "FLOAT_KEYS",
    "AsFloat32",
    "batch_transform",
    "check_ted_storage",
    "check_values",
    "unit_box_scaling",
]

#: The entries a batch holds for the loss, and the ones cast to float32 on sampling.
FLOAT_KEYS: tuple = ("observation", "action", ("next", "observation"), ("next", "reward"))
FLAG_KEYS: tuple = (("next", "terminated"), ("next", "done"))


class AsFloat32(Transform):
    """Cast entries to float32 (observations and rewards stored as float64 or integers).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"r": torch.ones(2, dtype=torch.int64)}, batch_size=[2])
        >>> AsFloat32(["r"])(td)["r"].dtype
        torch.float32
    """

    def __init__(self, keys: Sequence) -> None:
        super().__init__(in_keys=list(keys), out_keys=list(keys))

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value.to(torch.float32)


def unit_box_scaling(
    low: Sequence[float], high: Sequence[float], *, for_env: bool
) -> ActionScaling | None:
    """The map between a Box action space ``[low, high]`` and SORL's ``[-1, 1]``.

    ``loc = (high + low) / 2``, ``scale = (high - low) / 2``. On a replay buffer
    (``for_env=False``) it maps dataset actions to ``(a - loc) / scale``; on an env it maps
    the policy's action back, ``a' * scale + loc``. ``None`` when the bounds are already
    ``[-1, 1]``.

    Raises:
        ValueError: A bound is infinite, or ``high <= low`` in some dimension.

    Examples:
        >>> to_unit = unit_box_scaling([-3.0], [3.0], for_env=False)
        >>> to_unit.normalize(torch.tensor([1.5])), to_unit.denormalize(torch.tensor([0.5]))
        (tensor([0.5000]), tensor([1.5000]))
        >>> unit_box_scaling([-1.0, -1.0], [1.0, 1.0], for_env=True) is None
        True
    """
    low_t = torch.as_tensor(low, dtype=torch.float32)
    high_t = torch.as_tensor(high, dtype=torch.float32)
    if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()):
        raise ValueError(
            f"The action space has infinite bounds (low={low_t.tolist()}, "
            f"high={high_t.tolist()}): SORL's actor acts in [-1, 1] and the actions can only "
            "be mapped to it from a Box with finite bounds. Record the dataset with a "
            "bounded action space (e.g. gymnasium.wrappers.ClipAction)."
        )
    if (high_t <= low_t).any():
        raise ValueError(f"The action space has high <= low: low={low}, high={high}.")
    if bool((low_t == -1).all() and (high_t == 1).all()):
        return None
    loc, scale = (high_t + low_t) / 2, (high_t - low_t) / 2
    if for_env:
        return ActionScaling(loc=loc, scale=scale)
    return ActionScaling(loc=loc, scale=scale, in_keys_inv=[])


def batch_transform(
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    *,
    device: torch.device | str | None = None,
    action_clip: float | None = DEFAULT_ACTION_CLIP,
) -> Compose:
    """The sample-time transform: float32, actions to ``[-1, 1]`` and clipped, to ``device``.

    Args:
        low: Lower action bounds of the dataset (``None``: the actions are in ``[-1, 1]``).
        high: Upper action bounds.
        device: Where batches go (``None`` or CPU: they stay on the CPU).
        action_clip: Clip actions to ``±action_clip`` after rescaling (``None``: off).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(1, 2, dtype=torch.float64),
        ...                  "action": torch.tensor([[3.0]]),
        ...                  "next": {"observation": torch.zeros(1, 2, dtype=torch.float64),
        ...                           "reward": torch.ones(1, 1, dtype=torch.int64)}}, [1])
        >>> out = batch_transform([-3.0], [3.0])(td)
        >>> out["action"], out["next", "reward"].dtype
        (tensor([[1.0000]]), torch.float32)
    """
    transforms: list[Transform] = [AsFloat32(FLOAT_KEYS)]
    if low is not None and high is not None:
        scaling = unit_box_scaling(low, high, for_env=False)
        if scaling is not None:
            transforms.append(scaling)
    if action_clip is not None:
        transforms.append(ClipTransform(in_keys=["action"], low=-action_clip, high=action_clip))
    if device is not None and torch.device(device).type != "cpu":
        transforms.append(DeviceCastTransform(device))
    return Compose(*transforms)


def check_ted_storage(data: TensorDictBase, name: str) -> tuple[int, int]:
    """Check that stored transitions are in the TED layout SORL reads; their sizes.

    Args:
        data: All transitions, batch size ``[N]``.
        name: The dataset, for the messages.

    Returns:
        ``(observation_dim, action_dim)``.

    Raises:
        ValueError: A key is missing, a nested (dict) observation, or a wrong shape.

    Examples:
        >>> from tensordict import TensorDict
        >>> flags = torch.zeros(5, 1, dtype=torch.bool)
        >>> td = TensorDict({"observation": torch.zeros(5, 4), "action": torch.zeros(5, 1),
        ...     "next": {"observation": torch.zeros(5, 4), "reward": torch.zeros(5, 1),
        ...              "terminated": flags, "done": flags}}, [5])
        >>> check_ted_storage(td, "toy")
        (4, 1)
    """
    for key in ("observation", ("next", "observation")):
        if is_tensor_collection(data.get(key, None)):
            raise ValueError(
                f"{name}: {key} is a dict ({sorted(data.get(key).keys())}): SORL needs one "
                "flat Box observation. Flatten it (gymnasium's FlattenObservation) when "
                "recording the dataset."
            )
    present = set(data.keys(True, True))
    missing = [key for key in (*FLOAT_KEYS, *FLAG_KEYS) if key not in present]
    if missing:
        raise ValueError(
            f"{name} lacks the TED entries {missing} (it has {sorted(map(str, present))}). "
            "SORL reads observation, action and, under 'next', observation, reward, "
            "terminated and done."
        )
    n = data.batch_size[0] if data.batch_dims else 0
    if data.batch_dims != 1 or n == 0:
        raise ValueError(f"{name} holds no transitions (batch size {list(data.batch_size)}).")
    for key in FLOAT_KEYS + FLAG_KEYS:
        value = data.get(key)
        if value.ndim != 2 or (key in FLAG_KEYS + (("next", "reward"),) and value.shape[1] != 1):
            raise ValueError(
                f"{name}: {key} has shape {list(value.shape)}; expected [N, features] "
                "([N, 1] for reward, terminated and done)."
            )
    observation_dim = int(data.get("observation").shape[-1])
    if data.get(("next", "observation")).shape[-1] != observation_dim:
        raise ValueError(f"{name}: observation and next observation differ in size.")
    return observation_dim, int(data.get("action").shape[-1])


def check_values(
    data: TensorDictBase,
    name: str,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> None:
    """Check once, when a dataset is opened or converted, what the loss then skips per batch.

    Observations, actions and rewards finite; ``terminated`` only 0 and 1; actions inside
    ``[low, high]`` (default ``[-1, 1]``), with a tolerance of ``1e-5`` times the range.

    Raises:
        ValueError: Names the entry, the count of bad values and, for actions, the range.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(2, 1), "action": torch.tensor([[0.], [4.]]),
        ...     "next": {"observation": torch.zeros(2, 1), "reward": torch.zeros(2, 1),
        ...              "terminated": torch.zeros(2, 1)}}, [2])
        >>> check_values(td, "toy", [-3.0], [3.0])
        Traceback (most recent call last):
        ...
        ValueError: toy: 1 action value(s) lie outside the action space [[-3.0], [3.0]] ...
    """
    for key in FLOAT_KEYS:
        check_finite(data.get(key), f"{name}: {key if isinstance(key, str) else '.'.join(key)}")
    check_binary(data.get(("next", "terminated")), f"{name}: terminated")
    action = data.get("action").to(torch.float64)
    low_t = torch.as_tensor(-1.0 if low is None else low, dtype=torch.float64)
    high_t = torch.as_tensor(1.0 if high is None else high, dtype=torch.float64)
    tolerance = 1e-5 * (high_t - low_t)
    outside = (action < low_t - tolerance) | (action > high_t + tolerance)
    if bool(outside.any()):
        raise ValueError(
            f"{name}: {int(outside.sum())} action value(s) lie outside the action space "
            f"[{low_t.tolist()}, {high_t.tolist()}] (found [{action.min().item():.4g}, "
            f"{action.max().item():.4g}]). SORL's actor acts in [-1, 1]: store actions "
            "inside the bounds of the dataset's action space."
        )
