"""Input checks shared by the modules and the recipes: clear errors instead of silent wrong answers.

Every setting is checked once, where it enters the package, by a *check*: a callable
``check(value, name)`` that returns the value in its canonical type or raises a
:class:`SettingError` naming the setting, the value it got and what is allowed. Each
constructor lists its checks in a :class:`Settings` table (``ShortcutLoss.SETTINGS``,
``SORLUpdateStep.SETTINGS``, ...); per-call overrides and the recipes' config check
(:mod:`sorl_torchrl.recipes.config_checks`) run the same checks, so each rule is written once.

The checks of tensor inputs (shapes, the dtype rule, finite values) are in
:mod:`sorl_torchrl._tensor_checks`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "FLAG",
    "Choice",
    "Each",
    "Number",
    "PowerOfTwo",
    "SEED",
    "SettingError",
    "Settings",
    "SettingsError",
    "Text",
    "UnknownSettingError",
    "auto_device",
    "check_compile",
    "check_device",
    "check_power_of_two",
    "problem_line",
    "step_code",
]

#: A check: ``check(value, name)`` returns the canonical value or raises a ``ValueError``.
Check = Callable[[Any, str], Any]


class SettingError(ValueError):
    """A setting outside its allowed values.

    Attributes:
        name: the setting, as the caller spells it (``"discount"``, ``"loss.discount"``).
        value: the value it got.
        allowed: what it accepts, as a phrase (``"a finite number in [0, 1]"``).
        hint: what to do about it (may be empty).

    Examples:
        >>> err = SettingError("discount", 1.5, "a finite number in [0, 1]")
        >>> str(err)
        'discount must be a finite number in [0, 1], got 1.5.'
        >>> err.summary()
        'discount: got 1.5, allowed a finite number in [0, 1]'
    """

    def __init__(self, name: str, value: Any, allowed: str, hint: str = "") -> None:
        self.name, self.value, self.allowed, self.hint = name, value, allowed, hint
        text = f"{name} must be {allowed}, got {value!r}."
        super().__init__(f"{text} {hint}" if hint else text)

    def __reduce__(self):  # picklable (errors cross process boundaries in sweeps)
        return type(self), (self.name, self.value, self.allowed, self.hint)

    def summary(self) -> str:
        """One line: ``name: got value, allowed ...``."""
        return f"{self.name}: got {self.value!r}, allowed {self.allowed}"


class SettingsError(ValueError):
    """Several settings outside their allowed values, one line each.

    Examples:
        >>> print(SettingsError("ShortcutLoss", ["alpha: got -1.0, allowed ...", "fm_coef: ..."]))
        ShortcutLoss: 2 settings are not allowed:
          alpha: got -1.0, allowed ...
          fm_coef: ...
        Change each one to an allowed value.
    """

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where, self.problems = where, list(problems)
        lines = "\n  ".join(self.problems)
        count = len(self.problems)
        noun = "setting is" if count == 1 else "settings are"
        super().__init__(
            f"{where}: {count} {noun} not allowed:\n  {lines}\nChange each one to an allowed value."
        )

    def __reduce__(self):
        return type(self), (self.where, self.problems)


class UnknownSettingError(SettingError):
    """A setting name that no check knows (a typo, or a setting of another component).

    Examples:
        >>> print(UnknownSettingError("loss.alhpa", 1.0, ["alpha", "fm_coef"]))
        loss.alhpa is not a setting (known: alpha, fm_coef). Check its spelling.
    """

    def __init__(self, name: str, value: Any, known: Sequence[str]) -> None:
        self.name, self.value, self.hint, self.known = name, value, "", list(known)
        self.allowed = f"a known setting ({', '.join(self.known)})"
        ValueError.__init__(
            self, f"{name} is not a setting (known: {', '.join(self.known)}). Check its spelling."
        )

    def __reduce__(self):
        return type(self), (self.name, self.value, self.known)

    def summary(self) -> str:
        """One line: ``name: not a setting (known: ...)``."""
        return f"{self.name}: not a setting (known: {', '.join(self.known)})"


def problem_line(name: str, error: ValueError) -> str:
    """One line for a problem: ``name: got X, allowed Y`` (or ``name: <message>``).

    Examples:
        >>> problem_line("compile", ValueError("compile must be True or False, got 3."))
        'compile: compile must be True or False, got 3.'
    """
    return error.summary() if isinstance(error, SettingError) else f"{name}: {error}"


# ---------------------------------------------------------------------------------- checks
def _bounds(interval: str) -> tuple[float, float, bool, bool]:
    low, high = (float(part) for part in interval[1:-1].split(","))
    return low, high, interval[0] == "[", interval[-1] == "]"


@dataclass(frozen=True)
class Number:
    """A finite real number (or an integer) in an interval: a check.

    Args:
        interval: the allowed range in interval notation, e.g. ``"[0, 1]"``, ``"(0, 1]"``,
            ``"[0, inf)"``.
        integer: require an integer (an integral float such as ``8.0`` becomes ``8``).
        optional: also accept ``None``.
        meaning: what special values mean, shown in the message (``"0: off"``).

    Examples:
        >>> Number("[0, 1]")(0.5, "discount")
        0.5
        >>> Number("[1, inf)", integer=True)(4.0, "batch_size")
        4
        >>> Number("[0, 1]")(float("nan"), "discount")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: discount must be a finite number in [0, 1], got nan.
        >>> Number("(0, inf)")(True, "lr")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: lr must be a finite number > 0, got True.
    """

    interval: str = "(-inf, inf)"
    integer: bool = False
    optional: bool = False
    meaning: str = ""

    @property
    def allowed(self) -> str:
        """What the check accepts, as a phrase."""
        low, high, low_closed, high_closed = _bounds(self.interval)
        text = "an integer" if self.integer else "a finite number"
        if high == math.inf and low > -math.inf:
            text += f" {'>=' if low_closed else '>'} {low:g}"
        elif low == -math.inf and high < math.inf:
            text += f" {'<=' if high_closed else '<'} {high:g}"
        elif low > -math.inf:
            text += f" in {self.interval}"
        if self.meaning:
            text += f" ({self.meaning})"
        return f"None or {text}" if self.optional else text

    def __call__(self, value: Any, name: str) -> float | int | None:
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise SettingError(name, value, self.allowed)
        if self.integer:
            if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                raise SettingError(name, value, self.allowed)
            number: float | int = int(value)
        else:
            number = float(value)
            if not math.isfinite(number):
                raise SettingError(name, value, self.allowed)
        low, high, low_closed, high_closed = _bounds(self.interval)
        above = number >= low if low_closed else number > low
        below = number <= high if high_closed else number < high
        if not (above and below):
            raise SettingError(name, value, self.allowed)
        return number


@dataclass(frozen=True)
class Choice:
    """One of a few values, compared with their type (``1`` is not ``True``): a check.

    Examples:
        >>> Choice("mean", "min")("min", "q_agg")
        'min'
        >>> Choice(True, False, "auto")(1, "resume")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: resume must be one of True, False, 'auto', got 1.
    """

    options: tuple[Any, ...]

    def __init__(self, *options: Any) -> None:
        object.__setattr__(self, "options", options)

    @property
    def allowed(self) -> str:
        """What the check accepts, as a phrase."""
        return "one of " + ", ".join(map(repr, self.options))

    def __call__(self, value: Any, name: str) -> Any:
        for option in self.options:
            if type(value) is type(option) and value == option:
                return option
        raise SettingError(name, value, self.allowed)


#: A bool setting (``0`` and ``1`` are refused: a typo for a number is not a switch).
FLAG = Choice(True, False)


@dataclass(frozen=True)
class Text:
    """A non-empty string (or ``None`` if ``optional``): a check.

    Examples:
        >>> Text(optional=True)(None, "data.root") is None
        True
        >>> Text()("", "run_dir")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: run_dir must be a non-empty string, got ''.
    """

    optional: bool = False

    def __call__(self, value: Any, name: str) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            allowed = "a non-empty string"
            raise SettingError(name, value, f"None or {allowed}" if self.optional else allowed)
        return value


@dataclass(frozen=True)
class Each:
    """A list whose every item passes ``item`` (items named ``name[i]``): a check.

    Examples:
        >>> Each(Number("[1, inf)", integer=True), nonempty=False)((64, 64), "num_cells")
        [64, 64]
        >>> Each(check_power_of_two)([1, 3], "eval.inference_steps")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: eval.inference_steps[1] must be a positive power ...
    """

    item: Check
    nonempty: bool = True

    def __call__(self, value: Any, name: str) -> list[Any]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            allowed = "a non-empty list" if self.nonempty else "a list"
            raise SettingError(name, value, allowed)
        if self.nonempty and not value:
            raise SettingError(name, value, "a non-empty list")
        return [self.item(item, f"{name}[{i}]") for i, item in enumerate(value)]


def check_power_of_two(value: Any, name: str = "inference_steps", minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is a power of two ``>= minimum``, else raise.

    Args:
        value: the number to check (an integer, an integral float or a 0-d integer tensor).
        name: how the value is called in the error message.
        minimum: the smallest power of two allowed.

    Returns:
        ``int(value)``.

    Raises:
        SettingError: if ``value`` is not such a power of two (bools are refused).

    Examples:
        >>> check_power_of_two(8)
        8
        >>> check_power_of_two(3)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: inference_steps must be a positive power of two ...
    """
    if type(value) is int and value >= minimum and value > 0 and not value & (value - 1):
        return value  # the common case, without the checks below (it runs per update)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a single number, got a tensor of shape {value.shape}."
            )
        value = value.item()
    number = value
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    ok = isinstance(number, numbers.Integral) and not isinstance(number, bool)
    if not ok or number < max(minimum, 1) or int(number) & (int(number) - 1):
        allowed = (
            "a positive power of two (1, 2, 4, 8, ...)"
            if minimum <= 1
            else f"a power of two >= {minimum} ({minimum}, {2 * minimum}, {4 * minimum}, ...)"
        )
        raise SettingError(
            name,
            value,
            allowed,
            "Shortcut models are trained on step sizes 2**-d, so only those step counts exist.",
        )
    return int(number)


