"""TorchRL experience replay over OGBench singletask datasets.

:class:`OGBenchExperienceReplay` reads the official-format files ``<name>.npz`` /
``<name>-val.npz`` from a local dir (downloaded with ``sorl-data download`` or regenerated
with ``sorl-data generate``; the antmaze, humanoidmaze and antsoccer datasets need a trained
expert and can only be downloaded), relabels them for the chosen singletask task, converts
them once to a memory-mapped TED TensorDict and samples batches from it. ``import sorl_torchrl``
registers it under the ``"ogbench"`` prefix of :func:`torchrl.data.datasets.load_dataset`.

Examples:
    >>> import tempfile
    >>> from torchrl.data.datasets import load_dataset
    >>> from sorl_torchrl.data import generate_dataset
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = generate_dataset("pointmaze-medium-navigate-v0", out_dir=root, num_episodes=2,
    ...                          episode_length=50, progress=False)
    ...     data = load_dataset("ogbench:pointmaze-medium-navigate-singletask-v0", root=root,
    ...                         batch_size=16)
    ...     batch = data.sample()
    ...     print(len(data), batch["observation"].shape, batch["next", "reward"].shape)
    98 torch.Size([16, 2]) torch.Size([16, 1])
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data.datasets.common import BaseDatasetExperienceReplay
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import TensorStorage
from torchrl.data.replay_buffers.writers import ImmutableDatasetWriter, Writer
from torchrl.envs.transforms import Compose, DeviceCastTransform, Transform

from sorl_torchrl.data.download import download_command
from sorl_torchrl.data.generate import generate_command, obtain_instructions
from sorl_torchrl.data.provenance import default_dataset_dir, file_source, read_provenance
from sorl_torchrl.data.relabel import read_task_targets, singletask_rewards
from sorl_torchrl.data.specs import DatasetSpec, get_dataset_spec, parse_singletask_id
from sorl_torchrl.data.ted import DEFAULT_ACTION_CLIP, rows_to_ted

__all__ = ["OGBenchExperienceReplay", "dataset_file_paths"]

_CACHE_FORMAT = 3  # bump when the memmap layout or the checks made when building it change


def dataset_file_paths(dataset_name: str, root: str | os.PathLike) -> dict[str, Path]:
    """The train and val files of a dataset in ``root``.

    >>> dataset_file_paths("cube-single-play-v0", "/data")["val"].name
    'cube-single-play-v0-val.npz'
    """
    root = Path(root).expanduser()
    return {"train": root / f"{dataset_name}.npz", "val": root / f"{dataset_name}-val.npz"}


class OGBenchExperienceReplay(BaseDatasetExperienceReplay):
    """Experience replay over an OGBench singletask dataset, in TorchRL's TED layout.

    Each sample holds ``observation``, ``action`` (clipped to ``±(1 - 1e-5)``),
    ``episode``, and under ``"next"``: ``observation``, ``reward`` ``[..., 1]``,
    ``terminated`` (the task is solved in ``s``: ``1 - mask`` of OGBench), and ``truncated``
    = ``done`` (last transition of a recorded episode; the data collection never stopped
    at success, so ``terminated`` does not end the recorded episode).

    Args:
        dataset_id: Singletask id, ``"<env>-<type>-singletask[-taskN]-v0"``, e.g.
            ``"cube-single-play-singletask-task2-v0"`` (no ``-taskN``: OGBench's default task).
        batch_size: Default number of transitions per :meth:`sample`.

    Keyword Args:
        root: Dir holding ``<name>.npz`` and ``<name>-val.npz`` (default: OGBench's
            ``~/.ogbench/data``, the official data's dir; regenerated data lives in
            ``~/.sorl_torchrl/regenerated`` unless generated elsewhere).
        split: ``"train"`` or ``"val"``.
        sampler: Replay-buffer sampler (default: uniform with replacement). Use
            ``SamplerWithoutReplacement(drop_last=True)`` for epochs with static shapes.
        writer: Writer (default: :class:`~torchrl.data.replay_buffers.ImmutableDatasetWriter`).
        collate_fn: Collate function of the replay buffer.
        pin_memory: Pin sampled batches.
        prefetch: Number of batches prepared in background threads.
        transform: Transform applied to sampled batches.
        device: Device the sampled batches are moved to (the memmap storage stays on CPU).
        action_clip: Clip actions to ``[-action_clip, action_clip]`` (``None``: off).
        cache_dir: Where the memory-mapped TED copy is kept (default:
            ``<root>/torchrl/<dataset_id>-<split>``); rebuilt when the source file or its
            provenance record changes. The copy carries the record (its ``.source.json``).

    Raises:
        ValueError: Unknown dataset or task, or a corrupt / incomplete file.
        FileNotFoundError: A missing file; the message gives the commands that download or
            generate it (expert data: download only).
    """

    def __init__(
        self,
        dataset_id: str,
        batch_size: int | None = None,
        *,
        root: str | os.PathLike | None = None,
        split: Literal["train", "val"] = "train",
        sampler: Sampler | None = None,
        writer: Writer | None = None,
        collate_fn: Callable | None = None,
        pin_memory: bool = False,
        prefetch: int | None = None,
        transform: Transform | None = None,
        device: torch.device | str | None = None,
        action_clip: float | None = DEFAULT_ACTION_CLIP,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
        self.dataset_id = dataset_id
        self.singletask = parse_singletask_id(dataset_id)
        self.spec: DatasetSpec = get_dataset_spec(self.singletask.dataset_name)
        self.split = split
        self.action_clip = action_clip
        self.root = Path(root).expanduser() if root is not None else default_dataset_dir()
        self.source_path = dataset_file_paths(self.spec.name, self.root)[split]
        self._cache_dir = (
            Path(cache_dir).expanduser()
            if cache_dir is not None
            else self.root / "torchrl" / f"{dataset_id}-{split}"
        )
        self._check_files_exist()
        storage = TensorStorage(self._load_or_build_memmap())
        if device is not None and torch.device(device).type != "cpu":
            cast = DeviceCastTransform(device)
            transform = cast if transform is None else Compose(transform, cast)
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

    # -- BaseDatasetExperienceReplay API --------------------------------------------------

    @property
    def data_path(self) -> Path:
        """The memory-mapped TED copy of this split."""
        return self._cache_dir

    @property
    def data_path_root(self) -> Path:
        """The dir holding the dataset files."""
        return self.root

    def _is_downloaded(self) -> bool:
        return self.source_path.exists()

    # -- extras ---------------------------------------------------------------------------

    @property
    def provenance(self) -> dict[str, Any]:
        """The provenance record of the source file, with its ``source``.

        ``source`` is ``"official"`` (downloaded by ``sorl-data download``: ``url`` and
        ``downloaded`` say from where and when), ``"regenerated"`` (made by ``sorl-data
        generate``: seed and settings), ``"unknown"`` (no record: e.g. an official file
        copied in by hand; the dict holds only ``source``) or ``"unfinished"`` (no record,
        beside an unfinished generation).
        """
        return {
            **(read_provenance(self.source_path) or {}),
            "source": file_source(self.source_path),
        }

    @property
    def task(self) -> int:
        """The singletask task number."""
        return self.singletask.task

    def val_split(self, **kwargs: Any) -> OGBenchExperienceReplay:
        """The validation split of the same dataset (same root; ``kwargs`` override).

        Args:
            **kwargs: Constructor arguments, e.g. ``batch_size``.
        """
        defaults = dict(batch_size=self._batch_size, root=self.root, action_clip=self.action_clip)
        return type(self)(self.dataset_id, split="val", **{**defaults, **kwargs})

    # -- building -------------------------------------------------------------------------

    def _check_files_exist(self) -> None:
        paths = dataset_file_paths(self.spec.name, self.root)
        if self.source_path.exists():
            return
        if self.split == "val" and paths["train"].exists():
            if self.spec.load_only:
                fix = f"download it with: {download_command(self.spec.name, self.root)}"
            else:
                fix = (
                    "regenerate both with: "
                    f"{generate_command(self.spec.name, self.root)} --overwrite"
                )
            raise FileNotFoundError(
                f"The validation file {paths['val']} is missing (the training file exists): "
                f"the dataset is incomplete; {fix}."
            )
        how = obtain_instructions(self.spec.name, self.root)
        if not self.spec.load_only and self.root == default_dataset_dir("official"):
            how += (
                f" (regenerated data lives in {default_dataset_dir('regenerated')}: pass "
                "that dir as root= if you generated it there)"
            )
        raise FileNotFoundError(f"Dataset file {self.source_path} not found: {how}.")

    def _fingerprint(self) -> dict[str, Any]:
        stat = self.source_path.stat()
        return {
            "format": _CACHE_FORMAT,
            "source": str(self.source_path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "dataset_id": self.dataset_id,
            "action_clip": self.action_clip,
            "provenance": self.provenance,
        }

    def _load_or_build_memmap(self) -> TensorDict:
        fingerprint_path = self._cache_dir.with_name(self._cache_dir.name + ".source.json")
        fingerprint = self._fingerprint()
        if self._cache_dir.exists() and fingerprint_path.exists():
            if json.loads(fingerprint_path.read_text()) == fingerprint:
                return TensorDict.load_memmap(self._cache_dir)
        ted = self._build_ted()
        self._cache_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self._cache_dir.parent, prefix=f".{self._cache_dir.name}."))
        try:
            ted.memmap(tmp)
            fingerprint_path.unlink(missing_ok=True)
            if self._cache_dir.exists():
                shutil.rmtree(self._cache_dir)
            os.replace(tmp, self._cache_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fingerprint_path.write_text(json.dumps(fingerprint))
        return TensorDict.load_memmap(self._cache_dir)

    def _build_ted(self) -> TensorDict:
        arrays = self._read_source()
        targets = read_task_targets(self.singletask.env_id)
        rewards, successes = singletask_rewards(
            targets, arrays["qpos"], arrays.get("button_states")
        )
        return rows_to_ted(
            arrays["observations"].astype(np.float32, copy=False),
            arrays["actions"].astype(np.float32, copy=False),
            arrays["terminals"],
            rewards,
            successes,
            action_clip=self.action_clip,
        )

    def _read_source(self) -> dict[str, np.ndarray]:
        needed = ["observations", "actions", "terminals", "qpos"]
        if self.spec.button_dim is not None:
            needed.append("button_states")
        if self.spec.load_only:
            command = download_command(self.spec.name, self.root)
            fix = f"download it again with `{command} --overwrite`"
        else:
            fix = f"regenerate it with `{generate_command(self.spec.name, self.root)} --overwrite`"
        hint = f"check it with `sorl-data verify {self.source_path}` and {fix}"
        try:
            with np.load(self.source_path) as file:
                missing = [key for key in needed if key not in file.files]
                if missing:
                    raise ValueError(
                        f"{self.source_path} lacks the key(s) {missing} needed for singletask "
                        f"rewards; {hint}."
                    )
                arrays = {key: file[key] for key in needed}
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise ValueError(
                f"{self.source_path} cannot be read ({type(error).__name__}: {error}): it is "
                f"truncated or corrupt; {hint}."
            ) from error
        terminals = arrays["terminals"]
        if terminals.ndim != 1 or len(terminals) == 0 or not terminals[-1]:
            raise ValueError(
                f"{self.source_path} does not end on an episode boundary (incomplete file); {hint}."
            )
        # Checked once here, when the memory-mapped copy is built, so that the training step
        # need not check every batch (a device synchronisation per check on a GPU).
        for key in ("observations", "actions", "qpos"):
            bad = int(np.count_nonzero(~np.isfinite(arrays[key])))
            if bad:
                raise ValueError(
                    f"{self.source_path}: {key} holds {bad} non-finite value(s) (NaN or inf), "
                    f"which would make every loss NaN; {hint}."
                )
        return arrays
