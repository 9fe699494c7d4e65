"""The data a training run reads, and the env it is evaluated in: OGBench or any TorchRL dataset.

``data.dataset: null`` (the default) trains on the OGBench singletask dataset that ``env.name``
and ``env.task`` name, obtained as ``data.source`` says
(:mod:`sorl_torchrl.recipes.dataset_source`), and evaluates in its OGBench env (success
rate). ``data.dataset=<prefix>:<id>`` trains on any dataset
:func:`~sorl_torchrl.data.torchrl_dataset.open_dataset` opens (e.g. a local Minari dataset,
``minari:sorl/invertedpendulum/linear-v0``, with ``data.root`` its datasets dir): the
observation and action sizes come from the data, the evaluation env from the dataset's
gymnasium id (the mean return is its metric, as such envs report no success), and when the
dataset names no env, evaluation is off with a note saying why.

Examples:
    >>> from omegaconf import OmegaConf
    >>> dataset_spec_of(OmegaConf.create({"data": {"dataset": None}}))
    ('ogbench', None)
    >>> dataset_spec_of(OmegaConf.create({"data": {"dataset": "minari:sorl/pendulum-v0"}}))
    ('minari', 'sorl/pendulum-v0')
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torchrl.data import ReplayBuffer
from torchrl.envs import EnvBase

from sorl_torchrl.data import OGBenchExperienceReplay
from sorl_torchrl.data.fingerprint import file_fingerprint
from sorl_torchrl.data.torchrl_dataset import open_dataset, parse_dataset_spec
from sorl_torchrl.envs import make_ogbench_env
from sorl_torchrl.recipes.common import dataset_id, prepare_dataset
from sorl_torchrl.recipes.runtime import Runtime

__all__ = ["TrainingData", "dataset_spec_of", "describe_ogbench", "open_training_data"]

log = logging.getLogger("sorl.train")

#: Builds the evaluation envs: ``factory(num_envs=n)``.
EnvFactory = Callable[..., EnvBase]


@dataclasses.dataclass
class TrainingData:
    """What a run trains on and is evaluated in.

    Attributes:
        name: the dataset's id, for titles and logs (e.g. ``cube-single-play-singletask-task2-v0``).
        train: the replay buffer of TED training batches.
        val: the validation split's buffer (``None``: the dataset has none, or validation is off).
        description: the run record's ``dataset`` entry (name, id, source, fingerprint, ...).
        sizes: ``{"observation_dim", "action_dim"}`` read from the data (``None`` for OGBench,
            whose sizes come from its dataset spec).
        env_factory: builds the evaluation env(s), ``factory(num_envs=n)``; ``None``: no env.
        metric: the evaluation's headline column, ``"success_rate"`` or ``"mean_return"``.
        check_sizes: refuses a checkpoint whose sizes differ from the data's (naming both).
    """

    name: str
    train: ReplayBuffer
    val: ReplayBuffer | None
    description: dict[str, Any]
    sizes: dict[str, int] | None
    env_factory: EnvFactory | None
    metric: str
    check_sizes: Callable[[int, int, str], None] | None = None


def dataset_spec_of(cfg: DictConfig) -> tuple[str, str | None]:
    """``(prefix, id)`` of ``data.dataset``; ``("ogbench", None)`` when it is null.

    An ``ogbench:`` id must be the one ``env.name`` and ``env.task`` name (the recipes build
    OGBench's singletask ids from those two).

    Raises:
        ValueError: a malformed ``data.dataset``, or an ``ogbench:`` id that is not the
            env's (the message gives the overrides to use instead).
    """
    spec = cfg.data.get("dataset")
    if spec is None:
        return "ogbench", None
    prefix, name = parse_dataset_spec(str(spec))
    if prefix == "ogbench":
        expected = dataset_id(cfg)
        if name != expected:
            raise ValueError(
                f"data.dataset={spec} names an OGBench dataset, which the recipes take from "
                f"env.name and env.task (here {expected}): pass env=<name> env.task=<n> (e.g. "
                "env=scene-play env.task=4) and leave data.dataset null."
            )
        return "ogbench", None
    return prefix, name


def describe_ogbench(buffer: OGBenchExperienceReplay) -> dict[str, Any]:
    """What a run trains on: the dataset, its file, content hash, size and provenance."""
    fingerprint = file_fingerprint(buffer.source_path)
    return {
        "name": buffer.spec.name,
        "id": buffer.dataset_id,
        "prefix": "ogbench",
        "path": str(buffer.source_path.resolve()),
        "fingerprint": fingerprint.token,
        "size_bytes": fingerprint.size_bytes,
        "transitions": len(buffer),
        "source": buffer.provenance["source"],
        "provenance": buffer.provenance,
    }


def open_training_data(cfg: DictConfig, runtime: Runtime) -> TrainingData:
    """Obtain and open the dataset of a (validated) config, and say how to evaluate on it."""
    device = None if runtime.device.type == "cpu" else runtime.device
    prefix, name = dataset_spec_of(cfg)
    if prefix == "ogbench":
        train = OGBenchExperienceReplay(
            dataset_id(cfg),
            batch_size=cfg.batch_size,
            root=prepare_dataset(cfg),
            prefetch=runtime.prefetch,
            pin_memory=runtime.pin_memory,
            device=device,
        )
        val = train.val_split(prefetch=None, device=device) if cfg.val_interval else None
        factory = functools.partial(
            make_ogbench_env,
            dataset_id(cfg),
            success_timing=cfg.env.success_timing,
            device=runtime.device,
        )
        return TrainingData(
            dataset_id(cfg), train, val, describe_ogbench(train), None, factory, "success_rate"
        )
    spec = f"{prefix}:{name}"
    root = Path(str(cfg.data.root)).expanduser() if cfg.data.root else None
    offline = open_dataset(
        spec, batch_size=cfg.batch_size, root=root, device=device, prefetch=runtime.prefetch
    )
    if cfg.val_interval:
        log.warning("%s has no validation split: validation losses are off.", spec)
    factory = None
    if offline.env_factory is not None:
        factory = functools.partial(offline.make_env, runtime.device)
    else:
        log.warning("No evaluation for %s: %s.", spec, offline.evaluation_note)
    return TrainingData(
        name=str(name),
        train=offline.buffer,
        val=None,
        description=offline.describe(),
        sizes={"observation_dim": offline.observation_dim, "action_dim": offline.action_dim},
        env_factory=factory,
        metric="success_rate" if offline.has_success else "mean_return",
        check_sizes=offline.check_sizes,
    )
