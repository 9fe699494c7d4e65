"""validate_config: every setting the recipes read, checked before any work, all at once."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from recipe_helpers import compose_train

from sorl_torchrl._validation import SettingsError
from sorl_torchrl.recipes.config_checks import validate_config


def _config(tmp_path, *overrides: str):
    return compose_train([f"run_dir={tmp_path / 'run'}", *overrides])


def _problems(cfg) -> list[str]:
    with pytest.raises(SettingsError) as info:
        validate_config(cfg)
    return info.value.problems


@pytest.mark.parametrize(
    "overrides",
    [[], ["+experiment=demo"], ["+experiment=paper"], ["network=tiny", "compile=false"]],
)
def test_the_shipped_configs_pass(tmp_path, overrides):
    cfg = _config(tmp_path, *overrides)
    before = OmegaConf.to_yaml(cfg)
    validate_config(cfg)
    assert OmegaConf.to_yaml(cfg) == before  # no side effect on the config
    assert not (tmp_path / "run").exists()  # nor on the disk


# (override, the one line the error must contain)
CASES = [
    ("num_updates=-5", "num_updates: got -5, allowed an integer >= 0"),
    ("num_updates=2.5", "num_updates: got 2.5, allowed an integer >= 0"),
    ("batch_size=0", "batch_size: got 0, allowed an integer >= 1"),
    ("batch_size=abc", "batch_size: got 'abc', allowed an integer >= 1"),
    ("log_interval=0", "log_interval: got 0, allowed an integer >= 1"),
    ("val_interval=-1", "val_interval: got -1, allowed an integer >= 0 (0: no validation)"),
    ("val_batches=0", "val_batches: got 0, allowed an integer >= 1"),
    (
        "checkpoint_interval=-10",
        "checkpoint_interval: got -10, allowed an integer >= 0 (0: only the final checkpoint)",
    ),
    ("threads=0", "threads: got 0, allowed None or an integer >= 1 (None: torch's default)"),
    ("threads=1.5", "threads: got 1.5, allowed None or an integer >= 1"),
    ("seed=-1", "seed: got -1, allowed an integer in [0, 4294967295]"),
    ("matmul_precision=low", "matmul_precision: got 'low', allowed one of 'highest', 'high'"),
    ("resume=maybe", "resume: got 'maybe', allowed one of True, False, 'auto'"),
    ("resume=1", "resume: got 1, allowed one of True, False, 'auto'"),
    ("progress=1", "progress: got 1, allowed one of True, False"),
    ("on_divergence=ignore", "on_divergence: got 'ignore', allowed one of 'stop', 'continue'"),
    ("device=gpu", "device: got 'gpu', allowed 'auto' or a torch device such as 'cpu'"),
    ("compile=fastest", "compile: compile must be True, False or a torch.compile mode"),
    ("env.name=nope", "env.name: Unknown env.name 'nope'."),
    ("env.task=7", "env.task: env.task must be 1-5, got 7."),
    ("env.task=two", "env.task: got 'two', allowed None or an integer"),
    ("env.success_timing=mid", "env.success_timing: got 'mid', allowed one of 'pre', 'post'"),
    (
        "env.discount=1.5",
        "loss.discount (= ${env.discount}): got 1.5, allowed a finite number in [0, 1]",
    ),
    ("loss.discount=-0.5", "loss.discount: got -0.5, allowed a finite number in [0, 1]"),
    ("loss.q_loss_coef=nan", "loss.q_loss_coef: got nan, allowed a finite number >= 0"),
    ("loss.alpha=-1", "loss.alpha: got -1, allowed a finite number >= 0"),
    ("loss.time_epsilon=1", "loss.time_epsilon: got 1, allowed a finite number in [0, 1)"),
    (
        "loss.discretization_steps=6",
        "loss.discretization_steps: got 6, allowed a power of two >= 2",
    ),
    ("loss.max_bptt_steps=16", "loss.max_bptt_steps: got 16, allowed a power of two <= "),
    ("loss.actor_q_agg=max", "loss.actor_q_agg: got 'max', allowed one of 'mean', 'min', None"),
    ("+loss.alhpa=1", "loss.alhpa: not a setting (known: discount, q_agg"),
    ("optim.lr=0", "optim.lr: got 0, allowed a finite number > 0"),
    ("optim.tau=2", "optim.tau: got 2, allowed a finite number in (0, 1]"),
    (
        "optim.grad_clip_norm=-1",
        "optim.grad_clip_norm: got -1, allowed None or a finite number >= 0 (None or 0: no "
        "clipping)",
    ),
    ("optim.shared_optimizer=yes", "optim.shared_optimizer: got 'yes', allowed one of True"),
    ("network.actor_cells=[64,0]", "network.actor_cells[1]: got 0, allowed an integer >= 1"),
    ("network.num_critics=0", "network.num_critics: got 0, allowed an integer >= 1"),
    ("network.step_feature=sqrt", "network.step_feature: got 'sqrt', allowed one of 'steps'"),
    ("eval.interval=-1", "eval.interval: got -1, allowed an integer >= 0 (0: only at the end)"),
    ("eval.inference_steps=[1,3]", "eval.inference_steps[1]: got 3, allowed a positive power"),
    ("eval.inference_steps=[]", "eval.inference_steps: got [], allowed a non-empty list"),
    ("eval.num_candidates=[0]", "eval.num_candidates[0]: got 0, allowed an integer >= 1"),
    ("eval.num_episodes=0", "eval.num_episodes: got 0, allowed an integer >= 1"),
    ("eval.max_episode_steps=0", "eval.max_episode_steps: got 0, allowed None or an integer"),
    ("eval.inference_steps=[3]", "eval.inference_steps[0]: got 3, allowed a positive power"),
    ("eval.inference_steps=4", "eval.inference_steps: got 4, allowed a non-empty list"),
    ("eval.num_candidates=[1.5]", "eval.num_candidates[0]: got 1.5, allowed an integer >= 1"),
    ("eval.num_episodes=2.5", "eval.num_episodes: got 2.5, allowed an integer >= 1"),
    ("eval.seed=-1", "eval.seed: got -1, allowed an integer in [0, 4294967295]"),
    ("eval.interval=1.5", "eval.interval: got 1.5, allowed an integer >= 0"),
    ("eval.num_envs=0", "eval.num_envs: got 0, allowed an integer >= 1"),
    ("eval.num_envs=null", "eval.num_envs: got None, allowed an integer >= 1"),
    ("~eval.num_envs", "eval.num_envs: missing (the recipes read it)"),
    ("eval.parallel=1", "eval.parallel: got 1, allowed one of True, False"),
    ("data.workers=0", "data.workers: got 0, allowed an integer >= 1"),
    ("data.num_episodes=0", "data.num_episodes: got 0, allowed None or an integer >= 1"),
    ("data.prefetch=0", "data.prefetch: got 0, allowed None or an integer >= 1"),
    ("data.generate_if_missing=maybe", "data.generate_if_missing: got 'maybe', allowed one of"),
    ("logger.backend=paper", "logger.backend: got 'paper', allowed one of 'csv'"),
]


@pytest.mark.parametrize("override, line", CASES, ids=[case[0] for case in CASES])
def test_each_bad_setting_is_named_with_its_range(tmp_path, override, line):
    problems = _problems(_config(tmp_path, override))
    assert len(problems) == 1, problems
    assert problems[0].startswith(line), problems


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_cpu_machine(tmp_path):
    (problem,) = _problems(_config(tmp_path, "device=cuda"))
    assert problem.startswith("device: got 'cuda', allowed a device this machine has")


def test_all_problems_in_one_error(tmp_path):
    cfg = _config(tmp_path, "num_updates=-5", "optim.grad_clip_norm=-1", "eval.num_episodes=0")
    with pytest.raises(ValueError) as info:  # a ValueError, for every caller
        validate_config(cfg)
    text = str(info.value)
    assert text.startswith("The config: 3 settings are not allowed:")
    for key in ("num_updates:", "optim.grad_clip_norm:", "eval.num_episodes:"):
        assert f"\n  {key}" in text


def test_missing_keys_and_groups(tmp_path):
    cfg = _config(tmp_path)
    with open_dict(cfg):
        del cfg["batch_size"]
        del cfg.eval["num_episodes"]
        del cfg["data"]
    problems = _problems(cfg)
    assert "batch_size: missing (the recipes read it)" in problems
    assert "eval.num_episodes: missing (the recipes read it)" in problems
    assert any(line.startswith("data: missing or not a group") for line in problems)


def test_a_value_that_cannot_be_resolved(tmp_path):
    cfg = compose_train([])  # run_dir is ${hydra:runtime.output_dir}: no Hydra run here
    assert any(line.startswith("run_dir: cannot be read") for line in _problems(cfg))
