"""load_policy: a checkpoint as a ready TorchRL policy, from its own config, safely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from deploy_helpers import ACT, OBS, run_config, write_checkpoint
from tensordict import TensorDict

from sorl_torchrl import ShortcutActor, VerifierSampler, load_policy
from sorl_torchrl.checkpoint import CheckpointError, save_checkpoint
from sorl_torchrl.deploy import load_networks

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "checkpoint.pt"
    actor, critic = write_checkpoint(path)
    return path, actor, critic


def test_policy_picks_the_trained_networks_best_candidate_for_the_same_noise(trained):
    path, actor, critic = trained
    policy = load_policy(path, inference_steps=4, num_candidates=8)
    assert isinstance(policy, VerifierSampler)
    assert (policy.inference_steps, policy.num_candidates, policy.q_agg) == (4, 8, "min")
    observation = torch.randn(6, OBS)
    noise = torch.randn(6, 8, ACT)
    # Independent expectation: the trained originals, by hand. Sample every candidate with
    # 4 Euler steps, score with the min over members of Q(s, a, k=4), keep the argmax.
    with torch.no_grad():
        candidates = actor.sample(observation.unsqueeze(1), 4, noise)
        values = critic.values(observation.unsqueeze(1).expand(6, 8, OBS), candidates, 4.0)
        best = values.amin(dim=0).squeeze(-1).argmax(dim=-1)
    expected = candidates[torch.arange(6), best]
    action, _, _ = policy.select(observation, noise=noise)
    torch.testing.assert_close(action, expected, rtol=0, atol=0)


def test_one_candidate_is_the_bare_actor_with_its_default_steps(trained):
    path, actor, _ = trained
    policy = load_policy(path, inference_steps=2, num_candidates=1)
    assert isinstance(policy, ShortcutActor) and policy.inference_steps == 2
    observation, noise = torch.randn(3, OBS), torch.randn(3, ACT)
    with torch.no_grad():
        expected = actor.sample(observation, 2, noise)
    torch.testing.assert_close(policy.sample(observation, noise=noise), expected, rtol=0, atol=0)
    td = policy(TensorDict(observation=observation, batch_size=[3]))
    assert td["action"].shape == (3, ACT) and td["action"].abs().max() <= 1


def test_loaded_networks_are_frozen_in_eval_mode_and_compile_gives_a_sampler(trained):
    path, _, _ = trained
    networks = load_networks(path)
    params = list(networks.actor.parameters()) + list(networks.critic.parameters())
    assert not any(p.requires_grad for p in params)
    assert not networks.actor.training and not networks.critic.training
    assert networks.step == 2
    policy = load_policy(path, num_candidates=1, compile=True)
    assert isinstance(policy, VerifierSampler) and policy.compile_mode == "default"


def test_loading_leaves_the_callers_random_stream_alone(trained):
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    load_policy(trained[0], inference_steps=2, num_candidates=4)
    assert torch.equal(torch.rand(4), expected)


def test_toy_sized_checkpoint_needs_no_dataset(tmp_path):
    config = run_config(sizes={"observation_dim": 1, "action_dim": 2}, env={})
    write_checkpoint(tmp_path / "toy.pt", config)
    policy = load_policy(tmp_path / "toy.pt", inference_steps=1, num_candidates=4)
    assert policy(TensorDict(observation=torch.zeros(2, 1), batch_size=[2]))["action"].shape == (
        2,
        2,
    )


def test_load_policy_imports_neither_hydra_nor_the_recipes(trained):
    code = (
        "import sys; from sorl_torchrl import load_policy; "
        f"load_policy({str(trained[0])!r}, inference_steps=2, num_candidates=4); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf') "
        "or m.startswith('sorl_torchrl.recipes')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inference_steps": 3}, "power of two"),
        ({"num_candidates": 0}, "num_candidates must be"),
        ({"device": "gpu"}, "device must be .auto. or a torch device"),
        ({"device": "cuda:7"}, "cuda:7"),
        ({"compile": "fastest"}, "compile must be True, False or a torch.compile mode"),
    ],
)
def test_bad_arguments_are_clear_errors(trained, kwargs, message):
    if kwargs.get("device") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match=message):
        load_policy(trained[0], **kwargs)


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path):
    write_checkpoint(tmp_path / "idql.pt", run_config(algo="idql"))
    with pytest.raises(CheckpointError, match="algo='idql'.*loads bc, fql, iql, rebrac, sorl"):
        load_policy(tmp_path / "idql.pt")


def test_weights_of_other_networks_are_named(tmp_path, trained):
    bigger = run_config()
    bigger["network"]["actor_cells"] = [32, 16]
    state = torch.load(trained[0], weights_only=True)["state"]
    save_checkpoint(tmp_path / "edited.pt", {**state, "config": bigger})
    with pytest.raises(
        CheckpointError,
        match=r"(?s)do not fit.*network\.0\.bias: checkpoint \(16,\), model \(32,\)",
    ):
        load_policy(tmp_path / "edited.pt")


def test_a_config_that_builds_nothing_is_a_checkpoint_error(tmp_path, trained):
    state = torch.load(trained[0], weights_only=True)["state"]
    config = run_config()
    del config["network"]["num_critics"]
    save_checkpoint(tmp_path / "partial.pt", {**state, "config": config})
    with pytest.raises(CheckpointError, match="config.network lacks num_critics"):
        load_policy(tmp_path / "partial.pt")
    save_checkpoint(tmp_path / "bare.pt", {"step": 1})
    with pytest.raises(CheckpointError, match="records no run config"):
        load_policy(tmp_path / "bare.pt")


def test_corrupt_foreign_and_unsafe_files_are_refused(tmp_path, trained):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained[0].read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"weight": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a sorl-torchrl checkpoint"):
        load_policy(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "sorl-torchrl-checkpoint/2", "state": {"p": Path("x")}}, unsafe)
    with pytest.raises(CheckpointError, match=r"safe load refuses \(pathlib"):
        load_policy(unsafe)
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_policy(tmp_path / "missing.pt")
