"""The deploy page's toy example and its commands run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import torch

from sorl_torchrl.deploy import budget, export

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
COMMANDS = {"sorl-export": export.main, "sorl-budget": budget.main}


def _steps() -> list[tuple[str, str]]:
    """The page's code, in order: ("python", block) and ("command", line) on the toy model."""
    steps = []
    for language, body in re.findall(r"```(python|bash)\n(.*?)```", PAGE.read_text(), re.S):
        if language == "python":
            if "runs/" not in body:  # the first block loads a run's checkpoint (not shipped)
                steps.append(("python", body))
            continue
        for line in body.splitlines():
            command = line.split("#")[0].strip()
            if " toy.pt " in f"{command} " and "--latency " not in f"{command} ":
                steps.append(("command", command))
    return steps


def test_toy_example_and_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    steps = _steps()
    assert [kind for kind, _ in steps] == ["python", "command", "python", "command"]
    namespace: dict = {}
    for kind, code in steps:
        if kind == "python":
            exec(compile(code, str(PAGE), "exec"), namespace)
            continue
        name, *argv = shlex.split(code)
        assert COMMANDS[name](argv) in (0, 1), code  # 1: a budget that nothing meets
    printed = capsys.readouterr().out
    plus, minus = (float(x) for x in re.findall(r"mode (\d\.\d\d)", printed))
    assert plus > minus  # SORL with a verifier prefers the rewarded mode
    assert "max |action difference|" in printed and "ranked by latency alone" in printed
    assert namespace["action"].shape == torch.Size([1, 2])
    assert (tmp_path / "budget" / "budget_cpu_batch1.json").is_file()
