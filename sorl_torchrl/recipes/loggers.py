"""The recipes' loggers: TorchRL loggers that a resumed run continues without duplicate steps.

:func:`make_logger` builds the logger that the ``logger`` config group names, writing under
``<run_dir>/logs``, and :func:`log_group` logs a group of metrics at one step. ``csv`` is
:class:`CSVTableLogger` (one table per group, rows past the checkpoint dropped on resume);
``tensorboard`` is TorchRL's logger with ``purge_step`` (:class:`ResumableTensorboardLogger`);
``wandb`` is TorchRL's, given the W&B options and a run id kept in the run dir.
"""

from __future__ import annotations

import csv
import importlib
import io
import os
import uuid
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDictBase
from torchrl.record.loggers import Logger, TensorboardLogger, get_logger
from torchrl.record.loggers.csv import CSVExperiment, CSVLogger

from sorl_torchrl._io import atomic_write, atomic_write_text
from sorl_torchrl._validation import (
    Choice,
    Each,
    SettingError,
    Settings,
    SettingsError,
    Text,
    problem_line,
)

__all__ = [
    "CSVTable",
    "CSVTableLogger",
    "CSVTables",
    "LOGGER_BACKENDS",
    "LOGGER_SETTINGS",
    "ResumableTensorboardLogger",
    "WANDB_OPTIONS",
    "check_logger_config",
    "log_group",
    "make_logger",
    "require_backend",
    "truncate_table",
    "wandb_run_id",
]

#: Values of ``logger.backend`` (``torchrl.record.loggers.get_logger``).
LOGGER_BACKENDS = ("csv", "tensorboard", "wandb", "mlflow", "trackio")
#: Settings only Weights & Biases reads (``wandb.init`` arguments; ``dir`` is its folder).
WANDB_OPTIONS = ("entity", "group", "tags", "mode", "name", "dir")
#: The package each backend imports, and how to install it.
_PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'sorl-torchrl[tensorboard]'"),
    "wandb": ("wandb", "pip install 'sorl-torchrl[wandb]'"),
    "mlflow": ("mlflow", "pip install mlflow"),
    "trackio": ("trackio", "pip install trackio"),
}
#: The table of a scalar whose name has no ``group/`` prefix.
DEFAULT_GROUP = "scalars"
#: The file in ``<run_dir>/logs`` that keeps the W&B run id across resumes.
WANDB_ID_FILE = "wandb_run_id.txt"


def _tags(value: Any, name: str) -> list[str] | None:
    """``None`` or a list of non-empty strings: a check."""
    return None if value is None else Each(Text(), nonempty=False)(value, name)


def _wandb_only(values: dict[str, Any], prefix: str) -> SettingError | None:
    """A W&B option set while another backend logs is a mistake, not a silent no-op."""
    if values.get("backend") == "wandb":
        return None
    for key in WANDB_OPTIONS:
        if values.get(key) is not None:
            return SettingError(
                f"{prefix}{key}",
                values[key],
                "null unless the backend is wandb (only Weights & Biases reads it)",
                hint=f"Use logger=wandb, or set {prefix}{key}=null.",
            )
    return None


#: The ``logger`` group's settings (``sorl_torchrl/recipes/conf/logger/*.yaml``).
LOGGER_SETTINGS = Settings(
    "logger",
    {
        "backend": Choice(*LOGGER_BACKENDS),
        "project": Text(),
        "entity": Text(optional=True),
        "group": Text(optional=True),
        "tags": _tags,
        "mode": Choice(None, "online", "offline", "shared", "disabled"),
        "name": Text(optional=True),
        "dir": Text(optional=True),
    },
    rules=(_wandb_only,),
)


# ----------------------------------------------------------------------------- CSV tables


