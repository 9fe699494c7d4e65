"""Every console command's exit status and messages, run as the console scripts run them.

Each command declared in ``pyproject.toml`` is started in a subprocess: ``--help`` (or a
tiny input) exits 0; a user error exits 2 with one paragraph on stderr and no traceback;
``--debug`` adds the traceback. No test trains a model beyond a couple of updates.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sorl_torchrl._cli import EXIT_FAILURE, EXIT_USER_ERROR, console_command

REPO = Path(__file__).resolve().parents[1]


def _console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command -> ``module:function``."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.]+:\w+)"', section, flags=re.M))


SCRIPTS = _console_scripts()


def _entry_point(command: str):
    module, function = SCRIPTS[command].split(":")
    return getattr(importlib.import_module(module), function)


def _wrapped(command: str) -> bool:
    return getattr(_entry_point(command), "command_name", None) == command


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _run(command: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``command ARGS`` as its console script runs it: ``sys.exit(main())``."""
    module, function = SCRIPTS[command].split(":")
    script = (
        f"import sys; from {module} import {function} as main; "
        f"sys.argv[0] = {command!r}; sys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(**env),
    )


def _assert_user_error(done: subprocess.CompletedProcess, command: str, fragment: str) -> None:
    """Status 2 and one paragraph ``<command>: error: ...`` naming ``fragment``, no trace."""
    assert done.returncode == EXIT_USER_ERROR, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    message = done.stderr[done.stderr.index(f"{command}: error: ") :].strip()
    assert fragment in message, message
    assert "\n\n" not in message, message  # one paragraph


def _train_param(*values):
    reason = "sorl_torchrl/recipes/train.py does not apply _cli.hydra_command yet"
    return pytest.param(
        *values, marks=pytest.mark.skipif(not _wrapped("sorl-train"), reason=reason)
    )


ARGPARSE_COMMANDS = ["sorl-evaluate", "sorl-results", "sorl-data", "sorl-smoke"]


def test_the_commands_tested_here_are_console_scripts():
    assert set(ARGPARSE_COMMANDS) | {"sorl-train"} <= set(SCRIPTS)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_command_reports_errors_through_the_shared_handler(command):
    if command not in ARGPARSE_COMMANDS and not _wrapped(command):
        pytest.skip(f"{SCRIPTS[command]} does not apply sorl_torchrl._cli yet")
    assert _wrapped(command)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_exits_0(command, tmp_path):
    done = _run(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def _parsers(command: str) -> list[argparse.ArgumentParser]:
    module = importlib.import_module(SCRIPTS[command].split(":")[0])
    parser = module.build_parser()
    subparsers = [
        choice
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action.choices.values()
    ]
    return [parser, *subparsers]


@pytest.mark.parametrize("command", ARGPARSE_COMMANDS)
def test_every_option_has_help_text(command):
    for parser in _parsers(command):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), (command, parser.prog, action.dest)
        assert "--debug" in parser.format_help(), parser.prog


# (command, its arguments, a fragment of the message); paths are relative to a tmp dir
USER_ERRORS = [
    ("sorl-evaluate", ["missing.pt"], "No checkpoint at missing.pt"),
    ("sorl-results", ["no-sweep"], "sweep dir no-sweep does not exist"),
    (
        "sorl-data",
        ["generate", "cube-single-play-v0", "--out-dir", "a-file/data", "--no-progress"],
        "a-file",
    ),
    ("sorl-smoke", ["--updates", "-1"], "updates must be an integer >= 0, got -1"),
    _train_param("sorl-train", ["num_updates=-5", "run_dir=run"], "num_updates: got -5"),
    _train_param("sorl-train", ["env=no-such-env"], "no-such-env"),
]


