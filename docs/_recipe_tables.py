"""Markdown tables of the recipe config groups, rendered from the recipes' configs at build time.

``conf.py`` writes them to ``docs/_generated/`` and ``recipes.md`` includes them, so the
documented options are always the ones in the YAML files of ``sorl_torchrl/recipes/conf``.
The observation and action sizes of the env table come from the dataset spec of each env's
``name`` (:func:`sorl_torchrl.data.get_dataset_spec`), where the recipes read them too.
"""

from __future__ import annotations

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


def env_values(values: dict) -> dict:
    """An ``env/<name>.yaml`` mapping with the sizes of its dataset added."""
    spec = get_dataset_spec(f"{values['name']}-v0")
    return {**values, "observation_dim": spec.observation_dim, "action_dim": spec.action_dim}


def env_table(conf_dir: Path) -> str:
    """The ``env`` group: one row per ``env/<name>.yaml``, in name order."""
    rows = []
    for name, values in load_group(conf_dir, "env").items():
        values = env_values(values)
        row = [f"`{name}`" if key == "name" else _cell(values[key]) for _, key in ENV_COLUMNS[:-1]]
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


TABLES = {
    "recipe_envs.md": env_table,
    "recipe_networks.md": network_table,
    "recipe_loggers.md": logger_table,
}