def _read_table(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """``(header, rows, whole)`` of a table; ``whole``: no cut-short last line was left out.

    A kill while a row is appended can leave its line without the newline: that line is not
    in ``rows``.
    """
    text = path.read_text(encoding="utf-8")
    whole = text.endswith("\n")
    if not whole:
        text = text[: text.rfind("\n") + 1]
    lines = list(csv.reader(io.StringIO(text)))
    return (lines[0] if lines else []), lines[1:], whole


def _write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Replace ``path`` with ``header`` and ``rows`` in one rename."""
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _step_of(row: list[str], path: Path) -> int:
    try:
        return int(row[0])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path}: a row starts with {row[:1]!r}, not an integer step. Fix or delete that "
            "row, then run again."
        ) from None


def truncate_table(path: Path, resume_step: int | None) -> None:
    r"""Drop the rows of ``path`` past ``resume_step`` (every row, with the file, if ``None``).

    The file is rewritten atomically, and only when a row goes.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "train.csv"
        >>> _ = path.write_text("step,loss\n100,0.5\n200,0.25\n300,0.125\n")
        >>> truncate_table(path, 200)
        >>> print(path.read_text(), end="")
        step,loss
        100,0.5
        200,0.25
    """
    header, rows, whole = _read_table(path) if resume_step is not None else ([], [], True)
    if not header:
        path.unlink(missing_ok=True)
        return
    kept = [row for row in rows if _step_of(row, path) <= resume_step]
    if len(kept) < len(rows) or not whole:
        _write_table(path, header, kept)


class CSVTable:
    """One group's table, ``<group>.csv``: a ``step`` column, then one column per metric.

    Values logged at the same step fill one row, which is appended (and flushed) when a
    value of another step, or a second value of the same metric, arrives, or on
    :meth:`write_row`. The columns are those of the first row; a row with a new metric
    rewrites the file atomically with the widened header (earlier rows leave it empty).

    Args:
        path: the table's file; an existing one is continued with its columns.

    Examples:
        >>> import tempfile
        >>> table = CSVTable(Path(tempfile.mkdtemp()) / "train.csv")
        >>> table.add("loss", 0.5, step=100)
        >>> table.add("q_mean", 2.0, step=100)
        >>> table.add("loss", 0.25, step=200)
        >>> table.write_row()
        >>> print(table.path.read_text(), end="")
        step,loss,q_mean
        100,0.5,2.0
        200,0.25,
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        header, rows, _ = _read_table(self.path) if self.path.is_file() else ([], [], True)
        self.columns: list[str] = header
        self.last_step: int | None = _step_of(rows[-1], self.path) if rows else None
        self._row: dict[str, float] = {}
        self._row_step: int | None = None
        self._handle: io.TextIOWrapper | None = None

    def add(self, metric: str, value: float, step: int | None = None) -> None:
        """Put ``value`` in the row of ``step`` (``None``: the row being filled, or the next)."""
        if metric == "step":
            raise ValueError(
                f"{self.path.name}: 'step' names the table's step column; log the metric "
                "under another name."
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{self.path.stem}/{metric}: a CSV table holds numbers, got {value!r}."
            ) from None
        if self._row and (metric in self._row or (step is not None and step != self._row_step)):
            self.write_row()
        if not self._row:
            self._row_step = self._next_step() if step is None else int(step)
        self._row[metric] = number

    def _next_step(self) -> int:
        return 0 if self.last_step is None else self.last_step + 1

    def write_row(self) -> None:
        """Append the row being filled, if any, and flush it to the file."""
        if not self._row:
            return
        new = [metric for metric in self._row if metric not in self.columns]
        if new:
            self._widen(new)
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        cells = [str(self._row_step)] + [
            "" if (value := self._row.get(metric)) is None else repr(value)
            for metric in self.columns[1:]
        ]
        csv.writer(self._handle, lineterminator="\n").writerow(cells)
        self._handle.flush()
        self.last_step, self._row_step, self._row = self._row_step, None, {}

    def _widen(self, new: list[str]) -> None:
        """Rewrite the file with ``new`` columns added (a new file: just the header)."""
        self.close()
        rows = _read_table(self.path)[1] if self.path.is_file() else []
        columns = (self.columns or ["step"]) + new
        _write_table(self.path, columns, [row + [""] * (len(columns) - len(row)) for row in rows])
        self.columns = columns

    def close(self) -> None:
        """Close the file (a row being filled stays pending: :meth:`write_row` writes it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class CSVTables(CSVExperiment):
    """TorchRL's CSV experiment with one :class:`CSVTable` per group, in ``log_dir``.

    A scalar ``"train/loss_actor"`` goes to column ``loss_actor`` of ``train.csv``; a name
    without ``/`` to ``scalars.csv``. Videos and texts are TorchRL's: files under
    ``log_dir/videos`` and ``log_dir/texts``, made when first written.

    Args:
        log_dir: the tables' folder.
        resume_step: the step the run starts from. Rows past it, left by an interrupted run,
            are dropped from every table in ``log_dir`` before anything is logged; ``None``
            (a new run) removes the tables.
        video_format: ``"pt"``, ``"memmap"`` or ``"mp4"`` (needs ``torchcodec``).
        video_fps: frames per second of ``mp4`` videos.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        resume_step: int | None = None,
        video_format: str = "pt",
        video_fps: int = 30,
    ) -> None:
        # Not CSVExperiment.__init__: it makes the scalars/ folder of one file per scalar that
        # the tables replace. These are the attributes its add_video and add_text use.
        self.log_dir = str(log_dir)
        self.video_format, self.video_fps = video_format, video_fps
        self.scalars: defaultdict[str, list] = defaultdict(list)
        self.videos_counter: defaultdict[str, int] = defaultdict(int)
        self.text_counter: defaultdict[str, int] = defaultdict(int)
        self.files: dict[str, Any] = {}
        os.makedirs(self.log_dir, exist_ok=True)
        for path in sorted(Path(self.log_dir).glob("*.csv")):
            truncate_table(path, resume_step)
        self.tables: dict[str, CSVTable] = {}

    def table(self, group: str) -> CSVTable:
        """The table of ``group`` (``<log_dir>/<group>.csv``)."""
        if group not in self.tables:
            self.tables[group] = CSVTable(Path(self.log_dir) / f"{group}.csv")
        return self.tables[group]

    def add_scalar(self, name: str, value: float, global_step: int | None = None) -> None:
        group, sep, metric = name.partition("/")
        if not sep:
            group, metric = DEFAULT_GROUP, name
        if not group or not metric:
            raise ValueError(f"Scalar name {name!r}: expected 'group/metric' or 'metric'.")
        self.table(group).add(metric, value, global_step)

    def flush(self) -> None:
        """Write every row being filled."""
        for table in self.tables.values():
            table.write_row()

    def close(self) -> None:
        """Write every row being filled and close the files."""
        self.flush()
        for table in self.tables.values():
            table.close()
        for handle in self.files.values():
            handle.close()
        self.files.clear()

    def __repr__(self) -> str:
        return f"CSVTables(log_dir={self.log_dir})"


