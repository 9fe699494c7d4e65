"""Download official OGBench datasets: verified, with a provenance record, never half a file.

:func:`download_dataset` fetches ``<name>.npz`` and ``<name>-val.npz`` with OGBench's own
downloader (``ogbench.utils.download_datasets``, which reads ``ogbench.utils.DATASET_URL``
and shows a progress bar) into a private staging dir ``<out>/.<name>.download/``, so that its
rule of skipping files that exist never sees the final files. Before the transfer a ``HEAD``
request per file checks that the server has it (a 404 is an error naming the URL) and that
the disk has room for it. After the transfer each file is checked: its size against the
server's ``Content-Length`` (a connection closed mid-transfer), its first bytes (an HTML page
instead of an ``.npz``), then in full by :func:`~sorl_torchrl.data.verify.verify_dataset_file`;
a provenance record (source ``official``, the URL, the UTC date) is written beside it, and
file and record are renamed into place. The staging dir is removed whatever happens; one
left by a hard kill is removed by the next run, which starts the transfer afresh. So a file
under a final name is always a complete, verified download (or what was there before).
Downloads into one dir take turns (a lock on the dir), so parallel runs of a sweep that
all download the same dataset fetch it once.

The server is ``url=`` if given, else ``$SORL_OGBENCH_URL``, else ``ogbench.utils.DATASET_URL``
(the official one).

Examples:
    >>> download_command("antsoccer-arena-navigate-v0")
    'sorl-data download antsoccer-arena-navigate-v0'
    >>> download_command("scene-play-v0", "/data")
    'sorl-data download scene-play-v0 --out-dir /data'
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.client
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from sorl_torchrl._cli import UserError
from sorl_torchrl.data.provenance import (
    GENERATOR_NAME,
    default_dataset_dir,
    describe_provenance,
    file_source,
    library_versions,
    provenance_path,
    read_provenance,
    write_provenance,
)
from sorl_torchrl.data.specs import get_dataset_spec
from sorl_torchrl.data.verify import VerificationReport, verify_dataset_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: downloads then do not take turns
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "URL_ENV",
    "DownloadError",
    "DownloadResult",
    "dataset_url",
    "download_command",
    "download_dataset",
    "staging_dir",
]

#: Environment variable that points the downloads at another server (a mirror).
URL_ENV = "SORL_OGBENCH_URL"
#: Free space kept beyond the files' sizes.
_SPACE_MARGIN = 16 << 20


class DownloadError(UserError):
    """A download that could not be completed; the message names the file and the fix."""


@dataclasses.dataclass
class DownloadResult:
    """What :func:`download_dataset` did.

    Attributes:
        dataset: The dataset name.
        url: The server the files came from (or would have).
        files: The train and val files, in place.
        downloaded: The files this call downloaded (the others were already there).
        reports: The verification reports of the downloaded files.
    """

    dataset: str
    url: str
    files: list[Path]
    downloaded: list[Path]
    reports: list[VerificationReport]


def dataset_url(url: str | None = None) -> str:
    """The server to download from: ``url``, else ``$SORL_OGBENCH_URL``, else OGBench's own.

    Examples:
        >>> dataset_url("http://127.0.0.1:8000/ogbench/")
        'http://127.0.0.1:8000/ogbench'
    """
    if not url:
        url = os.environ.get(URL_ENV) or _official_url()
    return url.rstrip("/")


def _official_url() -> str:
    import ogbench.utils

    return ogbench.utils.DATASET_URL


def download_command(name: str, out_dir: str | os.PathLike | None = None) -> str:
    """The CLI command that downloads dataset ``name`` into ``out_dir`` (for messages)."""
    command = f"sorl-data download {name}"
    if out_dir is not None and Path(out_dir).expanduser() != default_dataset_dir("official"):
        command += f" --out-dir {out_dir}"
    return command


def staging_dir(out_dir: str | os.PathLike, name: str) -> Path:
    """Where a download of dataset ``name`` into ``out_dir`` puts its files until they pass.

    >>> staging_dir("/data", "scene-play-v0").as_posix()
    '/data/.scene-play-v0.download'
    """
    return Path(out_dir) / f".{name}.download"


def download_dataset(
    name: str,
    out_dir: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> DownloadResult:
    """Download the official ``<name>.npz`` and ``<name>-val.npz`` into ``out_dir``.

    Files already there that are official (by their record) or of unknown origin (no
    record: official files copied in by hand) are kept; only the missing ones are fetched.

    Args:
        name: Dataset name, e.g. ``"antmaze-large-navigate-v0"`` (any of ``sorl-data list``).
        out_dir: Target dir (default: OGBench's ``~/.ogbench/data``).
        url: The server (default: ``$SORL_OGBENCH_URL``, else ``ogbench.utils.DATASET_URL``).
        overwrite: Download the files even if they exist, replacing them.
        progress: Show OGBench's progress bar.
        timeout: Seconds without data after which the transfer is given up.

    Returns:
        The files, those downloaded now and their verification reports.

    Raises:
        ValueError: Unknown dataset name (the message lists the known ones).
        DownloadError: The dir cannot be written or is too small, the server lacks the file
            or cannot be reached, the transfer broke off, the file is not a valid dataset
            (an HTML page, truncated), or a regenerated file sits under the official name.
    """
    spec = get_dataset_spec(name)
    out = _writable_dir(default_dataset_dir("official") if out_dir is None else out_dir)
    base = dataset_url(url)
    finals = [out / f"{spec.name}.npz", out / f"{spec.name}-val.npz"]
    with _turn(out):
        wanted = [path for path in finals if not _keep(path, overwrite)]
        if not wanted:
            return DownloadResult(spec.name, base, finals, [], [])
        staging = staging_dir(out, spec.name)
        if staging.exists():
            print(f"Removing {staging}, left by an interrupted download.", file=sys.stderr)
            shutil.rmtree(staging)
        sizes = {path.name: _probe(f"{base}/{path.name}", timeout) for path in wanted}
        _check_space(out, sum(size or 0 for size in sizes.values()), wanted)
        try:
            staging.mkdir()
            reports = [
                _fetch(spec.name, path, staging, base, sizes[path.name], progress, timeout)
                for path in wanted
            ]
            for path, report in zip(wanted, reports, strict=True):
                os.replace(staging / path.name, path)  # a stale record now fails its sha256
                os.replace(provenance_path(staging / path.name), provenance_path(path))
                report.path = path
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return DownloadResult(spec.name, base, finals, wanted, reports)


def _writable_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise DownloadError(
            f"Cannot write the dataset dir {out} ({error.strerror or error}): choose a "
            "writable dir with --out-dir DIR (data.root=DIR in the recipes), or fix its "
            "permissions."
        ) from error
    return out


@contextlib.contextmanager
def _turn(out: Path) -> Iterator[None]:
    """Hold the download lock of ``out`` (released by the system if the process dies)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    handle = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another download into {out} to finish...", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _keep(path: Path, overwrite: bool) -> bool:
    """Whether an existing ``path`` stays (official or unknown); refuse regenerated data."""
    if not path.exists() or overwrite:
        return False
    try:
        source = file_source(path)
    except ValueError as error:
        raise DownloadError(f"{error} Or pass --overwrite to download it again.") from error
    if source in ("official", "unknown"):
        return True
    found = (
        describe_provenance(read_provenance(path))
        if source == "regenerated"
        else "the leftover of an unfinished `sorl-data generate`"
    )
    raise DownloadError(
        f"{path} holds regenerated data under the official name ({found}). Move it and its "
        f"provenance record to {default_dataset_dir('regenerated')} (the regenerated-data dir) "
        "to keep it, or pass --overwrite to replace it with the official file."
    )


def _probe(file_url: str, timeout: float) -> int | None:
    """The size the server gives for ``file_url`` (``None``: not given); errors if absent."""
    request = urllib.request.Request(file_url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
    except urllib.error.HTTPError as error:
        if error.code in (405, 501):  # no HEAD here: the transfer will tell
            return None
        raise _http_error(file_url, error) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"Cannot reach {file_url} ({reason}). Check the network connection and the "
            f"server URL (--url or ${URL_ENV}; the official server is {_official_url()})."
        ) from error
    return int(length) if length and length.isdigit() else None


def _http_error(file_url: str, error: urllib.error.HTTPError) -> DownloadError:
    if error.code == 404:
        return DownloadError(
            f"{file_url} does not exist on the server (HTTP 404 Not Found). Check the dataset "
            "name (`sorl-data list` shows the known ones) and the server URL (--url or "
            f"${URL_ENV}; the official server is {_official_url()})."
        )
    return DownloadError(
        f"The server refused {file_url} (HTTP {error.code} {error.reason}). Check the server "
        f"URL (--url or ${URL_ENV}; the official server is {_official_url()}), or try again "
        "later."
    )


def _check_space(out: Path, needed: int, files: list[Path]) -> None:
    free = shutil.disk_usage(out).free
    if needed and free < needed + _SPACE_MARGIN:
        names = " and ".join(path.name for path in files)
        raise DownloadError(
            f"Not enough disk space in {out} for {names}: they need {needed / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free. Free some space, or download into a dir on another "
            "disk with --out-dir DIR (data.root=DIR in the recipes)."
        )


class _SilentTqdm(tqdm):
    """OGBench's progress bar, switched off."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def _ogbench_downloader(url: str, progress: bool, timeout: float) -> Iterator:
    """``ogbench.utils.download_datasets`` reading ``url``, with a timeout on its socket."""
    import ogbench.utils as utils

    saved = utils.DATASET_URL, utils.tqdm, socket.getdefaulttimeout()
    utils.DATASET_URL = url
    if not progress:
        utils.tqdm = _SilentTqdm
    socket.setdefaulttimeout(timeout)
    try:
        yield utils.download_datasets
    finally:
        utils.DATASET_URL, utils.tqdm = saved[:2]
        socket.setdefaulttimeout(saved[2])


def _fetch(
    name: str,
    final: Path,
    staging: Path,
    base: str,
    expected: int | None,
    progress: bool,
    timeout: float,
) -> VerificationReport:
    """Download one file into ``staging``, check it, record it; the report of its checks."""
    file_url = f"{base}/{final.name}"
    staged = staging / final.name
    pair = [staging / f"{name}.npz", staging / f"{name}-val.npz"]
    placeholders = [path for path in pair if path != staged and not path.exists()]
    for path in placeholders:  # OGBench's downloader skips files that exist
        path.touch()
    again = "Nothing was kept; run the same command again to start the download afresh."
    try:
        with _ogbench_downloader(base, progress, timeout) as download:
            download([name], str(staging))
    except urllib.error.HTTPError as error:
        raise _http_error(file_url, error) from error
    except TimeoutError as error:
        raise DownloadError(
            f"The transfer of {file_url} stalled: no data for {timeout:g} s. {again}"
        ) from error
    except urllib.error.URLError as error:
        raise DownloadError(f"Cannot reach {file_url} ({error.reason}). {again}") from error
    except (http.client.HTTPException, ConnectionError) as error:
        raise DownloadError(
            f"The transfer of {file_url} broke off ({type(error).__name__}: {error}): the "
            f"connection was closed mid-transfer. {again}"
        ) from error
    except OSError as error:
        raise DownloadError(
            f"Cannot write {staged} ({error.strerror or error}) while downloading {file_url}; "
            "if the disk is full, free some space or use --out-dir DIR on another disk. "
            f"{again}"
        ) from error
    finally:
        for path in placeholders:
            path.unlink(missing_ok=True)
    size = staged.stat().st_size
    if expected is not None and size != expected:
        raise DownloadError(
            f"The transfer of {file_url} ended early: {size} of {expected} bytes arrived (the "
            f"server closed the connection mid-transfer). {again}"
        )
    _check_is_npz(staged, file_url)
    write_provenance(
        staged,
        {
            "dataset": name,
            "split": "val" if final.name.endswith("-val.npz") else "train",
            "url": file_url,
            "downloaded": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "downloader": "ogbench.utils.download_datasets",
            "downloaded_by": f"{GENERATOR_NAME} {library_versions()['sorl-torchrl']}",
        },
        source="official",
    )
    report = verify_dataset_file(staged, dataset_name=name)
    if not report.ok:
        raise DownloadError(
            f"The file downloaded from {file_url} is not a valid {name} file, so it was not "
            f"kept: {'; '.join(report.errors)}. A rerun starts the download afresh; if it "
            "fails again, the server holds a damaged or different file: check the server URL "
            f"(--url or ${URL_ENV}; the official server is {_official_url()})."
        )
    return report


def _check_is_npz(path: Path, file_url: str) -> None:
    """An ``.npz`` is a zip archive: anything else (an HTML page) is named as what it is."""
    with open(path, "rb") as file:
        head = file.read(512)
    if head.startswith(b"PK"):
        return
    fix = (
        "Check the server URL (--url or "
        f"${URL_ENV}; the official server is {_official_url()}): it must point at the dir "
        "that holds the .npz files."
    )
    if b"<html" in head.lower() or head.lstrip().startswith(b"<"):
        raise DownloadError(
            f"{file_url} sent an HTML page, not an .npz file (it begins {head[:40]!r}): the "
            f"URL leads to a web page (an error, login or index page). {fix}"
        )
    raise DownloadError(
        f"{file_url} sent something that is not an .npz file (it begins {head[:16]!r}). {fix}"
    )
