"""The recipes page documents the configs and commands that exist, with their values."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

from sorl_torchrl.data import get_dataset_spec

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "sorl_torchrl" / "recipes" / "conf"
PAGE = REPO / "docs" / "recipes.md"


def _load_tables():
    spec = importlib.util.spec_from_file_location(
        "_recipe_tables", REPO / "docs" / "_recipe_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load_tables()


def _rows(markdown: str) -> dict[str, list[str]]:
    """``{first cell without backticks: cells}`` of a Markdown table's body rows."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_env_table_has_every_env_config_with_its_values():
    rows = _rows(tables.env_table(CONF))
    files = sorted((CONF / "env").glob("*.yaml"))
    assert sorted(rows) == [p.stem for p in files]
    keys = [key for _, key in tables.ENV_COLUMNS]
    for path in files:
        values = yaml.safe_load(path.read_text())
        assert values["name"] == path.stem
        assert "observation_dim" not in values and "action_dim" not in values
        spec = get_dataset_spec(f"{path.stem}-v0")
        values.update(observation_dim=spec.observation_dim, action_dim=spec.action_dim)
        for cell, key in zip(rows[path.stem], keys, strict=True):
            if key is not None and key != "name":
                assert cell == str(values[key]), (path.name, key)
    assert rows["cube-single-play"][5:7] == ["28", "5"]  # OGBench's cube-single sizes


def test_env_table_follows_a_config_change(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    path = conf / "env" / "scene-play.yaml"
    path.write_text(path.read_text().replace("q_loss_coef: 100", "q_loss_coef: 123"))
    (conf / "env" / "puzzle-4x4-play.yaml").write_text(
        "# puzzle-4x4-play (OGBench singletask). Published SORL settings.\n"
        "name: puzzle-4x4-play\ntask: 3\ndiscount: 0.9\nq_agg: min\nq_loss_coef: 7\n"
        "success_timing: pre\n"
    )
    rows = _rows(tables.env_table(conf))
    assert rows["scene-play"][4] == "123"
    assert rows["puzzle-4x4-play"] == [
        "`puzzle-4x4-play`",
        "3",
        "0.9",
        "min",
        "7",
        "83",  # the sizes of the puzzle-4x4-play dataset
        "5",
        "pre",
        "published",
    ]


@pytest.mark.parametrize("name", ["network", "logger"])
def test_group_tables_have_every_option(name):
    render = {"network": tables.network_table, "logger": tables.logger_table}[name]
    assert sorted(_rows(render(CONF))) == sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def test_page_covers_every_group_and_single_file_config():
    page = PAGE.read_text()
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir()):
        assert f"### `{group}`" in page, group
        files = list((CONF / group).glob("*.yaml"))
        if group not in ("env", "network", "logger"):  # the others are shown verbatim
            for path in files:
                assert f"../sorl_torchrl/recipes/conf/{group}/{path.name}" in page, path
    assert "../sorl_torchrl/recipes/conf/train.yaml" in page


def test_page_names_every_switch_of_loss_optim_network():
    page = PAGE.read_text()
    switches = {
        "loss": ["next_action_grad", "actor_q_agg", "sc_target_network"],
        "optim": [
            "shared_optimizer",
            "actor_uses_pre_step_critic",
            "targets_track_pre_step_weights",
        ],
        "network": ["step_feature", "condition_on_steps"],
    }
    for group, keys in switches.items():
        options = yaml.safe_load(next((CONF / group).glob("*.yaml")).read_text())
        for key in keys:
            assert key in options, (group, key)
            assert f"`{group}.{key}`" in page, (group, key)


def test_page_documents_every_evaluate_option(capsys):
    from sorl_torchrl.recipes.evaluate import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    options = set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out)) - {"--help"}
    assert options
    page = PAGE.read_text()
    for option in sorted(options):
        assert f"`{option}" in page, option
