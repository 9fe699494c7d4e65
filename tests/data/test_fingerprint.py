"""Dataset fingerprints: the file's SHA-256, hashed once and cached by size and mtime."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from sorl_torchrl.data.fingerprint import cache_path, file_fingerprint


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "tiny-play-v0.npz"
    path.write_bytes(b"0123456789" * 1000)
    return path


def test_the_digest_is_the_files_sha256(data_file):
    fingerprint = file_fingerprint(data_file)
    assert fingerprint.sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert fingerprint.size_bytes == 10_000 and not fingerprint.cached
    assert fingerprint.token == f"sha256:{fingerprint.sha256}"
    stored = json.loads(
        (data_file.parent / "torchrl" / f"{data_file.name}.sha256.json").read_text()
    )
    assert stored["sha256"] == fingerprint.sha256 and stored["size_bytes"] == 10_000


def test_a_second_start_reads_the_cache_not_the_file(data_file):
    file_fingerprint(data_file)
    cache = cache_path(data_file)
    stored = json.loads(cache.read_text())
    stored["sha256"] = "f" * 64  # only a cache read can return this value
    cache.write_text(json.dumps(stored))
    again = file_fingerprint(data_file)
    assert again.cached and again.sha256 == "f" * 64


@pytest.mark.parametrize("change", ["content", "mtime"])
def test_a_rewritten_file_is_hashed_again(data_file, change):
    first = file_fingerprint(data_file)
    stat = data_file.stat()
    if change == "content":
        data_file.write_bytes(b"other bytes")
    else:  # same bytes, another modification time: hashed again, same digest
        os.utime(data_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = file_fingerprint(data_file)
    assert not second.cached
    assert second.sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert (second.sha256 == first.sha256) == (change == "mtime")
    assert file_fingerprint(data_file).cached


def test_an_unwritable_cache_dir_still_gives_the_digest(data_file, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    fingerprint = file_fingerprint(data_file, cache_dir=blocker / "cache")
    assert fingerprint.sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert not file_fingerprint(data_file, cache_dir=blocker / "cache").cached


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        file_fingerprint(tmp_path / "absent.npz")
