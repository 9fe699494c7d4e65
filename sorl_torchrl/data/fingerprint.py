"""Content fingerprints of dataset files, hashed once and cached by size and modification time.

A training run names the data it was trained on by the SHA-256 of the dataset file. Hashing a
file of several GB on every start would cost seconds to minutes, so the digest is cached in a
small JSON file keyed by the file's resolved path, size and ``st_mtime_ns``, beside the memory-
mapped copy that :class:`~sorl_torchrl.data.OGBenchExperienceReplay` keeps
(``<root>/torchrl/<file name>.sha256.json``). A file that is rewritten gets another size or
modification time and is hashed again; this is the rule the memmap cache itself follows to
decide when to rebuild. The provenance record of a regenerated file also holds a SHA-256, but
it is not used here: it is written once and goes stale if the file is replaced (for instance
by an official download), while the cache key cannot. Where the cache dir is not writable the
digest is computed and simply not kept.

Examples:
    >>> import tempfile, hashlib, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny-v0.npz"
    >>> _ = path.write_bytes(b"rows")
    >>> fingerprint = file_fingerprint(path)
    >>> fingerprint.sha256 == hashlib.sha256(b"rows").hexdigest(), fingerprint.size_bytes
    (True, 4)
    >>> fingerprint.token == "sha256:" + fingerprint.sha256
    True
    >>> file_fingerprint(path).cached  # the second call reads the cache
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from sorl_torchrl._io import atomic_write_text
from sorl_torchrl.data.provenance import sha256_of

__all__ = ["FileFingerprint", "cache_path", "file_fingerprint"]

_CACHE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class FileFingerprint:
    """The content hash of one file and what it was computed from.

    Attributes:
        sha256: Hex SHA-256 of the file's bytes.
        size_bytes: File size.
        cached: Whether the digest was read from the cache rather than computed now.
    """

    sha256: str
    size_bytes: int
    cached: bool = False

    @property
    def token(self) -> str:
        """``"sha256:<hex>"``, the form stored in a run's identity."""
        return f"sha256:{self.sha256}"


def cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the digest of ``path`` is cached (default dir: ``<file dir>/torchrl``).

    Examples:
        >>> cache_path("/data/cube-single-play-v0.npz").as_posix()
        '/data/torchrl/cube-single-play-v0.npz.sha256.json'
    """
    path = Path(path)
    folder = Path(cache_dir) if cache_dir is not None else path.parent / "torchrl"
    return folder / f"{path.name}.sha256.json"


def file_fingerprint(
    path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> FileFingerprint:
    """The SHA-256 of a file, from the cache when its size and modification time still match.

    Args:
        path: The file to fingerprint.
        cache_dir: Dir of the cache file (default: ``<file dir>/torchrl``, beside the memmap
            copies of the datasets).

    Returns:
        The fingerprint; ``cached`` says whether the file was read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Cannot fingerprint {path}: no such file.")
    stat = path.stat()
    key = {
        "format": _CACHE_FORMAT,
        "file": str(path.resolve()),
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    cache = cache_path(path, cache_dir)
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and {k: stored.get(k) for k in key} == key:
        digest = stored.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return FileFingerprint(digest, stat.st_size, cached=True)
    digest = sha256_of(path)
    try:
        atomic_write_text(cache, json.dumps({**key, "sha256": digest}, indent=2) + "\n")
    except OSError:
        pass  # a read-only data dir: the digest is still right, only not kept
    return FileFingerprint(digest, stat.st_size)
