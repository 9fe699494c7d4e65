"""Any TorchRL offline dataset as SORL trains on it: ``"<prefix>:<id>"`` to TED batches.

:func:`open_dataset` takes a dataset spec such as ``"minari:sorl/invertedpendulum/linear-v0"``
and returns an :class:`OfflineDataset`: a TorchRL replay buffer whose samples hold the keys
:class:`~sorl_torchrl.ShortcutLoss` reads, the observation and action sizes read from the
data, the gymnasium env to evaluate in (when the dataset names one), and a description with
the content hash of the dataset's files for a run's record.

Sources. The prefixes are those of :func:`torchrl.data.datasets.load_dataset` (``minari``,
``d4rl``, ``roboset``, ``openx``, ... and ``ogbench``, which ``import sorl_torchrl``
registers). ``minari`` reads a local Minari dataset (:mod:`sorl_torchrl.data.minari_local`:
no download, the datasets dir is ``root`` or ``MINARI_DATASETS_PATH``). ``ogbench`` is parsed
but not opened here: OGBench singletask ids go through
:class:`~sorl_torchrl.data.OGBenchExperienceReplay`, which relabels the rewards of a task.
Any other prefix is handed to ``load_dataset`` as is; its samples must already be in the TED
layout with actions in ``[-1, 1]`` (checked), and it gets no evaluation env.

Batches: float32 observations, actions in ``[-1, 1]``, rewards ``[B, 1]``, and the
``terminated`` / ``done`` flags; the rules, the action rescaling and its inverse in the
evaluation env are in :mod:`sorl_torchrl.data.batch_layout`.

Examples:
    >>> parse_dataset_spec("minari:sorl/invertedpendulum/linear-v0")
    ('minari', 'sorl/invertedpendulum/linear-v0')
    >>> parse_dataset_spec("OGBench:cube-single-play-singletask-task2-v0")[0]
    'ogbench'
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torchrl.data.datasets import load_dataset
from torchrl.data.datasets import utils as _dataset_registry
from torchrl.data.replay_buffers import ReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.envs import EnvBase

from sorl_torchrl.data.batch_layout import batch_transform, check_ted_storage, check_values
from sorl_torchrl.data.fingerprint import FileFingerprint, file_fingerprint

__all__ = [
    "OfflineDataset",
    "directory_fingerprint",
    "known_prefixes",
    "open_dataset",
    "parse_dataset_spec",
]

EnvFactory = Callable[..., EnvBase]


def known_prefixes() -> tuple[str, ...]:
    """The dataset sources :func:`torchrl.data.datasets.load_dataset` resolves, sorted.

    Examples:
        >>> {"minari", "d4rl", "ogbench"} <= set(known_prefixes())
        True
    """
    return tuple(sorted(_dataset_registry._DATASET_REGISTRY))


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """Split ``"<prefix>:<id>"`` into ``(prefix, id)``; the prefix is lower-cased.

    Raises:
        ValueError: No ``:``, an empty id, or a prefix no TorchRL dataset class is
            registered under (the message lists the known ones).

    Examples:
        >>> parse_dataset_spec("d4rl:halfcheetah-medium-v2")
        ('d4rl', 'halfcheetah-medium-v2')
        >>> parse_dataset_spec("hopper-medium")
        Traceback (most recent call last):
        ...
        ValueError: data.dataset must be '<prefix>:<id>', got 'hopper-medium' ...
        >>> parse_dataset_spec("nosuch:x")
        Traceback (most recent call last):
        ...
        ValueError: Unknown dataset source 'nosuch' in 'nosuch:x'. Known: ...
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"data.dataset must be '<prefix>:<id>', got {spec!r} (e.g. "
            "'minari:sorl/invertedpendulum/linear-v0' or "
            f"'ogbench:cube-single-play-singletask-task2-v0'). Known prefixes: "
            f"{', '.join(known_prefixes())}."
        )
    prefix, dataset_id = spec.split(":", 1)
    prefix = prefix.strip().lower()
    if prefix not in known_prefixes():
        raise ValueError(
            f"Unknown dataset source {prefix!r} in {spec!r}. Known: "
            f"{', '.join(known_prefixes())} (the prefixes of torchrl.data.datasets."
            "load_dataset)."
        )
    if not dataset_id.strip():
        raise ValueError(f"data.dataset {spec!r} names no dataset after '{prefix}:'.")
    return prefix, dataset_id.strip()