class CSVTableLogger(CSVLogger):
    """TorchRL's CSV logger writing one table per group (:class:`CSVTables`) in ``log_dir``.

    ``log_metrics`` (and :func:`log_group`) writes its rows at once; values of single
    ``log_scalar`` calls fill the row of their step, written when the step changes, on
    ``flush()`` or on ``close()``.

    Args:
        exp_name: the experiment's name (the tables are not nested under it).
        log_dir: the tables' folder.
        resume_step, video_format, video_fps: see :class:`CSVTables`.

    Examples:
        >>> import csv, tempfile
        >>> logs = Path(tempfile.mkdtemp())
        >>> logger = CSVTableLogger("demo", logs)
        >>> _ = logger.log_metrics({"train/loss": 0.5, "train/q_mean": 2.0}, step=100)
        >>> logger.log_scalar("val/loss", 0.75, step=100)
        >>> logger.close()
        >>> sorted(path.name for path in logs.iterdir())
        ['train.csv', 'val.csv']
        >>> list(csv.DictReader(open(logs / "train.csv")))
        [{'step': '100', 'loss': '0.5', 'q_mean': '2.0'}]
    """

    experiment: CSVTables

    def __init__(
        self,
        exp_name: str,
        log_dir: str | os.PathLike,
        *,
        resume_step: int | None = None,
        video_format: str = "pt",
        video_fps: int = 30,
    ) -> None:
        self.resume_step = resume_step
        super().__init__(exp_name, str(log_dir), video_format=video_format, video_fps=video_fps)

    def _create_experiment(self) -> CSVTables:
        return CSVTables(
            self.log_dir,
            resume_step=self.resume_step,
            video_format=self.video_format,
            video_fps=self.video_fps,
        )

    def log_metrics(
        self,
        metrics: dict[str, Any] | TensorDictBase,
        step: int | None = None,
        *,
        keys_sep: str = "/",
    ) -> dict[str, Any]:
        """Log ``{"group/metric": value}`` as one row per group, written at once."""
        safe = super().log_metrics(metrics, step, keys_sep=keys_sep)
        self.experiment.flush()
        return safe

    def __repr__(self) -> str:
        return f"CSVTableLogger(exp_name={self.exp_name}, experiment={self.experiment!r})"


