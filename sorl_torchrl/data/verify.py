"""Check an OGBench dataset file and summarise it.

:func:`verify_dataset_file` checks that the file can be read in full, has the keys, dtypes
and shapes of the official format for its dataset, consists of whole episodes (the last
row of every episode, and of the file, is a terminal), holds finite values (values too large
for float32 training are warned about) and actions in [-1, 1], and matches its provenance
record if it has one (official: downloaded by ``sorl-data download``, with its URL and date;
regenerated: made by ``sorl-data generate``). A file without a record is of unknown origin
(an official file copied in by hand has none), and an error when the shard dir of an
unfinished ``sorl-data generate`` lies beside it: then it is that run's leftover. It never
raises on a bad file: problems are listed in the returned report.

Examples:
    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = f"{tmp}/pointmaze-medium-navigate-v0.npz"
    ...     np.savez(path, observations=np.zeros((4, 2), np.float32),
    ...              actions=np.full((4, 2), 2.0, np.float32),
    ...              terminals=np.array([0, 1, 0, 1], bool),
    ...              qpos=np.zeros((4, 2), np.float32), qvel=np.zeros((4, 2), np.float32))
    ...     report = verify_dataset_file(path)
    >>> report.ok, report.errors
    (False, ['actions outside [-1, 1]: 8 values, range [2, 2]'])
    >>> report.summary["episodes"], report.summary["transitions"]
    (2, 2)
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sorl_torchrl.data.provenance import (
    describe_provenance,
    interrupted_generation,
    read_provenance,
    record_source,
    sha256_of,
)
from sorl_torchrl.data.specs import DatasetSpec, get_dataset_spec

__all__ = ["VerificationReport", "verify_dataset_file", "format_report", "expected_layout"]


@dataclasses.dataclass
class VerificationReport:
    """Result of :func:`verify_dataset_file`.

    Attributes:
        path: The checked file.
        dataset: The dataset the file was checked against (``None``: unknown name, only
            the generic checks ran).
        errors: Problems that make the file unusable or wrong.
        warnings: Oddities that do not (e.g. a non-official episode length).
        summary: Counts and per-key statistics.
    """

    path: Path
    dataset: str | None
    errors: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether no error was found."""
        return not self.errors


def expected_layout(spec: DatasetSpec) -> dict[str, tuple[np.dtype, int | None]]:
    """Key -> (dtype, feature size; ``None`` for 1-D) of the official files of ``spec``.

    >>> expected_layout(get_dataset_spec("puzzle-3x3-play-v0"))["button_states"]
    (dtype('int64'), 9)
    """
    layout: dict[str, tuple[np.dtype, int | None]] = {
        "observations": (np.dtype(np.float32), spec.observation_dim),
        "actions": (np.dtype(np.float32), spec.action_dim),
        "terminals": (np.dtype(bool), None),
        "qpos": (np.dtype(np.float32), spec.qpos_dim),
        "qvel": (np.dtype(np.float32), spec.qvel_dim),
    }
    if spec.button_dim is not None:
        layout["button_states"] = (np.dtype(np.int64), spec.button_dim)
    return layout


#: Magnitudes above which a value is reported as too large for float32 training.
HUGE = 1e18

_GENERIC_DTYPES = {
    "observations": np.dtype(np.float32),
    "actions": np.dtype(np.float32),
    "terminals": np.dtype(bool),
    "qpos": np.dtype(np.float32),
    "qvel": np.dtype(np.float32),
}


def _spec_from_path(path: Path, dataset_name: str | None) -> DatasetSpec | None:
    name = dataset_name or path.name.removesuffix(".npz")
    try:
        return get_dataset_spec(name)
    except ValueError:
        return None