def directory_fingerprint(
    path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None
) -> FileFingerprint:
    """One content hash for every file under ``path``, from the per-file fingerprints.

    The digest is the SHA-256 of one line per file (its relative path, SHA-256 and size,
    separated by NUL bytes), sorted by relative path: renaming, adding, removing or changing
    any file changes it, and the same files give the same digest wherever the dir lies. Each
    file's hash comes from :func:`~sorl_torchrl.data.fingerprint.file_fingerprint` and its cache.

    Args:
        path: The dir.
        cache_dir: Where the per-file caches go, mirroring the dir's layout (default: the
            hidden sibling ``.<dir name>.fingerprints``, outside the dir so that the caches
            are not part of what is hashed).

    Returns:
        The digest, the total size, and ``cached`` when no file had to be read.

    Raises:
        FileNotFoundError: ``path`` is no dir, or holds no file.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "data"
        >>> (folder / "sub").mkdir(parents=True)
        >>> _ = (folder / "a.bin").write_bytes(b"12")
        >>> _ = (folder / "sub" / "b").write_bytes(b"3")
        >>> first = directory_fingerprint(folder)
        >>> first.size_bytes, directory_fingerprint(folder).cached
        (3, True)
        >>> _ = (folder / "sub" / "b").write_bytes(b"4")
        >>> directory_fingerprint(folder).sha256 != first.sha256
        True
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"Cannot fingerprint {path}: no such dir.")
    cache_root = (
        Path(cache_dir).expanduser()
        if cache_dir is not None
        else path.parent / f".{path.name}.fingerprints"
    )
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"Cannot fingerprint {path}: the dir holds no file.")
    digest = hashlib.sha256()
    size, cached = 0, True
    for file in files:
        relative = file.relative_to(path)
        fingerprint = file_fingerprint(file, cache_dir=cache_root / relative.parent)
        digest.update(
            f"{relative.as_posix()}\0{fingerprint.sha256}\0{fingerprint.size_bytes}\n".encode()
        )
        size += fingerprint.size_bytes
        cached = cached and fingerprint.cached
    return FileFingerprint(digest.hexdigest(), size, cached=cached)


@dataclasses.dataclass
class OfflineDataset:
    """An opened dataset: its replay buffer, sizes, evaluation env and description.

    Attributes:
        spec: ``"<prefix>:<id>"`` as given.
        prefix: The source's prefix, e.g. ``"minari"``.
        dataset_id: The id after the prefix.
        buffer: TorchRL replay buffer; :meth:`~torchrl.data.ReplayBuffer.sample` returns TED
            batches (see the module docstring).
        observation_dim: Observation size, read from the data.
        action_dim: Action size, read from the data.
        path: The dataset's files (a Minari dataset dir, or the source's converted copy).
        fingerprint: Content hash of the files under ``path``.
        episodes: Episodes recorded (``None`` when the source does not say).
        env_id: Gymnasium id of the evaluation env (``None``: none is known).
        evaluation_note: Why no evaluation env can be built (``None`` when one can).
        action_low: Lower bounds of the dataset's actions before rescaling.
        action_high: Upper bounds.
        has_success: Whether the env's steps report ``success`` (gymnasium MuJoCo envs do
            not: evaluate them by episode return).
        provenance: What the source records about how the data was made.
        origin: How the data came here: ``"local"`` (read from a local dir, never
            downloaded) or ``"torchrl"`` (as TorchRL's dataset class obtained it).
    """

    spec: str
    prefix: str
    dataset_id: str
    buffer: ReplayBuffer
    observation_dim: int
    action_dim: int
    path: Path
    fingerprint: FileFingerprint
    episodes: int | None = None
    env_id: str | None = None
    evaluation_note: str | None = None
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    has_success: bool = False
    provenance: dict[str, Any] | None = None
    origin: str = "torchrl"
    env_factory: EnvFactory | None = dataclasses.field(default=None, repr=False)

    def make_env(self, device: torch.device | str = "cpu", *, num_envs: int = 1) -> EnvBase | None:
        """The evaluation env (actions in ``[-1, 1]``, float32), or ``None`` when none exists.

        Its ``max_episode_steps`` attribute is the env's time limit; ``evaluation_note``
        says why there is none.
        """
        if self.env_factory is None:
            return None
        return self.env_factory(device=device, num_envs=num_envs)

    def check_sizes(self, observation_dim: int, action_dim: int, what: str) -> None:
        """Refuse a model (a checkpoint being resumed or evaluated) of other sizes.

        Raises:
            ValueError: Names both sizes of both.
        """
        if (observation_dim, action_dim) != (self.observation_dim, self.action_dim):
            raise ValueError(
                f"{what} has observation size {observation_dim} and action size {action_dim}, "
                f"but {self.spec} has observation size {self.observation_dim} and action size "
                f"{self.action_dim}: it was trained on other data. Use the dataset it was "
                "trained on, or a new run dir."
            )

    def describe(self) -> dict[str, Any]:
        """What a run trains on, JSON-ready: name, id, prefix, path, content hash, sizes.

        ``source`` is :attr:`origin` (for OGBench data the recipes write ``official`` or
        ``regenerated`` there).
        """
        return {
            "name": self.dataset_id,
            "id": self.spec,
            "prefix": self.prefix,
            "source": self.origin,
            "path": str(self.path.resolve()),
            "fingerprint": self.fingerprint.token,
            "size_bytes": self.fingerprint.size_bytes,
            "transitions": len(self.buffer),
            "episodes": self.episodes,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "action_low": self.action_low,
            "action_high": self.action_high,
            "env_id": self.env_id,
            "evaluation_note": self.evaluation_note,
            "provenance": self.provenance,
        }


def open_dataset(
    spec: str,
    *,
    batch_size: int,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    sampler: Sampler | None = None,
    prefetch: int | None = None,
) -> OfflineDataset:
    """Open ``"<prefix>:<id>"`` for training (see the module docstring for the sources).

    Args:
        spec: The dataset, e.g. ``"minari:sorl/invertedpendulum/linear-v0"``.
        batch_size: Transitions per :meth:`sample`.
        root: The source's data dir (for ``minari``: the Minari datasets dir; default
            ``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``).
        device: Device of the sampled batches.
        sampler: Replay-buffer sampler (default: uniform with replacement).
        prefetch: Batches prepared in background threads.

    Raises:
        ValueError: A malformed spec or unknown prefix; an ``ogbench:`` spec (opened by
            :class:`~sorl_torchrl.data.OGBenchExperienceReplay`); data SORL cannot train on.
        FileNotFoundError: A local dataset that does not exist (the message says how to
            make one).
    """
    prefix, dataset_id = parse_dataset_spec(spec)
    if prefix == "ogbench":
        raise ValueError(
            f"{spec!r} is an OGBench singletask id: open it with "
            "sorl_torchrl.data.OGBenchExperienceReplay (its task's rewards are relabelled "
            "there), not with open_dataset."
        )
    if prefix == "minari":
        from sorl_torchrl.data.minari_local import open_minari

        return open_minari(
            dataset_id,
            batch_size=batch_size,
            root=root,
            device=device,
            sampler=sampler,
            prefetch=prefetch,
        )
    return _open_with_torchrl(prefix, dataset_id, batch_size, root, device, sampler, prefetch)


def _open_with_torchrl(
    prefix: str,
    dataset_id: str,
    batch_size: int,
    root: str | os.PathLike | None,
    device: torch.device | str | None,
    sampler: Sampler | None,
    prefetch: int | None,
) -> OfflineDataset:
    """Any other source: torchrl's ``load_dataset``, its samples checked to be TED already."""
    spec = f"{prefix}:{dataset_id}"
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if root is not None:
        kwargs["root"] = root
    if sampler is not None:
        kwargs["sampler"] = sampler
    if prefetch is not None:
        kwargs["prefetch"] = prefetch
    try:
        buffer = load_dataset(spec, **kwargs)
    except Exception as error:
        raise RuntimeError(
            f"torchrl.data.datasets.load_dataset({spec!r}) cannot open the dataset "
            f"({type(error).__name__}: {error}). A source that downloads needs the network on "
            "first use: point root at a local copy of it."
        ) from error
    data = buffer.storage.get(slice(None))
    observation_dim, action_dim = check_ted_storage(data, spec)
    check_values(data, spec)
    buffer.append_transform(batch_transform(device=device))
    path = Path(buffer.data_path_root)
    return OfflineDataset(
        spec=spec,
        prefix=prefix,
        dataset_id=dataset_id,
        buffer=buffer,
        observation_dim=observation_dim,
        action_dim=action_dim,
        path=path,
        fingerprint=directory_fingerprint(path),
        evaluation_note=(
            f"the {prefix} dataset names no gymnasium env this package can build: "
            "evaluation is off (training only)"
        ),
    )
