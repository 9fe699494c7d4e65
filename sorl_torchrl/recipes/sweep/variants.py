"""Variants: runs of one env and algorithm whose identities differ in more than the task, seed.

Two runs are the same experiment on another task or seed when their run identities
(:func:`~sorl_torchrl.recipes.run_record.run_identity`, which already leaves out every
setting that does not change results) agree except in :data:`GROUP_KEYS`. Where they differ
in another key (``env.q_loss_coef`` in an ablation, say), they are different *variants* and
are never averaged together. A variant's label lists those keys with the run's values.
Runs of different algorithms (``algo.name``) are never variants of each other: the report
puts them in separate rows and columns, and variants are found among one algorithm's runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sorl_torchrl.recipes.sweep.collect import SweepRun

#: Identity keys that place a run inside its variant's table: never variant keys.
GROUP_KEYS = frozenset({"seed", "env.task", "env.name", "algo.name"})
#: Variant label of a group whose runs share every result-changing setting.
NO_VARIANT = "-"
#: Variant label of runs without a known identity in an env that has variants.
UNKNOWN_VARIANT = "(config unknown)"

_UNSET = object()


def variant_keys(identities: Iterable[dict[str, Any]]) -> list[str]:
    """Sorted keys (other than :data:`GROUP_KEYS`) that take two values or more.

    A key that some identities lack (written by an older version) is no variant key by
    itself: only values that are there are compared.

    Examples:
        >>> variant_keys([{"seed": 1, "env.q_loss_coef": 10, "optim.lr": 3e-4},
        ...               {"seed": 2, "env.q_loss_coef": 30, "optim.lr": 3e-4}, {}])
        ['env.q_loss_coef']
    """
    values: dict[str, set] = {}
    for identity in identities:
        for key, value in identity.items():
            if key not in GROUP_KEYS:
                values.setdefault(key, set()).add(_freeze(value))
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def run_variants(runs: Sequence[SweepRun]) -> list[tuple[str, tuple]]:
    """``(label, sort key)`` of each run's variant, found among the runs of its env and algorithm.

    Examples:
        >>> from pathlib import Path
        >>> runs = [SweepRun(Path(str(c)), "scene-play", 1, 0, "finished",
        ...                   identity={"seed": 0, "env.q_loss_coef": c}) for c in (30, 10)]
        >>> run_variants(runs)
        [('env.q_loss_coef=30', ((0, 30.0, ''),)), ('env.q_loss_coef=10', ((0, 10.0, ''),))]
    """
    keys_by_group = {
        group: variant_keys(r.identity for r in runs if (r.env, r.algo) == group)
        for group in {(r.env, r.algo) for r in runs if r.env is not None}
    }
    out = []
    for run in runs:
        keys = keys_by_group.get((run.env, run.algo), [])
        if not keys:
            out.append((NO_VARIANT, ()))
        elif not run.identity:
            out.append((UNKNOWN_VARIANT, ((2, 0.0, ""),)))
        else:
            values = [run.identity.get(key, _UNSET) for key in keys]
            label = ", ".join(f"{k}={format_value(v)}" for k, v in zip(keys, values))
            out.append((label, tuple(_sort_key(v) for v in values)))
    return out


def variant_labels(runs: Sequence[SweepRun]) -> list[str]:
    """The variant label of each run, e.g. ``env.q_loss_coef=30, optim.lr=0.001`` or ``-``."""
    return [label for label, _ in run_variants(runs)]


def format_value(value: Any) -> str:
    """A config value as written on a Hydra command line.

    Examples:
        >>> [format_value(v) for v in (30, 0.001, True, None, [1, 2], "mean")]
        ['30', '0.001', 'true', 'null', '[1,2]', 'mean']
    """
    if value is _UNSET:
        return "<unset>"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _freeze(value: Any) -> Any:
    """A hashable form of a config value."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first, by value; then everything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, float(value), ""
    return 1, 0.0, format_value(value)
