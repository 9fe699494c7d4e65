"""Markdown tables of the recipe config groups, rendered from the recipes' configs at build time.

``conf.py`` writes them to ``docs/_generated/`` and ``recipes.md`` and ``baselines.md``
include them, so the documented options are always the ones in the YAML files of
``sorl_torchrl/recipes/conf``. The observation and action sizes of the env table come from
the dataset spec of each env's ``name`` (:func:`sorl_torchrl.data.get_dataset_spec`), where
the recipes read them too; the generic ``env=dataset`` (``name: null``, for any
``data.dataset=<prefix>:<id>``) takes them from its dataset, and its row says so. The env
table shows SORL's settings; the per-algorithm blocks of the same files are in the
baselines' table. The baselines' table reads each env's per-algorithm blocks
(``fql:``, ``iql:``, ``rebrac:``) and the comment on each block's line, which says where its
values come from (``published``, ``default`` or ``placeholder``, then why).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sorl_torchrl.data import get_dataset_spec

#: Columns of the environment table: (heading, key in ``env/<name>.yaml`` or, for the sizes,
#: attribute of the dataset spec).
ENV_COLUMNS = (
    ("`env=`", "name"),
    ("default `env.task`", "task"),
    ("`discount`", "discount"),
    ("`q_agg`", "q_agg"),
    ("`q_loss_coef`", "q_loss_coef"),
    ("obs dim", "observation_dim"),
    ("action dim", "action_dim"),
    ("`success_timing`", "success_timing"),
    ("settings", None),
)

#: Columns of the network table: (heading, key in ``network/<name>.yaml``).
NETWORK_COLUMNS = (
    ("`network=`", None),
    ("`actor_cells`", "actor_cells"),
    ("`critic_cells`", "critic_cells"),
    ("`num_critics`", "num_critics"),
    ("`critic_layer_norm`", "critic_layer_norm"),
    ("`condition_on_steps`", "condition_on_steps"),
    ("`step_feature`", "step_feature"),
)


def load_group(conf_dir: Path, group: str) -> dict[str, dict]:
    """``{option name: its YAML mapping}`` for every file of a config group, by name."""
    return {
        path.stem: yaml.safe_load(path.read_text()) or {}
        for path in sorted((Path(conf_dir) / group).glob("*.yaml"))
    }


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if value and all(v == value[0] for v in value):
            return f"{len(value)} x {value[0]}"
        return " x ".join(str(v) for v in value)
    if value is None:
        return "null"
    return str(value)


def _provenance(path: Path) -> str:
    lines = path.read_text().splitlines()
    header = lines[0] if lines else ""
    return "published" if "Published" in header else "not in the paper"


def _table(columns, rows) -> str:
    lines = [
        "| " + " | ".join(heading for heading, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


#: The size cells of the generic env config (``name: null``), whose sizes are its dataset's.
FROM_THE_DATASET = "from `data.dataset`"

#: The settings cell of the generic env config.
GENERIC = "generic (any `data.dataset`)"


def env_values(values: dict) -> dict:
    """An ``env/<name>.yaml`` mapping with the sizes of its dataset added.

    The generic config (``name: null``) names no dataset: its sizes are those of the
    ``data.dataset`` a run trains on.
    """
    if values.get("name") is None:
        return {**values, "observation_dim": FROM_THE_DATASET, "action_dim": FROM_THE_DATASET}
    spec = get_dataset_spec(f"{values['name']}-v0")
    return {**values, "observation_dim": spec.observation_dim, "action_dim": spec.action_dim}


def _env_order(group: dict[str, dict]) -> list[str]:
    """The env options in name order, the generic one (``name: null``) last."""
    return sorted(group, key=lambda name: (group[name].get("name") is None, name))


def env_table(conf_dir: Path) -> str:
    """The ``env`` group: one row per ``env/<name>.yaml``, in name order, the generic one last.

    The columns are SORL's settings; the per-algorithm blocks (``fql:``, ``iql:``,
    ``rebrac:``) are the baselines' table's (:func:`baselines_table`).
    """
    group = load_group(conf_dir, "env")
    rows = []
    for name in _env_order(group):
        values = env_values(group[name])
        row = [f"`{name}`" if key == "name" else _cell(values[key]) for _, key in ENV_COLUMNS[:-1]]
        if group[name].get("name") is None:
            row.append(GENERIC)
        else:
            row.append(_provenance(Path(conf_dir) / "env" / f"{name}.yaml"))
        rows.append(row)
    return _table(ENV_COLUMNS, rows)


def network_table(conf_dir: Path) -> str:
    """The ``network`` group: one row per ``network/<name>.yaml``, in name order."""
    rows = [
        [f"`{name}`"] + [_cell(values[key]) for _, key in NETWORK_COLUMNS[1:]]
        for name, values in load_group(conf_dir, "network").items()
    ]
    return _table(NETWORK_COLUMNS, rows)


def logger_table(conf_dir: Path) -> str:
    """The ``logger`` group: option, torchrl backend and project name."""
    rows = [
        [f"`{name}`", f"`{values['backend']}`", f"`{values.get('project', '')}`"]
        for name, values in load_group(conf_dir, "logger").items()
    ]
    return _table((("`logger=`", None), ("backend", None), ("project", None)), rows)


#: The env config's per-algorithm blocks, in the order the baselines' table lists them.
ENV_BLOCKS = ("fql", "iql", "rebrac")


def block_sources(path: Path) -> dict[str, str]:
    """``{block: the comment on its line}`` for the top-level blocks of a YAML file.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "env.yaml"
        >>> _ = path.write_text("name: x\\nfql:     # published (FQL README)\\n  alpha: 10\\n")
        >>> block_sources(path)
        {'fql': 'published (FQL README)'}
    """
    found = re.findall(r"^([A-Za-z_]\w*):\s*#\s*(.+?)\s*$", Path(path).read_text(), re.M)
    return dict(found)


def baselines_table(conf_dir: Path) -> str:
    """The baselines' per-environment settings: one row per env and algorithm block."""
    group = load_group(conf_dir, "env")
    rows = []
    for name in _env_order(group):
        values = group[name]
        sources = block_sources(Path(conf_dir) / "env" / f"{name}.yaml")
        if values.get("name") is None:  # the generic config: not tuned for any dataset
            sources = {algo: sources.get(algo, GENERIC) for algo in values}
        for algo in ENV_BLOCKS:
            if algo not in values:
                continue
            settings = ", ".join(f"`{k}={_cell(v)}`" for k, v in values[algo].items())
            rows.append([f"`{name}`", f"`{algo}`", settings, sources.get(algo, "")])
    columns = (("`env=`", None), ("`algo=`", None), ("settings", None), ("source", None))
    return _table(columns, rows)