@pytest.mark.parametrize("command, args, fragment", USER_ERRORS)
def test_user_errors_exit_2_with_one_message(command, args, fragment, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    _assert_user_error(_run(command, *args, cwd=tmp_path), command, fragment)


# More user errors, through the same entry points called in this process (faster)
IN_PROCESS_USER_ERRORS = [
    ("sorl-evaluate", ["missing.pt", "--inference-steps", "3"], "must be a positive power of two"),
    ("sorl-evaluate", ["missing.pt", "--episodes", "0"], "episodes must be an integer >= 1"),
    ("sorl-evaluate", ["missing.pt", "--device", "gpu"], "device must be 'auto' or a torch"),
    ("sorl-data", ["generate", "antmaze-large-navigate-v0", "--out-dir", "."], "needs a trained"),
    ("sorl-data", ["generate", "cube-single-play-v0", "--workers", "0"], "workers must be at"),
    ("sorl-data", ["download", "cube-sextuple-play-v0"], "Unknown dataset"),
    ("sorl-results", ["a-file"], "sweep dir a-file does not exist (or is not a directory)"),
    ("sorl-smoke", ["--inference-steps", "3"], "inference_steps[0] must be a positive power"),
    ("sorl-smoke", ["--threads", "0"], "threads must be an integer >= 1, got 0"),
    ("sorl-smoke", ["--q-loss-coef", "nan"], "q_loss_coef must be a finite number >= 0"),
]


@pytest.mark.parametrize("command, args, fragment", IN_PROCESS_USER_ERRORS)
def test_more_user_errors_exit_2_with_one_message(
    command, args, fragment, tmp_path, monkeypatch, capsys
):
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.chdir(tmp_path)
    code = _entry_point(command)(args)
    err = capsys.readouterr().err
    done = subprocess.CompletedProcess(args, code, stdout="", stderr=err)
    _assert_user_error(done, command, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_evaluate_on_cuda_without_cuda_says_so(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not read: the device is checked first")
    done = _run("sorl-evaluate", "checkpoint.pt", "--device", "cuda", cwd=tmp_path)
    _assert_user_error(done, "sorl-evaluate", "CUDA is not available")
    assert "corrupt" not in done.stderr and "truncated" not in done.stderr


DEBUG_RUNS = [
    ("sorl-evaluate", ["missing.pt", "--debug"]),
    ("sorl-results", ["no-sweep", "--debug"]),
    ("sorl-data", ["--debug", "generate", "antmaze-large-navigate-v0", "--out-dir", "."]),
    ("sorl-smoke", ["--updates", "-1", "--debug"]),
    _train_param("sorl-train", ["num_updates=-5", "run_dir=run", "--debug"]),
]


@pytest.mark.parametrize("command, args", DEBUG_RUNS)
def test_debug_adds_the_traceback(command, args, tmp_path):
    done = _run(command, *args, cwd=tmp_path)
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-2000:]
    assert "Traceback (most recent call last)" in done.stderr
    assert f"{command}: error: " in done.stderr


def test_hydra_full_error_adds_the_traceback_too(tmp_path):
    done = _run("sorl-results", "no-sweep", cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert done.returncode == EXIT_USER_ERROR
    assert "Traceback (most recent call last)" in done.stderr


def test_success_exits_0(tmp_path):
    done = _run("sorl-data", "list", cwd=tmp_path)
    assert done.returncode == 0 and "cube-single-play-v0" in done.stdout.split()
    # two updates per model, then the table; k = 16 is beyond the trained 8 and warns
    args = ["--updates", "2", "--inference-steps", "1", "16", "--num-candidates", "1"]
    done = _run("sorl-smoke", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Share of actions" in done.stdout
    assert "StepsBeyondTrainingWarning: Sampling with inference_steps=16" in done.stderr


def test_an_unexpected_error_exits_1_with_a_hint(capsys):
    @console_command("demo")
    def main(argv=None):
        return 1 // 0

    assert main([]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("demo: unexpected error (ZeroDivisionError): integer division")
    assert "--debug" in err and "Traceback" not in err


# --------------------------------------------------------------------------- Hydra commands
HYDRA_APP = textwrap.dedent(
    """
    import hydra
    from sorl_torchrl._cli import hydra_command

    @hydra_command("demo-train")
    @hydra.main(version_base="1.3", config_path=None, config_name=None)
    def main(cfg):
        if cfg.get("fail") == "user":
            raise ValueError("num_updates: got -5, allowed an integer >= 0")
        if cfg.get("fail") == "bug":
            raise ZeroDivisionError("division by zero")
        print("trained")

    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="module")
def hydra_app(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hydra_app") / "app.py"
    path.write_text(HYDRA_APP)
    return path


def _hydra(app: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(app), *args],
        cwd=app.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(**env),
    )


def test_hydra_command_exit_statuses(hydra_app):
    done = _hydra(hydra_app)
    assert done.returncode == 0 and "trained" in done.stdout
    _assert_user_error(_hydra(hydra_app, "+fail=user"), "demo-train", "num_updates: got -5")
    # a bad override is Hydra's own error: a user error too
    _assert_user_error(_hydra(hydra_app, "fail"), "demo-train", "fail")
    bug = _hydra(hydra_app, "+fail=bug")
    assert bug.returncode == EXIT_FAILURE and "Traceback" not in bug.stderr
    assert "demo-train: unexpected error (ZeroDivisionError)" in bug.stderr


def test_hydra_command_debug_and_full_error_show_the_traceback(hydra_app):
    for done in (
        _hydra(hydra_app, "+fail=user", "--debug"),
        _hydra(hydra_app, "+fail=user", HYDRA_FULL_ERROR="1"),
    ):
        assert done.returncode == EXIT_USER_ERROR, done.stderr[-2000:]
        assert "Traceback (most recent call last)" in done.stderr
        assert "demo-train: error: num_updates: got -5" in done.stderr
