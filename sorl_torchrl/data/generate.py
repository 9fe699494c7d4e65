"""Generate OGBench datasets locally, in the official on-disk format.

Episodes are collected by :class:`~sorl_torchrl.data.collect.EpisodeCollector` (one per
worker process) and saved as one shard per episode in ``<out_dir>/<name>.partial/``. When
all shards exist they are merged into ``<name>.npz`` (training episodes) and
``<name>-val.npz`` (validation episodes), each written atomically and accompanied by a
provenance record; the shard dir is removed last, so while it exists the files beside it
are the unfinished output of a generation, whatever they hold. The default dir is the
regenerated-data dir (``~/.sorl_torchrl/regenerated``, see
:func:`~sorl_torchrl.data.provenance.default_dataset_dir`); OGBench's own ``~/.ogbench/data``
is refused, since OGBench reads no provenance record and would take the files for the
official ones. An interrupted run picks up the shards already written; since every episode
is seeded by ``(seed, episode_index)``, the result does not depend on interruptions or on the
number of workers: same seed, same bytes.

Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = generate_dataset("pointmaze-medium-navigate-v0", out_dir=tmp,
    ...                               num_episodes=2, episode_length=10, progress=False)
    ...     print(result.train_path.name, result.num_train_rows, result.num_val_rows)
    pointmaze-medium-navigate-v0.npz 20 10
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sorl_torchrl._io import atomic_write, atomic_write_text
from sorl_torchrl.data.collect import EpisodeCollector
from sorl_torchrl.data.download import download_command
from sorl_torchrl.data.provenance import (
    GENERATOR_NAME,
    default_dataset_dir,
    library_versions,
    provenance_path,
    shard_dir,
    write_provenance,
)
from sorl_torchrl.data.specs import DatasetSpec, get_dataset_spec

__all__ = [
    "GenerationResult",
    "default_dataset_dir",
    "generate_dataset",
    "generate_command",
    "obtain_instructions",
    "save_npz_atomic",
]

KEY_ORDER = ("observations", "actions", "terminals", "qpos", "qvel", "button_states")
_MANIFEST = "manifest.json"


def generate_command(name: str, out_dir: str | os.PathLike | None = None) -> str:
    """The CLI command that generates dataset ``name`` (used in error messages).

    >>> generate_command("cube-single-play-v0", "/data")
    'sorl-data generate cube-single-play-v0 --out-dir /data'
    """
    command = f"sorl-data generate {name}"
    if out_dir is not None and Path(out_dir).expanduser() != default_dataset_dir("regenerated"):
        command += f" --out-dir {out_dir}"
    return command


def obtain_instructions(
    name: str, out_dir: str | os.PathLike | None = None, source: str | None = None
) -> str:
    """How to get the files of dataset ``name`` into ``out_dir`` (used in error messages).

    Args:
        name: Dataset name.
        out_dir: Where the files are wanted (``None``: the source's default dir).
        source: ``"official"`` (download), ``"regenerated"`` (generate) or ``None`` (either
            way the dataset has).

    >>> print(obtain_instructions("pointmaze-large-navigate-v0", "/data"))
    generate them with: sorl-data generate pointmaze-large-navigate-v0 --out-dir /data, or
    download the official files with: sorl-data download pointmaze-large-navigate-v0
    --out-dir /data
    >>> print(obtain_instructions("antmaze-large-navigate-v0", "/data"))
    download the official files with: sorl-data download antmaze-large-navigate-v0
    --out-dir /data (this dataset needs a trained expert and cannot be generated here)
    """
    spec = get_dataset_spec(name)
    download = f"download the official files with: {download_command(spec.name, out_dir)}"
    if spec.load_only:
        return f"{download} (this dataset needs a trained expert and cannot be generated here)"
    generate = f"generate them with: {generate_command(spec.name, out_dir)}"
    if source == "official":
        return download
    if source == "regenerated":
        return generate
    return f"{generate}, or {download}"


@dataclasses.dataclass
class GenerationResult:
    """What :func:`generate_dataset` produced.

    Attributes:
        train_path: The training file.
        val_path: The validation file.
        num_train_rows: Rows (env steps) in the training file.
        num_val_rows: Rows in the validation file.
        steps_collected: Env steps collected by this call (less than the total on resume).
        wall_time_s: Wall time of this call.
    """

    train_path: Path
    val_path: Path
    num_train_rows: int
    num_val_rows: int
    steps_collected: int
    wall_time_s: float

    @property
    def steps_per_second(self) -> float:
        """Env steps collected per second of wall time in this call."""
        return self.steps_collected / max(self.wall_time_s, 1e-9)


def save_npz_atomic(
    path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = True
) -> None:
    """Save arrays to ``path`` via a temp file in the same dir and ``os.replace``."""
    ordered = {k: arrays[k] for k in KEY_ORDER if k in arrays}
    with atomic_write(path, "wb") as file:
        (np.savez_compressed if compress else np.savez)(file, **ordered)


def generate_dataset(
    name: str,
    *,
    out_dir: str | os.PathLike | None = None,
    num_episodes: int | None = None,
    num_val_episodes: int | None = None,
    episode_length: int | None = None,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> GenerationResult:
    """Generate ``<name>.npz`` and ``<name>-val.npz`` with OGBench's scripted oracles.

    Args:
        name: Dataset name, e.g. ``"cube-single-play-v0"`` (see
            :func:`~sorl_torchrl.data.specs.list_datasets`).
        out_dir: Output dir (default: the regenerated-data dir,
            ``~/.sorl_torchrl/regenerated`` or ``$SORL_REGENERATED_DIR``). OGBench's own
            ``~/.ogbench/data`` is refused: OGBench would take the files for official ones.
        num_episodes: Training episodes (default: the official number, e.g. 1000).
        num_val_episodes: Validation episodes (default: ``num_episodes // 10``, at least 1).
        episode_length: Rows per episode (default: the official 1001, 2001 for giant mazes).
        seed: Dataset seed; the same seed gives the same bytes.
        workers: Worker processes; the output does not depend on it.
        overwrite: Replace existing files (and discard a partial run with other settings).
        progress: Show a progress bar with steps/s and ETA.

    Returns:
        The written paths, row counts and timing.

    Raises:
        ValueError: Unknown dataset name, a download-only dataset (antmaze, humanoidmaze,
            antsoccer: collected by a trained expert), OGBench's own dataset dir as
            ``out_dir``, or bad sizes.
        FileExistsError: The dataset exists (pass ``overwrite=True``), or a partial run
            with different settings is in the way.
    """
    spec = get_dataset_spec(name)
    if spec.load_only:
        raise ValueError(
            f"{spec.name} cannot be generated: it needs a trained expert ({spec.family} data "
            "was collected by expert policies that OGBench does not distribute). Download "
            f"the official files instead: {download_command(spec.name, out_dir)}"
        )
    num_train = spec.num_episodes if num_episodes is None else num_episodes
    num_val = max(1, num_train // 10) if num_val_episodes is None else num_val_episodes
    length = spec.episode_length if episode_length is None else episode_length
    if num_train < 1 or num_val < 1:
        raise ValueError(f"Need at least one train and one val episode, got {num_train}/{num_val}.")
    if length < 2:
        raise ValueError(f"episode_length must be at least 2 rows, got {length}.")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")

    out = default_dataset_dir("regenerated") if out_dir is None else Path(out_dir).expanduser()
    _refuse_official_dir(out, spec.name)
    out.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out / f"{spec.name}.npz", out / f"{spec.name}-val.npz"
    partial = shard_dir(train_path)
    finished = partial.with_name(f".{partial.name}.done")  # the shards of a finished run
    shutil.rmtree(finished, ignore_errors=True)  # left by a kill while they were removed
    manifest = {
        "dataset": spec.name,
        "seed": seed,
        "num_episodes": num_train,
        "num_val_episodes": num_val,
        "episode_length": length,
        "settings": spec.generation_settings(),
        "generator": GENERATOR_NAME,
        "generator_version": library_versions()["sorl-torchrl"],
    }
    _prepare_partial_dir(partial, manifest, [train_path, val_path], overwrite)
    for target in (train_path, val_path, provenance_path(train_path), provenance_path(val_path)):
        for stale in out.glob(f".{target.name}.*.tmp"):  # an atomic write a kill cut short
            stale.unlink(missing_ok=True)

    total = num_train + num_val
    pending = [i for i in range(total) if not _shard_path(partial, i).exists()]
    start = time.perf_counter()
    with tqdm(
        total=total * length,
        initial=(total - len(pending)) * length,
        unit="step",
        unit_scale=True,
        desc=spec.name,
        disable=not progress,
        smoothing=0.05,
    ) as bar:
        for _ in _collect_shards(spec, length, seed, pending, partial, workers):
            bar.update(length)
    collected = len(pending) * length

    # Until both records are written the files are of no known origin (and the shard dir
    # says that the generation is unfinished): a stale record must not outlive its file.
    for path in (train_path, val_path):
        provenance_path(path).unlink(missing_ok=True)
    _merge(partial, range(num_train), train_path)
    _merge(partial, range(num_train, total), val_path)
    for path, split, episodes in [
        (train_path, "train", (0, num_train)),
        (val_path, "val", (num_train, total)),
    ]:
        write_provenance(
            path,
            {
                **manifest,
                "split": split,
                "episode_index_range": list(episodes),
                "counts": {
                    "episodes": episodes[1] - episodes[0],
                    "rows": (episodes[1] - episodes[0]) * length,
                    "transitions": (episodes[1] - episodes[0]) * (length - 1),
                },
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    os.replace(partial, finished)  # one rename marks the generation finished
    shutil.rmtree(finished)
    return GenerationResult(
        train_path=train_path,
        val_path=val_path,
        num_train_rows=num_train * length,
        num_val_rows=num_val * length,
        steps_collected=collected,
        wall_time_s=time.perf_counter() - start,
    )


def _refuse_official_dir(out: Path, name: str) -> None:
    official = default_dataset_dir("official")
    if out.resolve() == official.resolve():
        raise ValueError(
            f"{out} is OGBench's own dataset dir: OGBench, and any code built on it, reads the "
            "files there as the official data and never looks at a provenance record, so "
            "regenerated files there would pass for official ones. Generate into the "
            f"regenerated-data dir instead (the default: {generate_command(name)}, into "
            f"{default_dataset_dir('regenerated')}) or another dir (--out-dir DIR); the "
            f"official files come from `sorl-data download {name}`."
        )


def _shard_path(partial: Path, index: int) -> Path:
    return partial / f"episode_{index:06d}.npz"


def _prepare_partial_dir(
    partial: Path, manifest: dict, finals: list[Path], overwrite: bool
) -> None:
    """Create the shard dir, or check that an existing one belongs to the same run."""
    if partial.exists():
        manifest_path = partial / _MANIFEST
        previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        if previous == manifest:
            return  # resume
        if not overwrite and (previous is not None or any(partial.glob("episode_*.npz"))):
            raise FileExistsError(
                f"{partial} holds an interrupted run with different settings "
                f"({previous}). Re-run with the same settings to resume it, or pass "
                "--overwrite (overwrite=True) to discard it."
            )
        shutil.rmtree(partial)  # other settings (overwrite), or killed before its manifest
    existing = [str(p) for p in finals if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"Dataset already exists: {', '.join(existing)}. "
            "Pass --overwrite (overwrite=True) to regenerate it."
        )
    partial.mkdir(parents=True)
    atomic_write_text(partial / _MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def _collect_shards(
    spec: DatasetSpec, length: int, seed: int, pending: list[int], partial: Path, workers: int
) -> Iterator[int]:
    """Collect the pending episodes, one shard each; yields episode indices as they finish."""
    if not pending:
        return
    if workers == 1:
        _init_worker(spec, length)
        try:
            for index in pending:
                yield _collect_one(seed, index, str(partial))
        finally:
            _close_worker()
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(pending)), _init_worker, (spec, length)) as pool:
        tasks = [(seed, index, str(partial)) for index in pending]
        yield from pool.imap_unordered(_collect_one_star, tasks)


_COLLECTOR: EpisodeCollector | None = None


def _init_worker(spec: DatasetSpec, length: int) -> None:
    global _COLLECTOR
    _COLLECTOR = EpisodeCollector(spec, length)


def _close_worker() -> None:
    global _COLLECTOR
    if _COLLECTOR is not None:
        _COLLECTOR.close()
        _COLLECTOR = None


def _collect_one(seed: int, index: int, partial: str) -> int:
    assert _COLLECTOR is not None
    episode = _COLLECTOR.collect(seed, index)
    save_npz_atomic(_shard_path(Path(partial), index), episode, compress=False)
    return index


def _collect_one_star(args: tuple[int, int, str]) -> int:
    return _collect_one(*args)


def _merge(partial: Path, indices: range, path: Path) -> None:
    """Concatenate the shards of ``indices`` into one official-format file."""
    columns: dict[str, list[np.ndarray]] = {}
    for index in indices:
        with np.load(_shard_path(partial, index)) as shard:
            for key in shard.files:
                columns.setdefault(key, []).append(shard[key])
    save_npz_atomic(path, {k: np.concatenate(v) for k, v in columns.items()})