def verify_dataset_file(
    path: str | os.PathLike, dataset_name: str | None = None
) -> VerificationReport:
    """Check one dataset file (see the module docstring for what is checked).

    Args:
        path: The ``.npz`` file.
        dataset_name: Dataset to check against (default: inferred from the file name).

    Returns:
        The report; ``report.ok`` is ``False`` if anything is wrong.
    """
    path = Path(path)
    spec = _spec_from_path(path, dataset_name)
    report = VerificationReport(path=path, dataset=spec.name if spec else None)
    if spec is None:
        report.warnings.append(
            f"unknown dataset name for {path.name!r}: only generic checks ran "
            "(pass --dataset NAME to check shapes)"
        )
    if not path.is_file():
        report.errors.append(f"file not found: {path}")
        return report
    arrays = _read_arrays(path, spec, report)
    if arrays is None:
        return report
    _check_layout(arrays, spec, report)
    if report.errors:
        return report
    _check_episodes(arrays, spec, report)
    _check_values(arrays, report)
    _check_provenance(path, arrays, report)
    report.summary.update(_statistics(arrays))
    return report


def _read_arrays(
    path: Path, spec: DatasetSpec | None, report: VerificationReport
) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as file:
            return {key: file[key] for key in file.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zipfile.LargeZipFile) as error:
        name = spec.name if spec is not None else "NAME"
        fix = f"download it again with `sorl-data download {name} --overwrite`"
        if spec is None or not spec.load_only:
            fix += f" or regenerate it with `sorl-data generate {name} --overwrite`"
        report.errors.append(
            f"cannot read {path.name} ({type(error).__name__}: {error}); the file is truncated "
            f"or corrupt (or not an .npz file at all): {fix}"
        )
        return None


def _check_layout(
    arrays: dict[str, np.ndarray], spec: DatasetSpec | None, report: VerificationReport
) -> None:
    if spec is not None:
        layout = expected_layout(spec)
    else:
        layout = {key: (dtype, None) for key, dtype in _GENERIC_DTYPES.items()}
    missing = [key for key in layout if key not in arrays]
    if missing:
        report.errors.append(f"missing keys: {', '.join(missing)}")
    extra = sorted(set(arrays) - set(layout) - {"button_states"})
    if extra:
        report.warnings.append(f"unexpected keys (ignored by the loaders): {', '.join(extra)}")
    lengths = {key: arrays[key].shape[0] if arrays[key].ndim else None for key in arrays}
    if len(set(lengths.values())) > 1:
        report.errors.append(f"keys have different numbers of rows: {lengths}")
    for key, (dtype, size) in layout.items():
        if key not in arrays:
            continue
        array = arrays[key]
        if array.dtype != dtype:
            report.errors.append(f"{key} has dtype {array.dtype}, expected {dtype}")
        if key == "terminals":
            if array.ndim != 1:
                report.errors.append(f"terminals has shape {array.shape}, expected (rows,)")
        elif array.ndim != 2 or (size is not None and array.shape[1] != size):
            expected = f"(rows, {size})" if size is not None else "(rows, features)"
            report.errors.append(f"{key} has shape {array.shape}, expected {expected}")


def _check_episodes(
    arrays: dict[str, np.ndarray], spec: DatasetSpec | None, report: VerificationReport
) -> None:
    terminals = arrays["terminals"].astype(bool)
    rows = terminals.shape[0]
    if rows == 0:
        report.errors.append("the file has no rows")
        return
    if not terminals[-1]:
        report.errors.append(
            "the last row is not a terminal: the file ends in the middle of an episode "
            "(truncated or partially written)"
        )
    ends = np.flatnonzero(terminals)
    lengths = np.diff(np.concatenate([[-1], ends]))
    if (lengths < 2).any():
        report.errors.append(
            f"{int((lengths < 2).sum())} episode(s) with fewer than 2 rows (no transition)"
        )
    report.summary.update(
        rows=rows,
        episodes=len(ends),
        transitions=int((lengths - 1).clip(min=0).sum()),
        episode_length={
            "min": int(lengths.min()) if len(lengths) else 0,
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            "max": int(lengths.max()) if len(lengths) else 0,
        },
    )
    if spec is not None and len(lengths) and (lengths != spec.episode_length).any():
        report.warnings.append(
            f"episode lengths {sorted(set(lengths.tolist()))[:5]} differ from the official "
            f"{spec.episode_length} (fine for small local datasets)"
        )