# -------------------------------------------------------------------- TensorBoard and W&B


class ResumableTensorboardLogger(TensorboardLogger):
    """TorchRL's TensorBoard logger, its ``SummaryWriter`` given ``purge_step``.

    TensorBoard hides the events of earlier event files in the same folder at steps
    ``>= purge_step``: those an interrupted run logged past the checkpoint it resumes from.

    Args:
        exp_name: the events' folder under ``log_dir``.
        log_dir: the parent folder.
        purge_step: the first step the run logs; ``None`` hides nothing.
    """

    def __init__(self, exp_name: str, log_dir: str | os.PathLike, *, purge_step: int | None):
        self.purge_step = purge_step
        super().__init__(exp_name=exp_name, log_dir=str(log_dir))

    def _create_experiment(self):
        from torch.utils.tensorboard import SummaryWriter

        folder = os.path.join(self.log_dir, self.exp_name)
        return SummaryWriter(log_dir=folder, purge_step=self.purge_step)


def wandb_run_id(log_dir: Path, resume_step: int | None) -> str:
    """The W&B run id of the run in ``log_dir``: the stored one on resume, else a new one.

    The id is kept in ``log_dir/wandb_run_id.txt``. A new run (``resume_step=None``) gets a
    new id, so it does not append to the W&B run of an earlier attempt.
    """
    path = Path(log_dir) / WANDB_ID_FILE
    if resume_step is not None and path.is_file() and (stored := path.read_text().strip()):
        return stored
    run_id = uuid.uuid4().hex[:12]  # W&B ids: letters and digits, unique in the project
    atomic_write_text(path, run_id + "\n")
    return run_id


# ---------------------------------------------------------------------------- the factory


def require_backend(backend: str) -> None:
    """Import the package of ``logger.backend``, or raise an ``ImportError`` that says how.

    :func:`make_logger` calls it; a recipe may call it first, to fail before any work.
    """
    if backend not in _PACKAGES:
        return
    module, install = _PACKAGES[backend]
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"logger.backend={backend} needs the {module!r} package, which is not installed. "
            f"Install it with: {install} (or log with logger=csv)."
        ) from err


