"""`sorl-data download` against a local server: official files, verified, recorded, never half.

The server (``http_helpers.DatasetServer``, 127.0.0.1 only) serves small files in the
official format; OGBench's own downloader fetches them, pointed at it through
``ogbench.utils.DATASET_URL``.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import ogbench.utils
import pytest
from data_helpers import write_official_format
from http_helpers import DatasetServer

from sorl_torchrl.data import (
    DownloadError,
    OGBenchExperienceReplay,
    download_dataset,
    generate_dataset,
    get_dataset_spec,
    verify_dataset_file,
)
from sorl_torchrl.data import download as download_module
from sorl_torchrl.data.cli import main
from sorl_torchrl.data.download import URL_ENV, staging_dir
from sorl_torchrl.data.provenance import provenance_path, read_provenance

NAME = "antmaze-large-navigate-v0"  # download only: collected by a trained expert
FILES = (f"{NAME}.npz", f"{NAME}-val.npz")
REPO = Path(__file__).resolve().parents[2]
OFFICIAL_URL = ogbench.utils.DATASET_URL


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """The dir the server serves: the two files of NAME, in the official format."""
    root = tmp_path_factory.mktemp("server")
    write_official_format(get_dataset_spec(NAME), root, episodes=3, length=40)
    return root


@pytest.fixture
def server(served):
    with DatasetServer(served) as running:
        yield running


def _everything_in(out: Path) -> list[str]:
    """Every entry of ``out``, hidden ones included."""
    return sorted(path.name for path in out.iterdir()) if out.exists() else []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- a download


def test_download_gives_the_served_bytes_verified_and_recorded_as_official(
    server, served, tmp_path
):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    result = download_dataset(NAME, tmp_path, url=server.url(), progress=False)
    assert result.downloaded == [tmp_path / name for name in FILES] == result.files
    assert sorted(server.gets()) == sorted(f"/ok/{name}" for name in FILES)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (served / name).read_bytes()
        record = json.loads(provenance_path(tmp_path / name).read_text())
        assert record["source"] == "official" and record["official"] is True
        assert record["url"] == f"{server.url()}/{name}"
        assert record["sha256"] == _sha256(served / name)
        downloaded = datetime.datetime.strptime(record["downloaded"], "%Y-%m-%dT%H:%M:%S%z")
        assert before <= downloaded <= datetime.datetime.now(datetime.timezone.utc)
        assert record["split"] == ("val" if name.endswith("-val.npz") else "train")
        report = verify_dataset_file(tmp_path / name)
        assert report.ok, report.errors
        expected = f"official, downloaded on {record['downloaded']} from {record['url']}"
        assert report.summary["provenance"] == expected
    assert [report.path for report in result.reports] == result.files
    assert _everything_in(tmp_path) == sorted(
        [*FILES, f"{NAME}.provenance.json", f"{NAME}-val.provenance.json"]
    )
    assert ogbench.utils.DATASET_URL == OFFICIAL_URL  # put back after the call
    assert socket.getdefaulttimeout() is None
    data = OGBenchExperienceReplay("antmaze-large-navigate-singletask-v0", root=tmp_path)
    assert data.provenance["source"] == "official"
    assert data.provenance["url"] == f"{server.url()}/{NAME}.npz"


def test_the_cli_prints_the_reports_and_a_rerun_downloads_nothing(server, tmp_path, capsys):
    args = ["download", NAME, "--out-dir", str(tmp_path), "--url", server.url(), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for name in FILES:
        assert f"{tmp_path / name}: OK (checked as {NAME})" in out
        assert f"from {server.url()}/{name}\n" in out
    assert out.count("  provenance: official, downloaded on ") == 2
    gets = len(server.gets())
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already present (official, downloaded on") == 2
    assert len(server.gets()) == gets


def test_the_server_url_comes_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv(URL_ENV, server.url())
    download_dataset(NAME, tmp_path, progress=False)
    assert read_provenance(tmp_path / f"{NAME}.npz")["url"] == f"{server.url()}/{NAME}.npz"


def test_the_default_dir_is_ogbenchs_own(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    result = download_dataset(NAME, url=server.url(), progress=False)
    assert result.files[0] == tmp_path / ".ogbench" / "data" / f"{NAME}.npz"
    assert result.files[0].exists()


def test_only_the_missing_file_is_fetched_and_a_hand_copied_one_is_kept(server, served, tmp_path):
    shutil.copy(served / FILES[0], tmp_path)  # official bytes, copied in by hand: no record
    result = download_dataset(NAME, tmp_path, url=server.url(), progress=False)
    assert result.downloaded == [tmp_path / FILES[1]]
    assert server.gets() == [f"/ok/{FILES[1]}"]
    assert read_provenance(tmp_path / FILES[0]) is None


def test_regenerated_data_under_the_official_name_is_refused_unless_overwritten(
    server, served, tmp_path
):
    name = "pointmaze-medium-navigate-v0"
    generate_dataset(name, out_dir=tmp_path, num_episodes=2, episode_length=20, progress=False)
    regenerated = (tmp_path / f"{name}.npz").read_bytes()
    shutil.copy(tmp_path / f"{name}.npz", served / f"{name}.npz")
    shutil.copy(tmp_path / f"{name}-val.npz", served / f"{name}-val.npz")
    try:
        with pytest.raises(DownloadError, match="holds regenerated data under the official name"):
            download_dataset(name, tmp_path, url=server.url(), progress=False)
        assert (tmp_path / f"{name}.npz").read_bytes() == regenerated
        assert server.gets() == []
        download_dataset(name, tmp_path, url=server.url(), overwrite=True, progress=False)
    finally:
        for suffix in (".npz", "-val.npz"):
            (served / f"{name}{suffix}").unlink()
    assert read_provenance(tmp_path / f"{name}.npz")["source"] == "official"
    assert verify_dataset_file(tmp_path / f"{name}.npz").ok


# --------------------------------------------------------------------------- bad input


def test_an_unknown_name_downloads_nothing(server, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["download", NAME, "cube-sextuple-play-v0", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Unknown dataset 'cube-sextuple-play-v0'" in err and "Traceback" not in err
    assert not out.exists() and server.requests == []


def test_a_404_names_the_url_and_leaves_nothing(server, tmp_path, capsys):
    name = "humanoidmaze-large-navigate-v0"  # known, but not on this server
    url = server.url()
    assert main(["download", name, "--out-dir", str(tmp_path), "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"{url}/{name}.npz does not exist on the server (HTTP 404 Not Found)" in err
    assert "sorl-data list" in err and _everything_in(tmp_path) == []


@pytest.mark.parametrize(
    "mode, message",
    [
        ("close", "ended early: .* of .* bytes arrived"),
        ("nolength", f"not a valid {NAME} file, so it was not kept: cannot read .*truncated"),
        ("truncated", f"not a valid {NAME} file, so it was not kept: cannot read .*truncated"),
        ("html", "sent an HTML page, not an .npz file"),
    ],
)
def test_a_broken_transfer_is_an_error_that_leaves_no_file(server, tmp_path, mode, message):
    with pytest.raises(DownloadError, match=message) as error:
        download_dataset(NAME, tmp_path, url=server.url(mode), progress=False)
    assert f"{server.url(mode)}/{FILES[0]}" in str(error.value)
    assert _everything_in(tmp_path) == []  # no final file, no record, no staging dir


def test_an_unreachable_server(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(DownloadError, match=f"Cannot reach http://127.0.0.1:{port}/x/{NAME}.npz"):
        download_dataset(NAME, tmp_path, url=f"http://127.0.0.1:{port}/x", progress=False)
    assert _everything_in(tmp_path) == []


def test_a_dir_that_cannot_be_written(server, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "data"
    assert main(["download", NAME, "--out-dir", str(out), "--url", server.url()]) == 2
    err = capsys.readouterr().err
    assert f"Cannot write the dataset dir {out}" in err and "--out-dir DIR" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only dirs")
def test_a_read_only_dir(server, tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(DownloadError, match="Cannot write the dataset dir"):
            download_dataset(NAME, tmp_path, url=server.url(), progress=False)
    finally:
        tmp_path.chmod(0o755)


def test_a_disk_too_small_is_refused_before_the_transfer(server, served, tmp_path, monkeypatch):
    needed = sum((served / name).stat().st_size for name in FILES)
    usage = shutil.disk_usage(tmp_path)._replace(free=needed)  # no room for the margin
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(DownloadError, match=f"Not enough disk space in {tmp_path} for") as error:
        download_dataset(NAME, tmp_path, url=server.url(), progress=False)
    assert f"{needed / 1e6:.1f} MB" in str(error.value)
    assert server.gets() == [] and _everything_in(tmp_path) == []


def test_a_disk_that_fills_up_mid_transfer(server, tmp_path, monkeypatch):
    def full(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ogbench.utils, "open", full, raising=False)  # the downloader's open
    with pytest.raises(DownloadError, match="No space left on device") as error:
        download_dataset(NAME, tmp_path, url=server.url(), progress=False)
    assert "free some space" in str(error.value)
    assert _everything_in(tmp_path) == []


# --------------------------------------------------------------------------- interrupted


def test_a_killed_transfer_leaves_no_final_file_and_the_rerun_starts_afresh(
    server, served, tmp_path
):
    staging = staging_dir(tmp_path, NAME)
    partial = staging / f"{FILES[0]}.tmp"  # where OGBench's downloader writes
    command = [sys.executable, "-m", "sorl_torchrl.data.cli", "download", NAME]
    command += ["--out-dir", str(tmp_path), "--url", server.url("stall"), "--no-progress"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.stat().st_size) and process.poll() is None:
            assert time.monotonic() < deadline, "the transfer never started"
            time.sleep(0.05)
        assert process.poll() is None, "the download ended instead of stalling"
    finally:
        process.kill()
        process.wait()
    server.release()
    assert _everything_in(tmp_path) == [staging.name]  # no final name, only the staging dir
    assert 0 < partial.stat().st_size < (served / FILES[0]).stat().st_size

    done = subprocess.run(
        [*command[:-3], "--url", server.url(), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"Removing {staging}, left by an interrupted download." in done.stderr
    assert not staging.exists()
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (served / name).read_bytes()
        assert verify_dataset_file(tmp_path / name).ok