def _check_values(arrays: dict[str, np.ndarray], report: VerificationReport) -> None:
    for key, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating) or not array.size:
            continue
        if not np.isfinite(array).all():
            report.errors.append(f"{key} has {int((~np.isfinite(array)).sum())} non-finite values")
        elif (largest := float(np.abs(array).max())) > HUGE:
            report.warnings.append(
                f"{key} reaches {largest:.3g} in magnitude: float32 training overflows on "
                "values this large (their square exceeds 3.4e38) and diverges; rescale the data"
            )
    actions = arrays["actions"]
    outside = (actions < -1.0) | (actions > 1.0)
    if outside.any():
        report.errors.append(
            f"actions outside [-1, 1]: {int(outside.sum())} values, "
            f"range [{actions.min():.3g}, {actions.max():.3g}]"
        )


def _check_provenance(
    path: Path, arrays: dict[str, np.ndarray], report: VerificationReport
) -> None:
    try:
        record = read_provenance(path)
        source = record_source(record)
    except ValueError as error:
        report.summary["provenance"] = "damaged record"
        report.errors.append(str(error))
        return
    partial = interrupted_generation(path)
    if record is None and partial is not None:
        report.summary["provenance"] = "none: left by an interrupted generation"
        report.errors.append(
            f"no provenance record, and {partial} holds the episodes of an unfinished "
            "`sorl-data generate`: this file is its leftover, not an official download. Run "
            "the same `sorl-data generate` command again to finish it (it resumes from those "
            "episodes)"
        )
        return
    report.summary["provenance"] = describe_provenance(record)
    report.summary["source"] = source
    if record is None:
        return
    if partial is not None:
        report.warnings.append(
            f"{partial} holds an unfinished `sorl-data generate` of this dataset: finishing it "
            "replaces this file"
        )
    if record.get("sha256") != sha256_of(path):
        made = "downloaded" if source == "official" else "generated"
        report.errors.append(
            "the file does not match the sha256 in its provenance record "
            f"(modified or replaced after it was {made})"
        )
    rows = record.get("counts", {}).get("rows")
    if rows is not None and rows != arrays["terminals"].shape[0]:
        report.errors.append(
            f"provenance says {rows} rows, the file has {arrays['terminals'].shape[0]}"
        )


def _statistics(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for key in ("observations", "actions", "qpos", "qvel"):
        values = arrays[key].astype(np.float64)
        stats[key] = {
            "shape": list(arrays[key].shape),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    actions = arrays["actions"]
    stats["actions"]["fraction_at_bounds"] = float((np.abs(actions) >= 1.0).mean())
    stats["actions"]["per_dim_mean"] = [round(float(v), 4) for v in actions.mean(0)]
    stats["actions"]["per_dim_std"] = [round(float(v), 4) for v in actions.std(0)]
    return stats


def format_report(report: VerificationReport) -> str:
    """Human-readable text of a report (what ``sorl-data verify`` prints)."""
    status = "OK" if report.ok else "FAILED"
    lines = [f"{report.path}: {status} (checked as {report.dataset or 'unknown dataset'})"]
    lines += [f"  error: {message}" for message in report.errors]
    lines += [f"  warning: {message}" for message in report.warnings]
    summary = report.summary
    if "rows" in summary:
        length = summary["episode_length"]
        lines.append(
            f"  rows {summary['rows']}, episodes {summary['episodes']}, transitions "
            f"{summary['transitions']}, episode length min/mean/max "
            f"{length['min']}/{length['mean']:.1f}/{length['max']}"
        )
    if "provenance" in summary:
        lines.append(f"  provenance: {summary['provenance']}")
    for key in ("observations", "actions", "qpos", "qvel"):
        if key in summary:
            s = summary[key]
            lines.append(
                f"  {key:<12} shape {tuple(s['shape'])}  mean {s['mean']:+.4f}  std "
                f"{s['std']:.4f}  min {s['min']:+.4f}  max {s['max']:+.4f}"
            )
    if "actions" in summary:
        lines.append(f"  actions at +-1: {summary['actions']['fraction_at_bounds']:.2%}")
    return "\n".join(lines)