def _defaults(values: dict) -> dict[str, str]:
    """``{group: option}`` of a config's defaults list (``- /loss: fql`` -> ``loss: fql``)."""
    chosen = {}
    for entry in values.get("defaults") or []:
        if isinstance(entry, dict):
            for group, option in entry.items():
                chosen[group.strip("/").removeprefix("override ").strip("/")] = option
    return chosen


def _description(path: Path) -> str:
    """The comment lines that open a config file (without Hydra's ``@package`` line)."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def algo_table(conf_dir: Path) -> str:
    """The ``algo`` group: each option's loss and optim groups, its ``k`` and what it is."""
    rows = []
    for name, values in load_group(conf_dir, "algo").items():
        chosen = _defaults(values)
        steps = (values.get("eval") or {}).get("inference_steps")
        rows.append(
            [
                f"`{name}`",
                f"`{chosen.get('loss', '')}`",
                f"`{chosen.get('optim', '')}`",
                "any (`eval.inference_steps`)" if steps is None else f"`{steps}` only",
                _description(Path(conf_dir) / "algo" / f"{name}.yaml"),
            ]
        )
    columns = (
        ("`algo=`", None),
        ("`loss=`", None),
        ("`optim=`", None),
        ("`k`", None),
        ("what it trains", None),
    )
    return _table(columns, rows)


TABLES = {
    "recipe_envs.md": env_table,
    "recipe_networks.md": network_table,
    "recipe_loggers.md": logger_table,
    "recipe_algorithms.md": algo_table,
    "recipe_baselines.md": baselines_table,
}
