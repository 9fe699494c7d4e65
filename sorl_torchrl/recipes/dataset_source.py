"""Which data a run trains on: the source it asks for, where that lives, and what is there.

``data.source`` names the data: ``official`` (OGBench's own files, downloaded with
``data.download_if_missing=true`` or ``sorl-data download``) or ``regenerated`` (made here
with OGBench's scripted oracles: ``data.generate_if_missing=true`` or ``sorl-data
generate``). ``data.root: null`` is the source's default dir: ``~/.ogbench/data`` for
official data, ``~/.sorl_torchrl/regenerated`` for regenerated data. Before training, the
provenance record of each file must match the source:

=================  =====================================================================
``official``       a record that says official (a download), or no record at all (an
                   official file copied in by hand: accepted, with a warning)
``regenerated``    a record that says regenerated (``sorl-data generate`` writes one beside
                   every file it makes; records of earlier versions count as regenerated)
=================  =====================================================================

Anything else (a regenerated file for an official run, an official or unrecorded file for a
regenerated run, the leftover of an unfinished generation, a record whose checksum is not
the file's) is refused with what was found and how to fix it. :func:`obtain_dataset` is
what :func:`~sorl_torchrl.recipes.common.prepare_dataset` runs; :data:`DATA_SETTINGS` checks
the ``data`` group in :func:`~sorl_torchrl.recipes.config_checks.validate_config`.

Examples:
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.create({"data": {"root": None, "source": "official"}})
    >>> dataset_root(cfg).parts[-2:]
    ('.ogbench', 'data')
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sorl_torchrl._validation import FLAG, Choice, Number, SettingError, Settings, Text
from sorl_torchrl.data.download import download_command, download_dataset
from sorl_torchrl.data.fingerprint import file_fingerprint
from sorl_torchrl.data.generate import generate_command, generate_dataset
from sorl_torchrl.data.provenance import (
    ACCEPTED,
    SOURCES,
    default_dataset_dir,
    describe_provenance,
    file_source,
    interrupted_generation,
    read_provenance,
    shard_dir,
)
from sorl_torchrl.data.specs import DatasetSpec

__all__ = ["DATA_SETTINGS", "SourceMismatchError", "dataset_root", "obtain_dataset"]

log = logging.getLogger("sorl.train")


def _obtain_matches_source(values: dict[str, Any], prefix: str) -> SettingError | None:
    """The rule: generating makes regenerated data, downloading official data."""
    source = values.get("source")
    if source == "official" and values.get("generate_if_missing"):
        return SettingError(
            f"{prefix}generate_if_missing",
            True,
            "false with data.source=official (generated data is never official: set "
            "data.source=regenerated to train on regenerated data, or download the official "
            "files with data.download_if_missing=true)",
        )
    if source == "regenerated" and values.get("download_if_missing"):
        return SettingError(
            f"{prefix}download_if_missing",
            True,
            "false with data.source=regenerated (downloaded data is official: set "
            "data.source=official to train on it, or regenerate the dataset with "
            "data.generate_if_missing=true)",
        )
    return None


#: The checks of the ``data`` group (``validate_config`` runs them).
DATA_SETTINGS = Settings(
    "data",
    {
        "dataset": Text(optional=True),  # and <prefix>:<id>: checked by the config check
        "root": Text(optional=True),
        "source": Choice(*SOURCES),
        "download_if_missing": FLAG,
        "generate_if_missing": FLAG,
        "num_episodes": Number(
            "[1, inf)", integer=True, optional=True, meaning="None: the official size"
        ),
        "workers": Number("[1, inf)", integer=True),
        "prefetch": Number("[1, inf)", integer=True, optional=True, meaning="None: no prefetching"),
    },
    rules=[_obtain_matches_source],
)


class SourceMismatchError(ValueError):
    """A dataset file whose provenance is not the source the run asks for."""


def dataset_root(cfg: DictConfig) -> Path:
    """``data.root``, or the default dir of ``data.source`` when it is null."""
    if cfg.data.root:
        return Path(str(cfg.data.root)).expanduser()
    return default_dataset_dir(str(cfg.data.source))


def obtain_dataset(cfg: DictConfig, spec: DatasetSpec) -> Path:
    """The dataset dir, holding both files of ``spec`` from ``data.source``; obtains them if asked.

    With ``data.generate_if_missing`` a missing dataset is generated (and an interrupted
    generation finished), with ``data.download_if_missing`` missing files are downloaded;
    an existing file is never replaced. Then each file's provenance is checked against
    ``data.source`` (see the module docstring).

    Raises:
        SettingError: ``data.source`` and the ``*_if_missing`` flag disagree.
        ValueError: The dataset cannot be generated (expert data), or a half-generated one
            cannot be finished.
        FileNotFoundError: A file is missing and nothing was asked to obtain it; the message
            gives the setting and the command that do.
        SourceMismatchError: A file's provenance does not match ``data.source``.
        DownloadError: The download failed (the message names the file and the fix).
    """
    error = _obtain_matches_source(dict(cfg.data), "data.")
    if error is not None:
        raise error
    source, root = str(cfg.data.source), dataset_root(cfg)
    files = [root / f"{spec.name}.npz", root / f"{spec.name}-val.npz"]
    if cfg.data.generate_if_missing:
        _generate_missing(cfg, spec, root, files)
    elif cfg.data.download_if_missing:
        _check_sources([path for path in files if path.exists()], source, spec, root)
        if not all(path.exists() for path in files):
            log.info(
                "Dataset %s incomplete in %s: downloading the official files.", spec.name, root
            )
            download_dataset(spec.name, root, progress=bool(cfg.progress))
    for path in files:
        if not path.exists():
            raise FileNotFoundError(f"Dataset file {path} not found {_how(spec, source, root)}")
    _check_sources(files, source, spec, root)
    return root


def _how(spec: DatasetSpec, source: str, root: Path) -> str:
    where = f"(data.source={source}, data.root={root})"
    if source == "official":
        return (
            f"{where}: pass data.download_if_missing=true to download the official files, or "
            f"run `{download_command(spec.name, root)}`."
        )
    if spec.load_only:
        return (
            f"{where}, and {spec.name} cannot be generated: it needs a trained expert. Train on "
            "the official data: data.source=official data.download_if_missing=true."
        )
    return (
        f"{where}: pass data.generate_if_missing=true to generate it, or run "
        f"`{generate_command(spec.name, root)}`."
    )


def _generate_missing(cfg: DictConfig, spec: DatasetSpec, root: Path, files: list[Path]) -> None:
    """Generate the dataset if neither file exists, or finish an interrupted generation."""
    name = spec.name
    if spec.load_only:
        raise ValueError(
            f"data.generate_if_missing=true, but {name} cannot be generated: its data was "
            f"collected by a trained {spec.family} expert that OGBench does not distribute. "
            "Train on the official data instead: data.source=official "
            "data.download_if_missing=true (downloads it into "
            f"{default_dataset_dir('official')} unless data.root says otherwise), or run "
            f"`{download_command(name)}`."
        )
    interrupted = interrupted_generation(files[0]) is not None
    present = [path for path in files if path.exists()]
    if len(present) == 2 and not interrupted:
        return
    sizes = "" if cfg.data.num_episodes is None else f" --num-episodes {cfg.data.num_episodes}"
    regenerate = f"{generate_command(name, root)} --seed {cfg.seed}{sizes} --overwrite"
    if present and not interrupted:
        missing = ", ".join(path.name for path in files if path not in present)
        raise FileNotFoundError(
            f"The dataset {name} in {root} is incomplete: {present[0].name} exists but "
            f"{missing} does not, and data.generate_if_missing=true never replaces an "
            f"existing file. Regenerate both with `{regenerate}` and run this command again, "
            f"or move {present[0]} away to let this command generate the dataset."
        )
    log.info("Dataset %s not found in %s: generating it locally.", name, root)
    try:
        generate_dataset(
            name,
            out_dir=root,
            num_episodes=cfg.data.num_episodes,
            seed=cfg.seed,
            workers=cfg.data.workers,
            progress=cfg.progress,
        )
    except FileExistsError as err:  # the interrupted generation had other settings
        raise FileExistsError(
            f"data.generate_if_missing=true cannot finish the dataset {name}: "
            f"{shard_dir(files[0])} holds an interrupted generation with other settings "
            f"than this run's (seed={cfg.seed}, data.num_episodes={cfg.data.num_episodes}). "
            "Finish it with the `sorl-data generate` command that started it, or discard it "
            f"and generate the dataset with this run's settings: `{regenerate}`."
        ) from err


def _check_sources(files: list[Path], source: str, spec: DatasetSpec, root: Path) -> None:
    """Refuse a file whose provenance is not ``source`` (or whose record is not its own)."""
    for path in files:
        try:
            found = file_source(path)
        except ValueError as error:
            raise SourceMismatchError(f"{error} (data.source={source})") from error
        if found not in ACCEPTED[source]:
            raise SourceMismatchError(_mismatch(path, source, found, spec, root))
        record = read_provenance(path)
        if record is None:
            log.warning(
                "%s has no provenance record: taken as official data copied in by hand. "
                "`sorl-data verify %s` checks it; `%s --overwrite` replaces it with a recorded "
                "download.",
                path,
                path,
                download_command(spec.name, root),
            )
        elif record.get("sha256") != file_fingerprint(path).sha256:
            again = (
                f"`{download_command(spec.name, root)} --overwrite`"
                if found == "official"
                else f"`{generate_command(spec.name, root)} --overwrite`"
            )
            raise SourceMismatchError(
                f"{path} is not the file its provenance record describes (the sha256 differs: "
                f"it was modified or replaced after it was made), so its source is unknown "
                f"(data.source={source}). Get it again with {again}."
            )


def _mismatch(path: Path, source: str, found: str, spec: DatasetSpec, root: Path) -> str:
    """What was found instead of ``source``, and the ways out."""
    if found == "unfinished":
        what = (
            f"the leftover of an unfinished `sorl-data generate` ({shard_dir(path)} lies beside it)"
        )
    elif found == "unknown":
        what = (
            "a file without a provenance record: not made by `sorl-data generate`, which "
            "records every file it makes; most likely official data copied in by hand"
        )
    else:
        what = f"{found} data ({describe_provenance(read_provenance(path))})"
    text = f"data.source={source}, but {path} is {what}."
    if source == "official":
        fix = (
            " To train on it, pass data.source=regenerated. To train on the official data, "
            "download it into a dir of its own: data.root=DIR data.download_if_missing=true "
            f"(default dir: {default_dataset_dir('official')}), or replace this file: "
            f"`{download_command(spec.name, root)} --overwrite`."
        )
        if root == default_dataset_dir("official"):
            fix += (
                " Regenerated files do not belong in OGBench's own dir (OGBench reads them as "
                f"official): move both files and their .provenance.json records to "
                f"{default_dataset_dir('regenerated')} and train on them there with "
                "data.source=regenerated."
            )
        if found == "unfinished":
            fix = (
                " Finish the generation (data.source=regenerated data.generate_if_missing=true) "
                "to train on regenerated data, or download the official data into a dir of "
                "its own: data.root=DIR data.download_if_missing=true."
            )
        return text + fix
    if found == "unfinished":
        return text + (
            " Finish it with data.generate_if_missing=true (or the `sorl-data generate` "
            "command that started it)."
        )
    generate = (
        "it cannot be generated (expert data)"
        if spec.load_only
        else "generate it into a dir of its own: data.root=DIR data.generate_if_missing=true "
        f"(default dir: {default_dataset_dir('regenerated')})"
    )
    return text + (
        f" To train on it as official data, pass data.source=official. For regenerated data, "
        f"{generate}."
    )