def step_code(num_steps: int) -> int:
    """The integer step code ``d = log2(num_steps)`` (paper symbol ``d``; 1 step -> 0, 8 -> 3).

    Examples:
        >>> [step_code(k) for k in (1, 2, 4, 8)]
        [0, 1, 2, 3]
    """
    return int(math.log2(check_power_of_two(num_steps, "num_steps")))


def check_compile(value: Any, name: str = "compile") -> str | None:
    """A ``compile=`` setting as a ``torch.compile`` mode, or ``None`` for eager (a check).

    Examples:
        >>> check_compile(True), check_compile(False)
        ('default', None)
    """
    from sorl_torchrl._compile import compile_mode

    return compile_mode(value)


def auto_device() -> torch.device:
    """The device ``device="auto"`` means: the current CUDA device when torch sees one, else CPU.

    Examples:
        >>> auto_device().type in ("cuda", "cpu")
        True
    """
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_device(value: Any, name: str = "device") -> torch.device:
    """A device that exists on this machine, as a ``torch.device`` (a check).

    ``"auto"`` is :func:`auto_device`: CUDA when torch sees a GPU, else the CPU.

    Raises:
        SettingError: ``value`` names no torch device, or one this machine does not have
            (CUDA asked for where torch sees no CUDA device, an index past the last GPU).

    Examples:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("auto") == auto_device()
        True
        >>> check_device("gpu")
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingError: device must be 'auto' or a torch device such as ...
    """
    if value == "auto":
        return auto_device()
    try:
        device = value if isinstance(value, torch.device) else torch.device(value)
    except (RuntimeError, TypeError):
        allowed = "'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1'"
        raise SettingError(name, value, allowed) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SettingError(
                name,
                value,
                "a device this machine has ('cpu')",
                "CUDA is not available: torch sees no CUDA device (no GPU, no driver, or a "
                "CPU-only build of torch). Use device cpu, or run on a machine with a GPU.",
            )
        if device.index is not None and device.index >= count:
            raise SettingError(
                name,
                value,
                f"'cpu', 'cuda' or 'cuda:0' to 'cuda:{count - 1}'",
                f"torch sees {count} CUDA device(s) on this machine.",
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError(
            name, value, "a device this machine has", "MPS (Apple GPU) is not available here."
        )
    return device


class Settings(Mapping[str, Check]):
    """The checks of one constructor's settings, and the rules that relate them.

    A rule ``rule(values, prefix)`` sees the checked values (only when every setting it
    reads passed its own check) and returns a :class:`SettingError` or ``None``.

    Args:
        where: who owns the settings, for messages (``"ShortcutLoss"``).
        checks: one check per setting name.
        rules: checks across settings.

    Examples:
        >>> settings = Settings("Demo", {"lr": Number("(0, inf)"), "tau": Number("(0, 1]")})
        >>> settings.check({"lr": 1e-3, "tau": 1})
        {'lr': 0.001, 'tau': 1.0}
        >>> settings.check({"lr": -1, "tau": 2})
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingsError: Demo: 2 settings are not allowed:
          lr: got -1, allowed a finite number > 0
          tau: got 2, allowed a finite number in (0, 1]
        Change each one to an allowed value.
    """

    def __init__(
        self,
        where: str,
        checks: Mapping[str, Check],
        rules: Sequence[Callable[[dict[str, Any], str], SettingError | None]] = (),
    ) -> None:
        self.where = where
        self._checks = dict(checks)
        self.rules = tuple(rules)

    def __getitem__(self, key: str) -> Check:
        return self._checks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)

    def collect(
        self, values: Mapping[str, Any], prefix: str = ""
    ) -> tuple[dict[str, Any], list[tuple[str, ValueError]]]:
        """Check every value; returns ``(checked values, [(name, error), ...])``, never raises.

        Names are ``prefix + key``; a key without a check is an :class:`UnknownSettingError`.
        The rules run when every value passed its own check.
        """
        checked: dict[str, Any] = {}
        problems: list[tuple[str, ValueError]] = []
        for key, value in values.items():
            name = f"{prefix}{key}"
            try:
                if key not in self._checks:
                    raise UnknownSettingError(name, value, list(self))
                checked[key] = self._checks[key](value, name)
            except ValueError as err:
                problems.append((name, err))
        if not problems:
            for rule in self.rules:
                if (error := rule(checked, prefix)) is not None:
                    problems.append((error.name, error))
        return checked, problems

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The checked values, or one error that names every problem.

        Raises:
            ValueError: exactly one value is not allowed (its check's own error, a
                :class:`SettingError` for the checks of this module).
            SettingsError: several are; each is listed.
        """
        checked, problems = self.collect(values)
        if len(problems) == 1:
            raise problems[0][1]
        if problems:
            raise SettingsError(self.where, [problem_line(*problem) for problem in problems])
        return checked


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
        sorl_torchrl._validation.SettingError: inference_steps must be a positive power of two ...
    """

    def __init__(self, doc: str = "") -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.attr = name, f"_{name}"

    def __get__(self, instance, owner=None):
        return self if instance is None else getattr(instance, self.attr)

    def __set__(self, instance, value: int) -> None:
        instance.__dict__[self.attr] = check_power_of_two(value, self.name)


#: A random seed that torch, NumPy and ``random`` all accept (NumPy's range).
SEED = Number("[0, 4294967295]", integer=True)
