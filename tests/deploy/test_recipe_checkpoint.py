"""A checkpoint the training recipe wrote loads safely and becomes a policy (slow: trains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from sorl_torchrl import VerifierSampler, load_policy
from sorl_torchrl.data import generate_dataset
from sorl_torchrl.deploy.budget import main as budget_main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_recipe_checkpoint_loads_with_weights_only_and_feeds_the_budget(tmp_path, capsys):
    generate_dataset(
        "cube-single-play-v0",
        out_dir=tmp_path / "data",
        num_episodes=3,
        num_val_episodes=1,
        episode_length=120,
        seed=0,
        progress=False,
    )
    run_dir = tmp_path / "run"
    overrides = [
        "network=tiny",
        f"data.root={tmp_path / 'data'}",
        f"run_dir={run_dir}",
        "num_updates=4",
        "batch_size=32",
        "log_interval=2",
        "val_interval=0",
        "checkpoint_interval=0",
        "eval.interval=0",
        "eval.inference_steps=[1,2]",
        "eval.num_candidates=[1,2]",
        "eval.num_episodes=1",
        "eval.max_episode_steps=5",
        "progress=false",
        "threads=1",
        "compile=false",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "sorl_torchrl.recipes.train", *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # no allowlist needed
    assert payload["state"]["step"] == 4
    policy = load_policy(run_dir / "checkpoint.pt", inference_steps=2, num_candidates=2)
    assert isinstance(policy, VerifierSampler)
    out = policy(TensorDict(observation=torch.randn(3, 28), batch_size=[3]))
    assert out["action"].shape == (3, 5)
    argv = [str(run_dir / "checkpoint.pt"), "--latency-ms", "1e6", "--modes", "eager"]
    assert budget_main([*argv, "--repeats", "3"]) == 0
    report = json.loads((run_dir / "budget" / "budget_cpu_batch1.json").read_text())
    grid = json.loads((run_dir / "results.json").read_text())["grid"]
    expected = {(r["inference_steps"], r["num_candidates"]): r["success_rate"] for r in grid}
    got = {(c["inference_steps"], c["num_candidates"]): c["success_rate"] for c in report["cells"]}
    assert got == expected
    assert "Success: the final evaluation in" in capsys.readouterr().out