def check_logger_config(cfg_logger: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The ``logger`` settings as plain values, checked with :data:`LOGGER_SETTINGS`.

    Raises:
        SettingsError: a setting is unknown, of the wrong type, or a W&B option is set
            for another backend; each problem is a line.

    Examples:
        >>> check_logger_config({"backend": "csv", "project": "p"})
        {'backend': 'csv', 'project': 'p'}
        >>> check_logger_config({"backend": "csv", "project": "p", "entity": "me"})
        Traceback (most recent call last):
        ...
        sorl_torchrl._validation.SettingsError: The logger config: 1 setting is not allowed:
          logger.entity: got 'me', allowed null unless the backend is wandb (...)
        Change each one to an allowed value.
    """
    if isinstance(cfg_logger, DictConfig):
        values = OmegaConf.to_container(cfg_logger, resolve=True)
    else:
        values = dict(cfg_logger)
    checked, problems = LOGGER_SETTINGS.collect(values, "logger.")
    if "backend" not in values:
        problems.append(("logger.backend", ValueError(f"missing; one of {LOGGER_BACKENDS}")))
    if problems:
        raise SettingsError("The logger config", [problem_line(*problem) for problem in problems])
    return checked


def make_logger(
    cfg_logger: DictConfig | Mapping[str, Any],
    run_dir: str | os.PathLike,
    experiment_name: str,
    resume_step: int | None = None,
) -> Logger:
    """The TorchRL logger of a run, writing under ``<run_dir>/logs``.

    Args:
        cfg_logger: the ``logger`` group: ``backend``, ``project`` and, for wandb,
            ``entity``, ``group``, ``tags``, ``mode``, ``name``, ``dir`` (``None``: not
            passed; ``name`` defaults to ``experiment_name``, ``dir`` to the logs folder).
        run_dir: the run's folder.
        experiment_name: the experiment's name (the dataset id in the recipes).
        resume_step: the update the run resumes from (its checkpoint's), or ``None`` for a
            new run. What an interrupted run logged past it does not show twice: CSV rows
            past it are dropped, TensorBoard purges the steps after it, W&B continues the
            stored run id (its history keeps the rows already sent).

    Raises:
        SettingsError: a bad setting (see :func:`check_logger_config`).
        ImportError: the backend's package is missing; the message says how to install it.

    Examples:
        >>> import tempfile
        >>> run_dir = Path(tempfile.mkdtemp())
        >>> logger = make_logger({"backend": "csv", "project": "demo"}, run_dir, "cube-task1")
        >>> log_group(logger, "train", {"loss_actor": 0.5}, step=100)
        >>> logger.close()
        >>> print((run_dir / "logs" / "train.csv").read_text(), end="")
        step,loss_actor
        100,0.5
    """
    values = check_logger_config(cfg_logger)
    if resume_step is not None and resume_step < 0:
        raise ValueError(f"resume_step must be None or >= 0, got {resume_step}.")
    backend, log_dir = values["backend"], Path(run_dir) / "logs"
    require_backend(backend)
    if backend == "csv":
        return CSVTableLogger(experiment_name, log_dir, resume_step=resume_step)
    if backend == "tensorboard":
        purge_step = 0 if resume_step is None else resume_step + 1
        return ResumableTensorboardLogger(experiment_name, log_dir, purge_step=purge_step)
    if backend == "wandb":
        passed = ("entity", "group", "tags", "mode")
        wandb_kwargs = {key: values[key] for key in passed if values.get(key) is not None}
        wandb_kwargs.update(
            project=values.get("project"), id=wandb_run_id(log_dir, resume_step), resume="allow"
        )
        return get_logger(
            "wandb",
            logger_name=values.get("dir") or str(log_dir),
            experiment_name=values.get("name") or experiment_name,
            wandb_kwargs=wandb_kwargs,
        )
    extra = {"trackio_kwargs": {"project": values.get("project")}} if backend == "trackio" else {}
    return get_logger(backend, logger_name=str(log_dir), experiment_name=experiment_name, **extra)


def log_group(logger: Logger, group: str, metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` as ``<group>/<name>`` at ``step``: one row of ``<group>.csv`` for CSV.

    Examples:
        >>> import tempfile
        >>> logger = CSVTableLogger("demo", tempfile.mkdtemp())
        >>> log_group(logger, "eval", {"success_k1_n1": 0.25, "success_k2_n1": 0.5}, step=1000)
        >>> print((Path(logger.log_dir) / "eval.csv").read_text(), end="")
        step,success_k1_n1,success_k2_n1
        1000,0.25,0.5
    """
    if metrics:
        logger.log_metrics({f"{group}/{name}": value for name, value in metrics.items()}, step=step)
