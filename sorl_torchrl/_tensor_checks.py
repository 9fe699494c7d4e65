"""Checks of tensor inputs: shapes, the one dtype rule, finite and binary values.

Tensors follow one dtype rule (:func:`as_model_dtype`): a floating-point input of another
float dtype is converted to the model's dtype where it enters a module; an integer or bool
input is refused with a message that names the expected dtype.
"""

from __future__ import annotations

import torch

__all__ = ["as_model_dtype", "check_binary", "check_feature_dim", "check_finite"]


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


def as_model_dtype(tensor: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """The package's dtype rule for inputs: floats are converted, integers and bools refused.

    A floating-point tensor of another dtype (float64 into a float32 model, say) is
    converted to ``dtype``; one of ``dtype`` is returned as is (no copy). Integer and bool
    tensors are refused: an integer observation is most often a wrong column or an encoded
    category, and converting it would hide that.

    Raises:
        ValueError: ``tensor`` is not floating point; the message names ``dtype``.

    Examples:
        >>> as_model_dtype(torch.zeros(2, dtype=torch.float64), torch.float32, "observation").dtype
        torch.float32
        >>> as_model_dtype(torch.zeros(2, dtype=torch.int64), torch.float32, "observation")
        Traceback (most recent call last):
        ...
        ValueError: observation must be a floating-point tensor (the model computes in ...), ...
    """
    if tensor.dtype == dtype:
        return tensor
    if tensor.is_floating_point():
        return tensor.to(dtype)
    raise ValueError(
        f"{name} must be a floating-point tensor (the model computes in {dtype}), got "
        f"{tensor.dtype}. Convert it first, e.g. {name}.to({dtype}); float tensors of another "
        "precision are converted automatically."
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


def check_binary(tensor: torch.Tensor, name: str) -> None:
    """Raise a ``ValueError`` unless every value of ``tensor`` is 0 or 1 (a flag).

    For flags such as ``terminated``. Bool tensors pass without a look; others cost one
    device sync on a GPU.

    Examples:
        >>> check_binary(torch.tensor([0.0, 1.0]), "terminated")
        >>> check_binary(torch.tensor([0, 2]), "terminated")
        Traceback (most recent call last):
        ...
        ValueError: terminated holds 1 value(s) other than 0 and 1 (first: 2) ...
    """
    if tensor.dtype == torch.bool:
        return
    bad = (tensor != 0) & (tensor != 1)
    if bool(bad.any()):
        raise ValueError(
            f"{name} holds {int(bad.sum())} value(s) other than 0 and 1 (first: "
            f"{tensor[bad][0].item()!r}) in a tensor of shape {list(tensor.shape)}. It must "
            f"be a bool or 0/1 tensor (1: the episode terminated); fix the data, e.g. "
            f"{name} != 0 if any non-zero value means terminated."
        )
