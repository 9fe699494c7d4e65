"""Atomic file writes: a temporary file in the same dir, flushed to disk, then renamed."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text", "default_file_mode"]


def default_file_mode() -> int:
    """The mode a plainly created file gets (``0o666`` minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one rename.

    If the block raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed (or left as a hidden ``.tmp`` file after a hard kill).

    Args:
        path: destination file; its dir is created if needed.
        mode: ``"wb"`` or ``"w"``.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_write(target, "w") as handle:
        ...     _ = handle.write("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def atomic_save_png(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Render a matplotlib ``figure`` to the PNG ``path`` atomically; returns the path.

    The image is rendered in memory first, so a failed render leaves no file behind.

    Examples:
        >>> import tempfile
        >>> from matplotlib.figure import Figure
        >>> target = atomic_save_png(Figure(), Path(tempfile.mkdtemp()) / "empty.png")
        >>> target.read_bytes()[1:4]
        b'PNG'
    """
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path
