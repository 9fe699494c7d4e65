"""The one way this package compiles: a method of an object, per instance, with a fallback.

:class:`CompiledMethod` serves the update step and the verifier. It

- compiles ``getattr(owner, name)`` with ``torch.compile`` lazily, on the first call, for
  the object it is called with, so the compiled function is bound to that object;
- is dropped when its owner is copied or pickled (:meth:`CompiledMethod.__getstate__`),
  so a copy compiles its own method on its first call instead of running the original's;
- falls back to eager when compilation fails: the method runs eagerly, a warning says why,
  and every later call is eager (:attr:`CompiledMethod.failure` keeps the reason);
- sets dynamo options with ``torch._dynamo.config.patch`` for the duration of a call only.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch._dynamo import config as dynamo_config
from torch._inductor import list_mode_options

__all__ = ["CompiledMethod", "compile_mode"]

#: Graphs one compiled method may build per code object: every instance of a class shares
#: the code object, and each instance and each step count ``k`` needs its own graph.
RECOMPILE_LIMIT = 64


def compile_mode(value: bool | str | None) -> str | None:
    """Check a ``compile=`` argument: ``True`` -> ``"default"``, ``False``/``None`` -> ``None``.

    Examples:
        >>> compile_mode(True), compile_mode(False), compile_mode("max-autotune-no-cudagraphs")
        ('default', None, 'max-autotune-no-cudagraphs')
        >>> compile_mode("fastest")
        Traceback (most recent call last):
        ...
        ValueError: compile must be True, False or a torch.compile mode (default, ...
    """
    if value is True:
        return "default"
    if value is False or value is None:
        return None
    modes = list(list_mode_options())
    if not isinstance(value, str) or value not in modes:
        raise ValueError(
            f"compile must be True, False or a torch.compile mode ({', '.join(modes)}), "
            f"got {value!r}."
        )
    return value


class CompiledMethod:
    """``getattr(owner, name)(*args)``, compiled per owner with ``torch.compile``.

    Args:
        name: the method of the owner to compile.
        mode: a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"`` for CUDA graphs,
            ``"max-autotune-no-cudagraphs"``, ...) or ``None`` to always run eagerly.
        what: how warnings name the method.
        fullgraph: require one graph. A method that runs as one graph either compiles
            before any of it runs or not at all, so falling back to eager never repeats
            side effects such as an optimizer step.

    Examples:
        >>> class Scale:
        ...     def __init__(self, mode):
        ...         self.factor = 2.0
        ...         self.double = CompiledMethod("_double", mode, what="Scale.double")
        ...     def _double(self, x):
        ...         return self.factor * x
        >>> import copy
        >>> a = Scale(mode=None)  # eager; "default" compiles on the first call
        >>> b = copy.deepcopy(a)
        >>> b.factor = 3.0
        >>> a.double(a, torch.ones(2)).tolist(), b.double(b, torch.ones(2)).tolist()
        ([2.0, 2.0], [3.0, 3.0])
        >>> a.double.is_compiled, Scale("default").double.is_compiled
        (False, True)
    """

    def __init__(self, name: str, mode: str | None, *, what: str, fullgraph: bool = True):
        self.name = name
        self.mode = mode
        self.what = what
        self.fullgraph = fullgraph
        self.failure: str | None = None
        self._compiled: Any = None

    @property
    def is_compiled(self) -> bool:
        """Whether calls run compiled (``False`` when eager or after a fallback)."""
        return self.mode is not None and self.failure is None

    def __call__(self, owner: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(owner, self.name)
        if not self.is_compiled:
            return method(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(
                method, mode=self.mode, fullgraph=self.fullgraph, dynamic=False
            )
        limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        try:
            with dynamo_config.patch(recompile_limit=limit):
                return self._compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back
            # An error that eager execution raises too is the caller's, not the compiler's.
            result = method(*args, **kwargs)
            self.failure = f"{type(err).__name__}: {err}"
            self._compiled = None
            warnings.warn(
                f"torch.compile of {self.what} failed ({self.failure}); running it eagerly "
                "from now on.",
                stacklevel=3,
            )
            return result

    def __getstate__(self) -> dict[str, Any]:
        # A compiled function belongs to one object and does not pickle: copies rebuild it.
        state = self.__dict__.copy()
        state["_compiled"] = None
        return state
