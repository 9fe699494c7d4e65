"""Local Minari datasets as TED replay buffers, and the envs they were recorded in.

A Minari dataset lives in ``<datasets dir>/<id>/data/`` (``main_data.hdf5`` and
``metadata.json``); the datasets dir is ``root`` when given, else ``MINARI_DATASETS_PATH``,
else Minari's default ``~/.minari/datasets``. Nothing is downloaded: Minari's server is never
asked, so an id that is not in that dir is an error that says how to make one
(``python -m sorl_torchrl.data.make_minari``).

:class:`LocalMinariExperienceReplay` reads the dataset's HDF5 file and keeps a memory-mapped
TED copy, in the layout of TorchRL's :class:`~torchrl.data.datasets.MinariExperienceReplay`
(why TorchRL's class is not used: see :class:`LocalMinariExperienceReplay`).
:func:`open_minari` wraps it for the recipes (float32 batches, actions in ``[-1, 1]``, the
evaluation env); :func:`make_minari_env` builds that env with Minari's own
``recover_environment(eval_env=True)`` (the dataset's eval env spec, else the env it was
recorded in) in a :class:`~torchrl.envs.GymWrapper`, with float32 observations and the
inverse action map (:func:`~sorl_torchrl.data.batch_layout.unit_box_scaling`).

Reading HDF5 needs ``h5py`` (Minari's ``hdf5`` extra); recording with ``minari.DataCollector``
also needs its ``create`` extra (jax). A dataset written in Minari's ``arrow`` format is
refused: TorchRL's class and this one read ``main_data.hdf5`` only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data.datasets.common import BaseDatasetExperienceReplay
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import TensorStorage
from torchrl.data.replay_buffers.writers import ImmutableDatasetWriter, Writer
from torchrl.envs import Compose, DoubleToFloat, EnvBase, GymWrapper, SerialEnv, TransformedEnv
from torchrl.envs.transforms import Transform

from sorl_torchrl._io import atomic_write_text
from sorl_torchrl.data.batch_layout import (
    batch_transform,
    check_ted_storage,
    check_values,
    unit_box_scaling,
)
from sorl_torchrl.data.torchrl_dataset import OfflineDataset, directory_fingerprint

__all__ = [
    "LocalMinariExperienceReplay",
    "local_minari_ids",
    "make_minari_env",
    "minari_datasets_path",
    "minari_root",
    "open_minari",
    "read_minari_metadata",
]

_CACHE_FORMAT = 1  # bump when the converted copy or the checks made when building it change
_JSON_FIELDS = ("observation_space", "action_space", "env_spec", "eval_env_spec")
_PROVENANCE = (
    "algorithm_name",
    "author",
    "code_permalink",
    "description",
    "minari_version",
    "data_format",
    "total_episodes",
    "total_steps",
)


def minari_root(root: str | os.PathLike | None = None) -> Path:
    """The Minari datasets dir: ``root``, else ``MINARI_DATASETS_PATH``, else Minari's default.

    Examples:
        >>> minari_root("/data/minari").as_posix()
        '/data/minari'
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("MINARI_DATASETS_PATH"):
        return Path(os.environ["MINARI_DATASETS_PATH"]).expanduser()
    return Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def minari_datasets_path(root: str | os.PathLike | None) -> Iterator[Path]:
    """Point ``MINARI_DATASETS_PATH`` (which Minari and TorchRL read) at ``root`` for a block.

    Examples:
        >>> with minari_datasets_path("/data/minari") as path:
        ...     os.environ["MINARI_DATASETS_PATH"] == str(path)
        True
    """
    path = minari_root(root)
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def local_minari_ids(root: str | os.PathLike | None = None) -> list[str]:
    """The ids of the Minari datasets in the datasets dir (those with ``data/metadata.json``).

    Examples:
        >>> import tempfile
        >>> local_minari_ids(tempfile.mkdtemp())
        []
    """
    base = minari_root(root)
    if not base.is_dir():
        return []
    found = []
    for metadata in base.rglob("data/metadata.json"):
        relative = metadata.parent.parent.relative_to(base)
        if not any(part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return sorted(found)


def read_minari_metadata(dataset_id: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """A local dataset's ``metadata.json``, its spaces and env specs decoded to dicts.

    Raises:
        FileNotFoundError: No such dataset in the datasets dir; the message lists the ones
            there and how to make one.
    """
    base = minari_root(root)
    path = base / dataset_id / "data" / "metadata.json"
    if not path.is_file():
        present = local_minari_ids(base)
        raise FileNotFoundError(
            f"No Minari dataset {dataset_id!r} in {base} ({path} does not exist; datasets "
            f"there: {present or 'none'}). Datasets are read locally, never downloaded: "
            "point data.root (or MINARI_DATASETS_PATH) at the dir holding it, or record one "
            f"with `python -m sorl_torchrl.data.make_minari --dataset-id {dataset_id} "
            f"--root {base}`."
        )
    metadata = json.loads(path.read_text())
    for key in _JSON_FIELDS:
        if isinstance(metadata.get(key), str):
            metadata[key] = json.loads(metadata[key])
    return metadata


def _box_bounds(metadata: dict[str, Any], dataset_id: str) -> tuple[list[float], list[float]]:
    """The action bounds; a non-Box action or observation space is refused."""
    action, observation = metadata.get("action_space") or {}, metadata.get("observation_space")
    if action.get("type") != "Box" or len(action.get("shape", ())) != 1:
        raise ValueError(
            f"The Minari dataset {dataset_id!r} has a {action.get('type')} action space of "
            f"shape {action.get('shape')}: SORL needs continuous actions, a flat Box."
        )
    if (observation or {}).get("type") != "Box":
        raise ValueError(
            f"The Minari dataset {dataset_id!r} has a {(observation or {}).get('type')} "
            "observation space: SORL needs one flat Box observation. Record it through "
            "gymnasium.wrappers.FlattenObservation."
        )
    return [float(x) for x in action["low"]], [float(x) for x in action["high"]]


def _evaluation_env(metadata: dict[str, Any]) -> tuple[str | None, int | None, str | None]:
    """``(env id, time limit, None)`` when the env can be built here, else a reason."""
    spec = metadata.get("eval_env_spec") or metadata.get("env_spec")
    if not spec or not spec.get("id"):
        return None, None, "the Minari dataset records no env spec: evaluation is off"
    from gymnasium.envs.registration import load_env_creator

    try:
        load_env_creator(spec["entry_point"])
    except Exception as error:  # a missing package or module
        return (
            spec["id"],
            None,
            f"its env {spec['id']} cannot be built here ({type(error).__name__}: {error}; "
            "install the package that provides it): evaluation is off",
        )
    return spec["id"], spec.get("max_episode_steps"), None


class LocalMinariExperienceReplay(BaseDatasetExperienceReplay):
    """A local Minari dataset (HDF5) as a TED replay buffer, rebuilt when its files change.

    Why not :class:`torchrl.data.datasets.MinariExperienceReplay`: in torchrl 0.14.1 it finds
    a local dataset (``load_from_local_minari=True``) but keeps none of its values. Its
    ``_download_and_preproc`` fills the transitions into an in-memory TensorDict and then
    stores it with ``td_data.memmap_like(<root>/<id>)``, which allocates a *contentless*
    memory-mapped copy of the same shapes, and returns that copy: every observation, action,
    reward and flag it samples is 0, and ``download=False`` reloads those zeros (the same
    code runs for downloaded datasets). It also converts again on every construction with
    ``load_from_local_minari=True``, and loads a stale copy with ``download=False``.

    This class reads the same file with ``h5py`` and stores the same layout and keys as
    TorchRL's class, with the values: per transition ``observation``, ``action``, ``episode``
    and, under ``"next"``, ``observation``, ``reward`` ``[N, 1]``, ``terminated`` and
    ``truncated`` (Minari's terminations and truncations, ``[N, 1]``) and ``done`` (either).
    Dtypes are Minari's (float32 batches come from the transform that
    :func:`open_minari` adds); infos are not read. The copy
    (``<cache_dir>/<id>``) is rebuilt when the content hash of the dataset dir
    (:func:`~sorl_torchrl.data.torchrl_dataset.directory_fingerprint`) differs from the one
    recorded beside it (``<cache_dir>/<id>.source.json``); the values are checked when it is
    built (:func:`~sorl_torchrl.data.batch_layout.check_values`).

    Args:
        dataset_id: Minari id, e.g. ``"sorl/invertedpendulum/linear-v0"``.
        batch_size: Default transitions per sample.

    Keyword Args:
        root: The Minari datasets dir (see :func:`minari_root`).
        cache_dir: Where the copy goes (default ``<root>/.torchrl``, a hidden dir that
            Minari's own listing skips).
        sampler: Sampler (default: uniform with replacement).
        writer: Writer (default: :class:`~torchrl.data.replay_buffers.ImmutableDatasetWriter`).
        collate_fn: Collate function.
        pin_memory: Pin sampled batches.
        prefetch: Batches prepared in background threads.
        transform: Transform applied to sampled batches.

    Raises:
        FileNotFoundError: The dataset is not in the datasets dir.
        ValueError: Another storage format than HDF5, non-Box spaces, infinite action
            bounds, an inconsistent episode, non-finite values or actions outside the space.
    """

    def __init__(
        self,
        dataset_id: str,
        batch_size: int | None = None,
        *,
        root: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        sampler: Sampler | None = None,
        writer: Writer | None = None,
        collate_fn: Callable | None = None,
        pin_memory: bool = False,
        prefetch: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.dataset_id = dataset_id
        self.root = minari_root(root)
        self.metadata = read_minari_metadata(dataset_id, self.root)
        if self.metadata.get("data_format", "hdf5") != "hdf5":
            raise ValueError(
                f"The Minari dataset {dataset_id!r} is stored as "
                f"{self.metadata['data_format']!r}; it is read from main_data.hdf5 (as "
                "TorchRL's MinariExperienceReplay does). Record it again with "
                "minari.DataCollector(..., data_format='hdf5')."
            )
        self.action_low, self.action_high = _box_bounds(self.metadata, dataset_id)
        unit_box_scaling(self.action_low, self.action_high, for_env=False)  # finite bounds
        cache = Path(cache_dir).expanduser() if cache_dir is not None else self.root / ".torchrl"
        self._cache_dir = cache
        self.fingerprint = directory_fingerprint(
            self.data_path_root, cache_dir=cache / f"{dataset_id}.fingerprints"
        )
        storage = TensorStorage(self._load_or_build())
        super().__init__(
            batch_size=batch_size,
            storage=storage,
            sampler=sampler,
            writer=writer if writer is not None else ImmutableDatasetWriter(),
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            prefetch=prefetch,
            transform=transform,
        )

    @property
    def data_path(self) -> Path:
        """The memory-mapped TED copy."""
        return self._cache_dir / self.dataset_id

    @property
    def data_path_root(self) -> Path:
        """The Minari dataset dir (``<root>/<id>``)."""
        return self.root / self.dataset_id

    def _is_downloaded(self) -> bool:
        return (self.data_path_root / "data" / "main_data.hdf5").is_file()

    def _load_or_build(self) -> TensorDict:
        stamp_path = self._cache_dir / f"{self.dataset_id}.source.json"
        stamp = {
            "format": _CACHE_FORMAT,
            "source": str(self.data_path_root.resolve()),
            "fingerprint": self.fingerprint.token,
        }
        if self.data_path.is_dir() and _read_json(stamp_path) == stamp:
            return TensorDict.load_memmap(self.data_path)
        name = f"minari:{self.dataset_id}"
        ted = _episodes_to_ted(self.data_path_root / "data" / "main_data.hdf5", name)
        check_ted_storage(ted, name)
        check_values(ted, name, self.action_low, self.action_high)
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.data_path.parent, prefix=f".{self.data_path.name}."))
        try:
            ted.memmap(tmp)
            stamp_path.unlink(missing_ok=True)
            if self.data_path.exists():
                shutil.rmtree(self.data_path)
            os.replace(tmp, self.data_path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic_write_text(stamp_path, json.dumps(stamp, indent=2) + "\n")
        return TensorDict.load_memmap(self.data_path)


def _episodes_to_ted(path: Path, name: str) -> TensorDict:
    """All transitions of a Minari HDF5 file, episodes in id order (as TorchRL orders them)."""
    import h5py

    columns: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as file:
        episodes = sorted(file, key=lambda key: int(key.removeprefix("episode_")))
        for key in episodes:
            episode = file[key]
            observations = episode["observations"][()]
            steps = episode["actions"].shape[0]
            if observations.shape[0] != steps + 1:
                raise ValueError(
                    f"{name}: {key} has {observations.shape[0]} observations for {steps} "
                    "actions (Minari stores one more observation than actions); the file is "
                    "corrupt: record the dataset again."
                )
            for column, values in (
                ("observation", observations[:-1]),
                ("next_observation", observations[1:]),
                ("action", episode["actions"][()]),
                ("reward", episode["rewards"][()].reshape(steps, 1)),
                ("terminated", episode["terminations"][()].astype(bool).reshape(steps, 1)),
                ("truncated", episode["truncations"][()].astype(bool).reshape(steps, 1)),
                ("episode", np.full(steps, int(key.removeprefix("episode_")))),
            ):
                columns.setdefault(column, []).append(values)
    if not columns:
        raise ValueError(f"{name}: {path} holds no episode; record the dataset again.")
    data = {column: torch.from_numpy(np.concatenate(parts)) for column, parts in columns.items()}
    return TensorDict(
        {
            "observation": data["observation"],
            "action": data["action"],
            "episode": data["episode"],
            "next": {
                "observation": data["next_observation"],
                "reward": data["reward"],
                "terminated": data["terminated"],
                "truncated": data["truncated"],
                "done": data["terminated"] | data["truncated"],
            },
        },
        batch_size=[len(data["action"])],
    )


def open_minari(
    dataset_id: str,
    *,
    batch_size: int,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    sampler: Sampler | None = None,
    prefetch: int | None = None,
) -> OfflineDataset:
    """A local Minari dataset as an :class:`~sorl_torchrl.data.torchrl_dataset.OfflineDataset`.

    The arguments are those of :class:`LocalMinariExperienceReplay`, and ``device`` of the
    sampled batches. The batches are float32 with actions in ``[-1, 1]``
    (:func:`~sorl_torchrl.data.batch_layout.batch_transform`); the env is
    :func:`make_minari_env`, when the dataset records one that can be built here.
    """
    buffer = LocalMinariExperienceReplay(
        dataset_id,
        batch_size,
        root=root,
        cache_dir=cache_dir,
        sampler=sampler,
        prefetch=prefetch,
    )
    low, high = buffer.action_low, buffer.action_high
    buffer.append_transform(batch_transform(low, high, device=device))
    observation_dim, action_dim = check_ted_storage(
        buffer.storage.get(slice(None)), f"minari:{dataset_id}"
    )
    metadata = buffer.metadata
    env_id, _, note = _evaluation_env(metadata)
    return OfflineDataset(
        spec=f"minari:{dataset_id}",
        prefix="minari",
        origin="local",
        dataset_id=dataset_id,
        buffer=buffer,
        observation_dim=observation_dim,
        action_dim=action_dim,
        path=buffer.data_path_root,
        fingerprint=buffer.fingerprint,
        episodes=metadata.get("total_episodes"),
        env_id=env_id,
        evaluation_note=note,
        action_low=low,
        action_high=high,
        has_success=False,
        provenance={key: metadata[key] for key in _PROVENANCE if key in metadata},
        env_factory=None
        if note
        else functools.partial(make_minari_env, dataset_id, root=buffer.root),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _single_env(
    dataset_id: str, root: str, device: str, low: list[float], high: list[float]
) -> TransformedEnv:
    """One env from the dataset's eval env spec: float32, actions mapped from ``[-1, 1]``."""
    import minari
    from gymnasium import spaces

    with minari_datasets_path(root):
        gym_env = minari.load_dataset(dataset_id).recover_environment(eval_env=True)
    if not isinstance(gym_env.action_space, spaces.Box):
        gym_env.close()
        raise ValueError(
            f"The evaluation env of {dataset_id!r} has a {type(gym_env.action_space).__name__} "
            "action space: SORL needs continuous Box actions."
        )
    transforms: list[Transform] = [DoubleToFloat()]
    if (scaling := unit_box_scaling(low, high, for_env=True)) is not None:
        transforms.append(scaling)
    return TransformedEnv(GymWrapper(gym_env, device=device), Compose(*transforms))


def make_minari_env(
    dataset_id: str,
    *,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    num_envs: int = 1,
) -> EnvBase:
    """The evaluation env of a local Minari dataset: actions in ``[-1, 1]``, float32.

    The policy's action ``a'`` reaches the simulator as ``a' * scale + loc`` (the inverse of
    the dataset's rescaling, :func:`~sorl_torchrl.data.batch_layout.unit_box_scaling`).
    Several envs make a :class:`~torchrl.envs.SerialEnv` of such envs (each one seeded by
    its own reset, as :func:`~sorl_torchrl.envs.evaluate_policy` does). The env's
    ``max_episode_steps`` attribute is its time limit (``None`` when it has none).

    Raises:
        FileNotFoundError: The dataset is not in the datasets dir.
        ValueError: The dataset records no buildable env, or its spaces are not Boxes.
    """
    base = minari_root(root)
    metadata = read_minari_metadata(dataset_id, base)
    low, high = _box_bounds(metadata, dataset_id)
    _, horizon, note = _evaluation_env(metadata)
    if note:
        raise ValueError(f"No evaluation env for the Minari dataset {dataset_id!r}: {note}.")
    if num_envs < 1:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}.")
    make = functools.partial(_single_env, dataset_id, str(base), str(device), low, high)
    env: EnvBase = make() if num_envs == 1 else SerialEnv(num_envs, make, device=device)
    env.max_episode_steps = horizon
    return env
