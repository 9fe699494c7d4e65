"""Provenance records: where a dataset file came from, official or regenerated.

A record ``<name>.provenance.json`` sits beside ``<name>.npz`` and gives the file's
*source*: ``"official"`` (downloaded from the OGBench server by ``sorl-data download``: the
URL and the UTC date) or ``"regenerated"`` (made by ``sorl-data generate``: settings, seed),
and its checksum, so a regenerated dataset is never mistaken for the official data. Records
written before sources existed were all written by ``sorl-data generate``: they count as
regenerated. A file without a record is of unknown origin (``"unknown"``): an official file
copied in by hand, or the leftover of an interrupted generation (``"unfinished"``), which
:func:`interrupted_generation` tells apart. :func:`file_source` says which of the four a
file is and :data:`ACCEPTED` which of them a requested source accepts.

Each source has its own default dir (:func:`default_dataset_dir`): official data lives in
OGBench's ``~/.ogbench/data``, regenerated data in ``~/.sorl_torchrl/regenerated`` (or
``$SORL_REGENERATED_DIR``), so OGBench, which reads no record, never finds regenerated data
under its official names.

Examples:
    >>> provenance_path("/data/cube-single-play-v0-val.npz").name
    'cube-single-play-v0-val.provenance.json'
    >>> record_source({"source": "official", "url": "https://host/x.npz"})
    'official'
    >>> record_source({"generator": "sorl-torchrl", "official": False})  # an older record
    'regenerated'
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from sorl_torchrl._io import atomic_write_text

__all__ = [
    "ACCEPTED",
    "GENERATOR_NAME",
    "REGENERATED_DIR_ENV",
    "SOURCES",
    "Source",
    "check_source_name",
    "default_dataset_dir",
    "describe_provenance",
    "file_source",
    "interrupted_generation",
    "provenance_path",
    "read_provenance",
    "record_source",
    "write_provenance",
    "sha256_of",
    "shard_dir",
    "library_versions",
]

GENERATOR_NAME = "sorl-torchrl"

Source = Literal["official", "regenerated"]
#: The sources a dataset file can be requested from.
SOURCES: tuple[str, ...] = ("official", "regenerated")
#: What each requested source accepts (:func:`file_source`'s values). A file without a
#: record is taken as official (official files are copied in by hand; the caller warns),
#: never as regenerated: ``sorl-data generate`` writes a record beside every file it makes.
ACCEPTED: dict[str, tuple[str, ...]] = {
    "official": ("official", "unknown"),
    "regenerated": ("regenerated",),
}
#: Environment variable naming the default dir of regenerated datasets.
REGENERATED_DIR_ENV = "SORL_REGENERATED_DIR"

_REGENERATED_NOTE = (
    "Regenerated locally with the scripted oracles shipped in the ogbench package; "
    "statistically equivalent to, but not the same bytes as, the official OGBench data."
)


def check_source_name(source: str) -> str:
    """``source`` if it is ``"official"`` or ``"regenerated"``.

    Raises:
        ValueError: Any other value; the message lists the allowed ones.

    Examples:
        >>> check_source_name("official")
        'official'
        >>> check_source_name("offical")
        Traceback (most recent call last):
        ...
        ValueError: Unknown data source 'offical': allowed 'official', 'regenerated'.
    """
    if source not in SOURCES:
        allowed = ", ".join(map(repr, SOURCES))
        raise ValueError(f"Unknown data source {source!r}: allowed {allowed}.")
    return source


def default_dataset_dir(source: str = "official") -> Path:
    """The default dir of ``source``'s datasets.

    Official data: OGBench's own ``~/.ogbench/data``, where ``ogbench.make_env_and_datasets``
    looks. Regenerated data: ``$SORL_REGENERATED_DIR``, else ``~/.sorl_torchrl/regenerated``;
    never OGBench's dir, since OGBench reads no provenance record.

    Examples:
        >>> default_dataset_dir().parts[-2:]
        ('.ogbench', 'data')
        >>> default_dataset_dir("regenerated") != default_dataset_dir("official")
        True
    """
    if check_source_name(source) == "official":
        return Path(os.path.expanduser("~/.ogbench/data"))
    configured = os.environ.get(REGENERATED_DIR_ENV)
    return Path(os.path.expanduser(configured or "~/.sorl_torchrl/regenerated"))


def provenance_path(dataset_path: str | os.PathLike) -> Path:
    """The provenance record that belongs to a dataset file."""
    path = Path(dataset_path)
    return path.with_name(path.name.removesuffix(".npz") + ".provenance.json")


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the packages that determine the generated bytes."""
    versions = {"python": platform.python_version()}
    for package in ("sorl-torchrl", "ogbench", "mujoco", "gymnasium", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def write_provenance(
    dataset_path: str | os.PathLike, record: dict[str, Any], *, source: Source = "regenerated"
) -> Path:
    """Write the provenance record of ``dataset_path`` (adds its source, checksum and size).

    Args:
        dataset_path: The dataset file the record describes.
        record: What made the file: for ``"regenerated"`` the generation settings and seed,
            for ``"official"`` at least ``url`` and ``downloaded`` (UTC, ISO 8601).
        source: ``"regenerated"`` or ``"official"``.

    Returns:
        The record's path (written atomically).

    Examples:
        >>> import tempfile, pathlib, json
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "scene-play-v0.npz"
        >>> _ = path.write_bytes(b"npz")
        >>> record = {"url": "https://host/scene-play-v0.npz", "downloaded": "2025-01-02T03:04:05Z"}
        >>> saved = json.loads(write_provenance(path, record, source="official").read_text())
        >>> saved["source"], saved["official"], saved["size_bytes"]
        ('official', True, 3)
        >>> describe_provenance(saved)
        'official, downloaded on 2025-01-02T03:04:05Z from https://host/scene-play-v0.npz'
    """
    dataset_path = Path(dataset_path)
    if check_source_name(source) == "official":
        base: dict[str, Any] = {
            "official": True,
            "note": (
                f"Official OGBench data, downloaded on {record.get('downloaded')} from "
                f"{record.get('url')}."
            ),
        }
    else:
        base = {"generator": GENERATOR_NAME, "official": False, "note": _REGENERATED_NOTE}
    full = {
        **base,
        "source": source,
        "file": dataset_path.name,
        "sha256": sha256_of(dataset_path),
        "size_bytes": dataset_path.stat().st_size,
        **record,
        "versions": library_versions(),
    }
    path = provenance_path(dataset_path)
    atomic_write_text(path, json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def read_provenance(dataset_path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record of a dataset file, or ``None`` if it has none.

    A file without a record is of unknown origin: an official file copied in by hand has
    none, and neither has a file that an interrupted ``sorl-data generate`` left behind (see
    :func:`interrupted_generation`).

    Raises:
        ValueError: The record exists but cannot be read or is not a JSON object; the
            message names it and what to do.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "scene-play-v0.npz"
        >>> read_provenance(path) is None
        True
        >>> _ = provenance_path(path).write_text('{"generator": "sorl-t')
        >>> read_provenance(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: The provenance record .../scene-play-v0.provenance.json cannot be read ...
    """
    path = provenance_path(dataset_path)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(_damaged(path, f"{type(err).__name__}: {err}")) from err
    if not isinstance(record, dict):
        raise ValueError(_damaged(path, f"a JSON {type(record).__name__}, not an object"))
    return record


def record_source(record: dict[str, Any] | None) -> str:
    """The source a record states: ``"official"``, ``"regenerated"`` or ``"unknown"`` (none).

    A record without ``source`` was written by an earlier ``sorl-data generate``:
    regenerated.

    Raises:
        ValueError: The record names a source other than the two known ones.

    Examples:
        >>> record_source(None), record_source({"source": "regenerated", "seed": 0})
        ('unknown', 'regenerated')
    """
    if record is None:
        return "unknown"
    if "source" not in record:
        return "regenerated" if record.get("official") is not True else "official"
    source = record["source"]
    if source not in SOURCES:
        raise ValueError(
            f"The provenance record of {record.get('file', 'this file')} names the source "
            f"{source!r}, not one of {', '.join(map(repr, SOURCES))}: it is damaged or was "
            "edited. Download or regenerate the dataset again."
        )
    return source


def file_source(dataset_path: str | os.PathLike) -> str:
    """The source of a dataset file, from its record and what lies beside it.

    Returns:
        ``"official"`` or ``"regenerated"`` (its record says so), ``"unknown"`` (no record:
        e.g. an official file copied in by hand) or ``"unfinished"`` (no record, and the
        shard dir of an unfinished ``sorl-data generate`` beside it: that run's leftover).

    Raises:
        ValueError: The record is damaged (see :func:`read_provenance`).

    Examples:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> file_source(root / "scene-play-v0.npz")
        'unknown'
        >>> (root / "scene-play-v0.partial").mkdir()
        >>> file_source(root / "scene-play-v0.npz")
        'unfinished'
    """
    record = read_provenance(dataset_path)
    if record is None and interrupted_generation(dataset_path) is not None:
        return "unfinished"
    return record_source(record)


def describe_provenance(record: dict[str, Any] | None) -> str:
    """One line on where a file came from (what ``sorl-data verify`` prints).

    Examples:
        >>> describe_provenance({"generator": "sorl-torchrl", "generator_version": "0.1.0",
        ...                      "seed": 3, "created": "2025-01-02T03:04:05+0000"})
        'regenerated by sorl-torchrl 0.1.0, seed 3, on 2025-01-02T03:04:05+0000'
        >>> describe_provenance(None)  # doctest: +ELLIPSIS
        'none: unknown origin (...)'
    """
    source = record_source(record)
    if record is None:
        return (
            "none: unknown origin (`sorl-data download` and `sorl-data generate` write a "
            "record beside every file they make; an official file copied in by hand has none)"
        )
    if source == "official":
        return f"official, downloaded on {record.get('downloaded')} from {record.get('url')}"
    text = (
        f"regenerated by {record.get('generator')} {record.get('generator_version')}, "
        f"seed {record.get('seed')}"
    )
    return text + (f", on {record['created']}" if record.get("created") else "")


def _damaged(path: Path, why: str) -> str:
    dataset = path.name.removesuffix(".provenance.json").removesuffix("-val")
    return (
        f"The provenance record {path} cannot be read ({why}): it is damaged. Download the "
        f"dataset again with `sorl-data download {dataset} --overwrite`, or regenerate it with "
        f"`sorl-data generate {dataset} --overwrite` (and its settings)."
    )


def shard_dir(dataset_path: str | os.PathLike) -> Path:
    """Where ``sorl-data generate`` keeps the episodes of this file's dataset until it is done.

    ``<name>.partial`` beside ``<name>.npz`` and ``<name>-val.npz``; removed as the
    generation's last step.

    Examples:
        >>> shard_dir("/data/scene-play-v0-val.npz").as_posix()
        '/data/scene-play-v0.partial'
    """
    path = Path(dataset_path)
    return path.with_name(path.name.removesuffix(".npz").removesuffix("-val") + ".partial")


def interrupted_generation(dataset_path: str | os.PathLike) -> Path | None:
    """The :func:`shard_dir` of this file's dataset if it exists: a generation not finished.

    Examples:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "scene-play-v0.partial").mkdir()
        >>> interrupted_generation(root / "scene-play-v0-val.npz").name
        'scene-play-v0.partial'
        >>> interrupted_generation(root / "cube-single-play-v0.npz") is None
        True
    """
    partial = shard_dir(dataset_path)
    return partial if partial.is_dir() else None
