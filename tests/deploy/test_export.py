"""sorl-export: the whole policy step as a torch.export program that needs nothing of ours."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from deploy_helpers import ACT, OBS, write_checkpoint

from sorl_torchrl import VerifierSampler
from sorl_torchrl.deploy import export_policy, load_program
from sorl_torchrl.deploy.export import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "checkpoint.pt"
    actor, critic = write_checkpoint(path)
    return path, VerifierSampler(actor, critic, q_agg="min")


@pytest.mark.parametrize("batch", [1, 5])
def test_program_actions_equal_the_eager_samplers_for_the_same_noise(trained, tmp_path, batch):
    path, eager = trained
    exported = export_policy(
        path, tmp_path / "policy.pt2", inference_steps=4, num_candidates=8, batch=batch
    )
    program = torch.export.load(exported.path).module()
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        observation = torch.randn(batch, OBS, generator=generator)
        noise = torch.randn(batch, 8, ACT, generator=generator)
        expected, _, _ = eager.select(observation, num_candidates=8, inference_steps=4, noise=noise)
        torch.testing.assert_close(program(observation, noise), expected)
    assert exported.size_bytes == exported.path.stat().st_size > 0


def test_one_candidate_program_is_plain_sampling(trained, tmp_path):
    path, eager = trained
    exported = export_policy(path, tmp_path / "k2.pt2", inference_steps=2, num_candidates=1)
    observation, noise = torch.randn(1, OBS), torch.randn(1, 1, ACT)
    with torch.no_grad():
        expected = eager.actor.sample(observation, 2, noise[:, 0])
    program = torch.export.load(exported.path).module()
    torch.testing.assert_close(program(observation, noise), expected)


def test_program_that_draws_its_noise_matches_the_eager_sampler_for_the_same_seed(
    trained, tmp_path
):
    path, eager = trained
    exported = export_policy(
        path, tmp_path / "sample.pt2", inference_steps=2, num_candidates=4, batch=3, noise="sample"
    )
    program, metadata = load_program(exported.path)
    assert list(metadata["inputs"]) == ["observation"]
    observation = torch.randn(3, OBS)
    torch.manual_seed(11)
    expected, _, _ = eager.select(observation, num_candidates=4, inference_steps=2)
    torch.manual_seed(11)
    torch.testing.assert_close(program.module()(observation), expected)


def test_program_runs_in_a_process_that_imports_nothing_of_the_package(trained, tmp_path):
    path, eager = trained
    exported = export_policy(
        path, tmp_path / "policy.pt2", inference_steps=8, num_candidates=16, batch=2
    )
    observation, noise = torch.randn(2, OBS), torch.randn(2, 16, ACT)
    torch.save({"observation": observation, "noise": noise}, tmp_path / "inputs.pt")
    code = (
        "import json, sys, torch\n"
        f"inputs = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        "extra = {'sorl_torchrl.json': ''}\n"
        f"program = torch.export.load({str(exported.path)!r}, extra_files=extra).module()\n"
        "action = program(inputs['observation'], inputs['noise'])\n"
        f"torch.save(action, {str(tmp_path / 'action.pt')!r})\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] == 'sorl_torchrl')\n"
        "print(json.dumps({'ours': ours, 'meta': json.loads(extra['sorl_torchrl.json'])}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["ours"] == []
    assert report["meta"]["inputs"] == {"observation": [2, OBS], "noise": [2, 16, ACT]}
    assert (report["meta"]["inference_steps"], report["meta"]["num_candidates"]) == (8, 16)
    expected, _, _ = eager.select(observation, num_candidates=16, inference_steps=8, noise=noise)
    torch.testing.assert_close(torch.load(tmp_path / "action.pt"), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inference_steps": 3, "num_candidates": 4}, "power of two"),
        ({"inference_steps": 2, "num_candidates": 0}, "num_candidates must be a positive int"),
        ({"inference_steps": 2, "num_candidates": 4, "batch": 0}, "batch must be a positive"),
        ({"inference_steps": 2, "num_candidates": 4, "noise": "seed"}, "noise must be one of"),
    ],
)
def test_bad_settings_are_refused_at_export_time(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_policy(trained[0], tmp_path / "bad.pt2", **kwargs)
    assert not (tmp_path / "bad.pt2").exists()


def test_cli_writes_checks_and_reports_errors_without_a_traceback(trained, tmp_path, capsys):
    out = tmp_path / "cli.pt2"
    argv = [str(trained[0]), "-k", "2", "-n", "4", "--batch", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed and out.is_file()
    difference = re.search(r"max \|action difference\| (\S+)", printed).group(1)
    assert float(difference) < 1e-5  # float rounding only: the same candidates were chosen
    assert main([*argv[:-1], str(tmp_path / "sample.pt2"), "--noise", "sample"]) == 0
    printed = capsys.readouterr().out
    assert float(re.search(r"max \|action difference\| (\S+)", printed).group(1)) < 1e-5
    assert main([*argv[:2], "3", *argv[3:]]) == 2
    captured = capsys.readouterr()
    assert "sorl-export: error: inference_steps must be a positive power of two" in captured.err
    assert "Traceback" not in captured.err
    assert main([str(tmp_path / "none.pt"), *argv[1:]]) == 2
    assert "No checkpoint at" in capsys.readouterr().err


def test_load_program_refuses_other_files(tmp_path):
    other = tmp_path / "other.pt2"
    module = torch.nn.Linear(2, 2)
    torch.export.save(torch.export.export(module, (torch.zeros(1, 2),)), other)
    with pytest.raises(ValueError, match="not one sorl-export wrote"):
        load_program(other)
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ValueError, match="is not a torch.export program"):
        load_program(tmp_path / "junk.pt2")


@pytest.mark.slow
def test_aoti_package_gives_the_same_actions(trained, tmp_path):
    from torch._inductor import aoti_load_package

    path, eager = trained
    exported = export_policy(
        path,
        tmp_path / "policy.pt2",
        inference_steps=4,
        num_candidates=8,
        aoti=tmp_path / "policy_aoti.pt2",
    )
    runner = aoti_load_package(str(exported.aoti_path))
    observation, noise = torch.randn(1, OBS), torch.randn(1, 8, ACT)
    expected, _, _ = eager.select(observation, num_candidates=8, inference_steps=4, noise=noise)
    torch.testing.assert_close(runner(observation, noise), expected, rtol=1e-5, atol=1e-5)
