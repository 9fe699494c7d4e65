"""The recipes' config, checked before any work: every setting they read, all problems at once.

:func:`validate_config` checks the types and ranges of every top-level setting and of the
``algo``, ``env``, ``network``, ``loss``, ``optim``, ``eval``, ``data`` and ``logger`` groups,
and raises one :class:`~sorl_torchrl._validation.SettingsError` (a ``ValueError``) that lists each
problem as ``key: got X, allowed Y``. The ``loss``, ``optim`` and ``network`` checks are the
constructors' own, of the algorithm ``algo.name`` selects (``ShortcutLoss.SETTINGS`` and
``SORLUpdateStep.SETTINGS`` for SORL, ``FQLLoss.SETTINGS`` and ``JointUpdateStep.SETTINGS``
for FQL, ...), so a rule is written once; an algorithm without inference steps refuses
``eval.inference_steps`` other than ``[1]``. It builds nothing, reads no file and changes no state.

Zero has a documented meaning for the intervals that may be off: ``val_interval: 0`` (no
validation), ``checkpoint_interval: 0`` (only the final checkpoint), ``eval.interval: 0``
(evaluate only at the end). ``log_interval`` must be >= 1 (the loop logs on its multiples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from omegaconf import DictConfig, ListConfig, OmegaConf

from sorl_torchrl._validation import (
    FLAG,
    SEED,
    Choice,
    Number,
    Settings,
    SettingsError,
    Text,
    check_compile,
    check_device,
    problem_line,
)
from sorl_torchrl.data.torchrl_dataset import parse_dataset_spec
from sorl_torchrl.envs.ogbench import SuccessTiming
from sorl_torchrl.envs.video import VIDEO_SETTINGS
from sorl_torchrl.modules.actor import ACTOR_SETTINGS
from sorl_torchrl.modules.critic import CRITIC_SETTINGS
from sorl_torchrl.recipes.algorithms import (
    ALGORITHMS,
    ENV_BLOCKS,
    algorithm_name,
    algorithm_problems,
    group_settings,
)
from sorl_torchrl.recipes.common import dataset_id, dataset_spec
from sorl_torchrl.recipes.dataset_source import DATA_SETTINGS
from sorl_torchrl.recipes.divergence import ON_DIVERGENCE
from sorl_torchrl.recipes.loggers import LOGGER_BACKENDS, LOGGER_SETTINGS
from sorl_torchrl.recipes.loop_parts import VIDEO_KEYS
from sorl_torchrl.recipes.online import ONLINE_SETTINGS
from sorl_torchrl.scaling import GRID_SETTINGS

__all__ = [
    "EVAL_SETTINGS",
    "GROUP_SETTINGS",
    "LOGGER_BACKENDS",
    "MATMUL_PRECISIONS",
    "RESUME_MODES",
    "TOP_LEVEL_SETTINGS",
    "validate_config",
]

#: Values of ``resume``: must resume, must not, or decide from the run dir.
RESUME_MODES = (True, False, "auto")
#: Values of ``matmul_precision`` (``torch.set_float32_matmul_precision``).
MATMUL_PRECISIONS = ("highest", "high", "medium")

_COUNT = Number("[1, inf)", integer=True)


def _any(value: Any, name: str) -> Any:
    """A key the recipes read only through another group (``env.discount`` -> ``loss``)."""
    return value


def _compile_or_auto(value: Any, name: str) -> Any:
    """``compile``: ``auto`` (:mod:`sorl_torchrl.recipes.runtime` decides) or a compile mode."""
    return value if value == "auto" else check_compile(value, name)


#: Settings outside the groups.
TOP_LEVEL_SETTINGS = Settings(
    "the config",
    {
        "seed": SEED,
        "device": check_device,
        "threads": Number("[1, inf)", integer=True, optional=True, meaning="None: torch's default"),
        "matmul_precision": Choice(*MATMUL_PRECISIONS),
        "compile": _compile_or_auto,
        "num_updates": Number("[0, inf)", integer=True),
        "batch_size": _COUNT,
        "log_interval": _COUNT,
        "val_interval": Number("[0, inf)", integer=True, meaning="0: no validation"),
        "val_batches": _COUNT,
        "checkpoint_interval": Number(
            "[0, inf)", integer=True, meaning="0: only the final checkpoint"
        ),
        "resume": Choice(*RESUME_MODES),
        "run_dir": Text(),
        "progress": FLAG,
        "on_divergence": Choice(*ON_DIVERGENCE),
        "init_from": Text(optional=True),
        "online_steps": Number("[0, inf)", integer=True, meaning="0: offline only"),
    },
)

#: ``eval.*``: the grid's own checks (:data:`~sorl_torchrl.scaling.GRID_SETTINGS`) and how its
#: envs are run; ``sorl-evaluate`` checks its options with the same checks.
EVAL_SETTINGS = Settings(
    "eval",
    {
        "interval": Number("[0, inf)", integer=True, meaning="0: only at the end"),
        **{
            key: GRID_SETTINGS[key]
            for key in (
                "inference_steps",
                "num_candidates",
                "num_episodes",
                "seed",
                "max_episode_steps",
            )
        },
        "num_envs": _COUNT,
        "parallel": FLAG,
        "video_episodes": Number("[0, inf)", integer=True, meaning="0: no video"),
        "video_size": VIDEO_SETTINGS["size"],
        "video_fps": VIDEO_SETTINGS["fps"],
    },
)

#: The ``network`` group's checks: the modules' own (SORL's; see
#: :func:`~sorl_torchrl.recipes.algorithms.group_settings` for another algorithm's).
_NETWORK_SETTINGS = Settings(
    "network",
    {
        "actor_cells": ACTOR_SETTINGS["num_cells"],
        "critic_cells": CRITIC_SETTINGS["num_cells"],
        "num_critics": CRITIC_SETTINGS["num_members"],
        "critic_layer_norm": CRITIC_SETTINGS["layer_norm"],
        "condition_on_steps": CRITIC_SETTINGS["condition_on_steps"],
        "step_feature": CRITIC_SETTINGS["step_feature"],
    },
)

#: Each group's checks. ``network``, ``loss`` and ``optim`` are SORL's here; a config of
#: another ``algo.name`` is checked with that algorithm's
#: (:func:`~sorl_torchrl.recipes.algorithms.group_settings`).
GROUP_SETTINGS: dict[str, Settings] = {
    "algo": Settings("algo", {"name": Choice(*ALGORITHMS)}),
    "env": Settings(
        "env",
        {
            # a known dataset and a task in 1-5 (checked with dataset_spec and dataset_id);
            # both null for data.dataset=<prefix>:<id>, whose env comes from the dataset
            "name": Text(optional=True),
            "task": Number(integer=True, optional=True),
            "discount": _any,  # read through loss.discount
            "q_agg": _any,  # read through loss.q_agg
            "q_loss_coef": _any,  # read through loss.q_loss_coef
            "success_timing": Choice(*get_args(SuccessTiming)),
            # the baselines' per-environment blocks, read through their loss.* (an env
            # without one cannot train that baseline: its loss.* cannot be read)
            **dict.fromkeys(ENV_BLOCKS, _any),
        },
    ),
    # validate_inputs and compile are the recipes' own choices (off: data checked at load)
    **group_settings("sorl", _NETWORK_SETTINGS),
    "eval": EVAL_SETTINGS,
    "data": DATA_SETTINGS,  # with the rule that data.source and the *_if_missing flags agree
    "logger": LOGGER_SETTINGS,
    "online": ONLINE_SETTINGS,
}

#: Groups whose keys a config may leave out: the constructor's default applies.
_OPTIONAL_GROUPS = ("loss", "optim")
#: Groups a config may lack: a config without ``algo`` (an older one) is SORL.
_ABSENT_GROUPS = ("algo", "online")


def _read(node: DictConfig, key: str, name: str, problems: list[str]) -> tuple[bool, Any]:
    """``(True, value)`` with interpolations resolved, or ``(False, None)`` and a problem."""
    try:
        value = node[key]
        if isinstance(value, DictConfig | ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as err:  # noqa: BLE001 - any resolution failure is the config's
        problems.append(f"{name}: cannot be read ({type(err).__name__}: {err})")
        return False, None
    return True, value


def _check_node(
    node: DictConfig,
    settings: Settings,
    prefix: str,
    problems: list[str],
    *,
    required: bool = True,
    only_known: bool = False,
    optional_keys: tuple[str, ...] = (),
) -> None:
    """Check the keys of ``node`` with ``settings`` and add a line per problem.

    Args:
        node: a group of the config (or the config itself).
        settings: the checks.
        prefix: how the keys are named in the lines (``"loss."``).
        problems: where the lines go.
        required: a key of ``settings`` that ``node`` lacks is a problem.
        only_known: check only the keys ``settings`` knows (others are not a problem).
        optional_keys: keys of ``settings`` that ``node`` may lack even when ``required``.
    """
    present = [key for key in node.keys() if not only_known or key in settings]
    if required:
        problems.extend(
            f"{prefix}{key}: missing (the recipes read it)"
            for key in settings
            if key not in node and key not in optional_keys
        )
    values: dict[str, Any] = {}
    for key in present:
        ok, value = _read(node, key, f"{prefix}{key}", problems)
        if ok:
            values[key] = value
    _, found = settings.collect(values, prefix)
    for name, error in found:
        line, key = problem_line(name, error), name.removeprefix(prefix)
        if key in node and OmegaConf.is_interpolation(node, key):
            source = OmegaConf.to_container(node, resolve=False)[key]  # e.g. "${env.discount}"
            line = line.replace(f"{name}:", f"{name} (= {source}):", 1)
        problems.append(line)


def _check_env(cfg: DictConfig, problems: list[str]) -> None:
    """``env.name`` a known dataset and ``env.task`` in 1-5, by the recipes' own functions.

    With ``data.dataset=<prefix>:<id>`` of another source, both must be null (``env=dataset``):
    the env then comes from the dataset.
    """
    spec = cfg.data.get("dataset") if isinstance(cfg.get("data"), DictConfig) else None
    if spec is not None:
        try:
            prefix, _ = parse_dataset_spec(str(spec))
        except ValueError as err:
            problems.append(f"data.dataset: {err}")
            return
        if prefix != "ogbench":
            named = [key for key in ("name", "task") if cfg.env.get(key) is not None]
            if named:
                problems.append(
                    f"env.{named[0]}: got {cfg.env.get(named[0])!r} with data.dataset={spec}, "
                    "whose env comes from the dataset: add env=dataset (its discount and "
                    "loss settings are generic; override them as env.discount=...)"
                )
            return
    check: Callable[[DictConfig], Any]
    for key, check in (("name", dataset_spec), ("task", dataset_id)):
        try:
            check(cfg)
        except (ValueError, TypeError) as err:
            problems.append(f"env.{key}: {err}")
            return


def validate_config(cfg: DictConfig) -> None:
    """Check every setting the recipes read; raise one error that lists all problems.

    Fast and without side effects: nothing is built and no file is read. Run it before any
    work.

    Args:
        cfg: the composed ``train`` config (``sorl_torchrl/recipes/conf/train.yaml`` and its
            groups, with any overrides).

    Raises:
        SettingsError: one or more settings are missing, of the wrong type or out of
            range; each is a line ``key: got X, allowed Y``. A value read through an
            interpolation names it: ``loss.discount (= ${env.discount}): got 1.5, ...``.

    Examples:
        >>> from hydra import compose, initialize_config_module
        >>> with initialize_config_module("sorl_torchrl.recipes.conf", version_base="1.3"):
        ...     cfg = compose("train", overrides=["run_dir=runs/demo", "num_updates=-5",
        ...                                       "env.discount=1.5", "eval.num_candidates=[0]"])
        >>> validate_config(cfg)
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingsError: The config: 3 settings are not allowed:
          num_updates: got -5, allowed an integer >= 0
          loss.discount (= ${env.discount}): got 1.5, allowed a finite number in [0, 1]
          eval.num_candidates[0]: got 0, allowed an integer >= 1
        Change each one to an allowed value.
    """
    problems: list[str] = []
    _check_node(cfg, TOP_LEVEL_SETTINGS, "", problems, only_known=True)
    try:
        algo = algorithm_name(cfg)
    except Exception:  # noqa: BLE001 - an unknown or unreadable algo.name: the algo check says
        algo = None
    groups = {**GROUP_SETTINGS, **group_settings(algo or "sorl", _NETWORK_SETTINGS)}
    for group, settings in groups.items():
        node = cfg.get(group) if group in cfg else None
        if node is None and group in _ABSENT_GROUPS:
            continue
        if not isinstance(node, DictConfig):
            problems.append(f"{group}: missing or not a group (got {node!r})")
            continue
        required = group not in _OPTIONAL_GROUPS
        optional = {"env": ENV_BLOCKS, "eval": VIDEO_KEYS}.get(group, ())
        _check_node(
            node, settings, f"{group}.", problems, required=required, optional_keys=optional
        )
    if not any(line.startswith(("env.name", "env.task", "env:")) for line in problems):
        _check_env(cfg, problems)
    if algo is not None:
        problems += algorithm_problems(algo, cfg)
    if problems:
        raise SettingsError("The config", problems)
