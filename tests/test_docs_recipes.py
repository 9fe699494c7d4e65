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
BASELINES = REPO / "docs" / "baselines.md"


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
    generic = []
    for path in files:
        values = yaml.safe_load(path.read_text())
        assert "observation_dim" not in values and "action_dim" not in values
        if values["name"] is None:  # the generic config: its sizes are its dataset's
            generic.append(path.stem)
            sizes = tables.FROM_THE_DATASET
            values.update(observation_dim=sizes, action_dim=sizes)
        else:
            assert values["name"] == path.stem
            spec = get_dataset_spec(f"{path.stem}-v0")
            values.update(observation_dim=spec.observation_dim, action_dim=spec.action_dim)
        for cell, key in zip(rows[path.stem], keys, strict=True):
            if key is not None and key != "name":
                assert cell == tables._cell(values[key]), (path.name, key)
    assert rows["cube-single-play"][5:7] == ["28", "5"]  # OGBench's cube-single sizes
    assert generic == ["dataset"]
    assert rows["dataset"][1] == "null"  # no task: the dataset is the whole problem
    assert rows["dataset"][-1] == tables.GENERIC
    assert list(rows)[-1] == "dataset"  # after the OGBench problems


def test_baselines_table_has_every_env_block_with_its_values():
    table = tables.baselines_table(CONF)
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    cells = {}
    for line in lines:
        env, algo, settings, source = (c.strip() for c in line.strip("|").split("|"))
        cells[env.strip("`"), algo.strip("`")] = (settings, source)
    expected = set()
    for path in sorted((CONF / "env").glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        blocks = [algo for algo in values if isinstance(values[algo], dict)]
        assert sorted(blocks) == sorted(tables.ENV_BLOCKS), path.name  # every env has all three
        for algo in blocks:
            expected.add((path.stem, algo))
            settings, source = cells[path.stem, algo]
            for key, value in values[algo].items():
                assert f"`{key}={tables._cell(value)}`" in settings, (path.name, algo, key)
            assert source, (path.name, algo)  # where the values come from
    assert set(cells) == expected


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


#: The groups whose options the pages show as generated tables, with their renderers.
TABLE_GROUPS = {
    "env": tables.env_table,
    "network": tables.network_table,
    "logger": tables.logger_table,
    "algo": tables.algo_table,
}


@pytest.mark.parametrize("name", ["network", "logger", "algo"])
def test_group_tables_have_every_option(name):
    render = TABLE_GROUPS[name]
    assert sorted(_rows(render(CONF))) == sorted(p.stem for p in (CONF / name).glob("*.yaml"))


def test_algo_table_has_each_options_loss_and_optim():
    rows = _rows(tables.algo_table(CONF))
    for path in sorted((CONF / "algo").glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        chosen = {k.strip("/"): v for entry in values["defaults"] for k, v in entry.items()}
        assert rows[path.stem][1:3] == [f"`{chosen['loss']}`", f"`{chosen['optim']}`"], path
        assert (CONF / "loss" / f"{chosen['loss']}.yaml").is_file(), path
        assert (CONF / "optim" / f"{chosen['optim']}.yaml").is_file(), path


def test_pages_include_every_generated_table():
    assert set(tables.TABLES) == {
        "recipe_envs.md",
        "recipe_networks.md",
        "recipe_loggers.md",
        "recipe_algorithms.md",
        "recipe_baselines.md",
    }
    pages = PAGE.read_text() + BASELINES.read_text()
    for name in tables.TABLES:
        assert f"```{{include}} _generated/{name}" in pages, name
    for name in ("recipe_envs.md", "recipe_networks.md", "recipe_loggers.md"):
        assert f"_generated/{name}" in PAGE.read_text(), name
    assert "_generated/recipe_algorithms.md" in PAGE.read_text()  # under ### `algo`


def test_page_covers_every_group_and_single_file_config():
    page = PAGE.read_text()
    # The config files are shown verbatim on the recipes page or, for the baselines' loss
    # and optim options, on the baselines page.
    shown = page + BASELINES.read_text()
    for group in sorted(p.name for p in CONF.iterdir() if p.is_dir()):
        assert f"### `{group}`" in page, group
        files = list((CONF / group).glob("*.yaml"))
        assert files, group
        if group not in TABLE_GROUPS:  # the others are shown verbatim
            for path in files:
                include = f"```{{literalinclude}} ../sorl_torchrl/recipes/conf/{group}/{path.name}"
                assert include in shown, path
    assert "../sorl_torchrl/recipes/conf/train.yaml" in page
    assert "{doc}`baselines`" in page


def test_page_names_every_switch_of_loss_optim_network():
    page = PAGE.read_text()
    # SORL's switches, read from SORL's own options (the baselines' loss and optim options
    # have switches of their own, documented in baselines.md).
    switches = {
        ("loss", "sorl.yaml"): ["next_action_grad", "actor_q_agg", "sc_target_network"],
        ("optim", "adam.yaml"): [
            "shared_optimizer",
            "actor_uses_pre_step_critic",
            "targets_track_pre_step_weights",
        ],
        ("network", "paper.yaml"): ["step_feature", "condition_on_steps"],
    }
    for (group, name), keys in switches.items():
        options = yaml.safe_load((CONF / group / name).read_text())
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
    # Each option is a row of the page's options table.
    rows = "\n".join(line for line in PAGE.read_text().splitlines() if line.startswith("| `--"))
    for option in sorted(options):
        assert re.search(rf"`{option}\b(?!-)", rows), option
