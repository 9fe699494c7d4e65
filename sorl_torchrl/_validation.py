"""Input checks shared by the modules: clear errors instead of silent wrong answers."""

from __future__ import annotations

import math

import torch

__all__ = [
    "PowerOfTwo",
    "check_feature_dim",
    "check_finite",
    "check_power_of_two",
    "step_code",
]


def check_power_of_two(value: int, name: str = "inference_steps") -> int:
    """Return ``value`` as an ``int`` if it is a positive power of two, else raise.

    Args:
        value: the number to check (a Python int or a 0-d integer tensor).
        name: how the value is called in the error message.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: if ``value`` is not a positive power of two.

    Examples:
        >>> check_power_of_two(8)
        8
        >>> check_power_of_two(3)
        Traceback (most recent call last):
        ...
        ValueError: inference_steps must be a positive power of two (1, 2, 4, 8, ...), got 3. ...
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a single number, got a tensor of shape {value.shape}."
            )
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(
            f"{name} must be a positive power of two (1, 2, 4, 8, ...), got {value!r}. "
            "Shortcut models are trained on step sizes 2**-d, so only those step counts exist."
        )
    return value


def step_code(num_steps: int) -> int:
    """The integer step code ``d = log2(num_steps)`` (paper symbol ``d``; 1 step -> 0, 8 -> 3).

    Examples:
        >>> [step_code(k) for k in (1, 2, 4, 8)]
        [0, 1, 2, 3]
    """
    return int(math.log2(check_power_of_two(num_steps, "num_steps")))


def check_feature_dim(tensor: torch.Tensor, expected: int, name: str) -> None:
    """Raise a ``ValueError`` unless the last dim of ``tensor`` is ``expected``.

    Examples:
        >>> check_feature_dim(torch.zeros(4, 3), 3, "observation")
        >>> check_feature_dim(torch.zeros(4, 2), 3, "observation")
        Traceback (most recent call last):
        ...
        ValueError: observation must have shape [..., 3], got [4, 2]. ...
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.ndim == 0 or tensor.shape[-1] != expected:
        raise ValueError(
            f"{name} must have shape [..., {expected}], got {list(tensor.shape)}. "
            f"Check that the module was built for this {name} size."
        )


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise a ``ValueError`` if ``tensor`` holds NaN or inf (one device sync on GPU).

    Examples:
        >>> check_finite(torch.ones(3), "reward")
        >>> check_finite(torch.tensor([1.0, float("nan")]), "reward")
        Traceback (most recent call last):
        ...
        ValueError: reward contains 1 non-finite value(s) (NaN or inf) ...
    """
    if tensor.is_floating_point():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf) "
                f"in a tensor of shape {list(tensor.shape)}. Clean the data, or find where "
                "training diverged (lower the learning rate, check the rewards)."
            )


class PowerOfTwo:
    """A class attribute that only accepts positive powers of two (stored per instance).

    Examples:
        >>> class Sampler:
        ...     inference_steps = PowerOfTwo("Default number of Euler steps ``k``.")
        >>> s = Sampler()
        >>> s.inference_steps = 4
        >>> s.inference_steps
        4
        >>> s.inference_steps = 3
        Traceback (most recent call last):
        ...
        ValueError: inference_steps must be a positive power of two (1, 2, 4, 8, ...), got 3. ...
    """

    def __init__(self, doc: str = "") -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.attr = name, f"_{name}"

    def __get__(self, instance, owner=None):
        return self if instance is None else getattr(instance, self.attr)

    def __set__(self, instance, value: int) -> None:
        instance.__dict__[self.attr] = check_power_of_two(value, self.name)
