"""algo=sorl|fql|iql|rebrac|bc: one recipe, each algorithm's settings, checks and modules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from helpers import make_batch
from recipe_helpers import CONF_DIR, compose_train, tiny_overrides

from sorl_torchrl._validation import SettingsError
from sorl_torchrl.modules import GaussianActor, OneStepPolicy, ShortcutActor, TanhActor
from sorl_torchrl.modules.best_of_n import BestOfNSampler, has_inference_steps
from sorl_torchrl.objectives import JointUpdateStep, SORLUpdateStep
from sorl_torchrl.recipes.algorithms import ALGORITHMS, build_algorithm
from sorl_torchrl.recipes.common import build_modules
from sorl_torchrl.recipes.config_checks import validate_config
from sorl_torchrl.recipes.runtime import Runtime
from sorl_torchrl.recipes.train import run

CPU = Runtime(torch.device("cpu"), None, "eager", False, None)
POLICIES = {
    "sorl": ShortcutActor,
    "fql": OneStepPolicy,
    "iql": GaussianActor,
    "rebrac": TanhActor,
    "bc": ShortcutActor,
}
SIZES = {"cube-single-play": (28, 5), "antmaze-large-navigate": (29, 8)}


def env_file(env: str) -> dict:
    return yaml.safe_load((Path(CONF_DIR) / "env" / f"{env}.yaml").read_text())


def problems(cfg) -> list[str]:
    try:
        validate_config(cfg)
    except SettingsError as error:
        return error.problems
    return []


def batch(obs_dim: int, act_dim: int) -> object:
    data = make_batch(16, obs_dim, act_dim)
    data["next", "action"] = torch.rand(16, act_dim) * 2 - 1
    return data


def test_the_algo_group_has_every_algorithm():
    assert sorted(p.stem for p in (Path(CONF_DIR) / "algo").glob("*.yaml")) == sorted(ALGORITHMS)


@pytest.mark.parametrize("env", sorted(SIZES))
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_builds_with_its_published_settings(algo, env):
    cfg = compose_train([f"algo={algo}", f"env={env}", "network=tiny"])
    assert cfg.algo.name == algo
    modules = build_algorithm(cfg, CPU)
    assert modules.name == algo and isinstance(modules.policy, POLICIES[algo])
    assert (modules.policy.observation_dim, modules.policy.action_dim) == SIZES[env]
    step = SORLUpdateStep if algo == "sorl" else JointUpdateStep
    assert type(modules.update) is step
    assert modules.has_steps == has_inference_steps(modules.policy) == (algo in ("sorl", "bc"))
    # the loss has the env file's values, read here from the YAML itself
    values = env_file(env)
    sorl_keys = ("discount", "q_agg", "q_loss_coef")
    block = {
        "sorl": {key: values[key] for key in sorl_keys},
        "bc": {key: values[key] for key in sorl_keys[:2]},  # flow BC's critic has SORL's
    }.get(algo, values.get(algo))
    for key, value in block.items():
        if key in ("discount", "q_agg", "alpha", "q_loss_coef", "alpha_actor", "alpha_critic"):
            assert getattr(modules.loss, key) == value, key
    expected_agg = {"iql": "min", "rebrac": "min"}.get(algo, block.get("q_agg"))
    assert modules.q_agg == expected_agg
    # the networks are the shared group's (tiny: 2 x 32, 2 critic members)
    assert modules.critic.num_members == 2
    assert next(modules.policy.parameters()).shape[0] == 32
    # algorithms without steps evaluate k = 1 only, by default
    assert list(cfg.eval.inference_steps) == ([1, 2, 4, 8] if modules.has_steps else [1])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_one_update_and_the_validation_terms(algo):
    modules = build_algorithm(compose_train([f"algo={algo}", "network=tiny"]), CPU)
    before = [p.detach().clone() for p in modules.loss.parameters()]
    info = modules.update(batch(28, 5))
    assert any(key.startswith("loss_") for key in info.keys())
    assert all(torch.isfinite(value).all() for value in info.values())
    after = list(modules.loss.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # it trained
    with torch.no_grad():
        terms = modules.validation_terms(modules.loss(batch(28, 5)))
    assert "loss_actor" in terms and "q_mean" in terms
    assert set(terms) <= set(modules.validation_keys)
    assert modules.update.precompile(batch(28, 5)) == 0.0  # eager: nothing to compile


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_each_algorithm_samples_with_its_own_critic(algo):
    modules = build_algorithm(compose_train([f"algo={algo}", "network=tiny"]), CPU)
    k = 4 if modules.has_steps else 1
    sampler = modules.sampler(k, 8)
    assert sampler.critic is modules.critic and sampler.actor is modules.policy
    assert (sampler.inference_steps, sampler.num_candidates, sampler.q_agg) == (
        k,
        8,
        modules.q_agg,
    )
    if not modules.has_steps:
        assert isinstance(sampler, BestOfNSampler)
        with pytest.raises(ValueError, match=r"inference_steps must be 1"):
            modules.sampler(2, 1)


def test_sorl_builds_what_the_recipe_always_built():
    cfg = compose_train(["network=tiny"])
    torch.manual_seed(5)
    actor, critic, loss, update = build_modules(cfg, CPU)
    torch.manual_seed(5)
    modules = build_algorithm(cfg, CPU)
    got, want = modules.loss.state_dict(), loss.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    assert type(modules.update) is type(update) is SORLUpdateStep
    assert modules.update.state_dict().keys() == update.state_dict().keys()
    assert modules.update.optimizers["shared"].defaults == update.optimizers["shared"].defaults
    assert modules.q_agg == loss.q_agg
    assert modules.validation_keys == ("loss_actor", "loss_qvalue", "fm_loss", "sc_loss", "q_mean")


def test_an_algorithm_without_steps_refuses_k_above_one_before_training(tmp_path):
    overrides = tiny_overrides(tmp_path / "no-data", tmp_path / "run", 5)
    cfg = compose_train([*overrides, "algo=iql", "eval.inference_steps=[1,2]"])
    line = (
        "eval.inference_steps: got [1, 2], allowed [1] for algo=iql (its policy acts in one "
        "network call: it has no inference steps); pass eval.inference_steps=[1]"
    )
    assert any(p.startswith(line) for p in problems(cfg))
    with pytest.raises(SettingsError, match=r"allowed \[1\] for algo=iql"):
        run(cfg)
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "run").exists()
    # the same k for an algorithm with steps is no problem
    ok = compose_train([*overrides, "algo=bc", "eval.inference_steps=[1,2]"])
    assert not [p for p in problems(ok) if "inference_steps" in p]


def test_the_loss_and_optim_checks_are_the_selected_algorithms():
    fql = problems(compose_train(["algo=fql", "+loss.q_loss_coef=3", "optim.tau=0"]))
    assert any(p.startswith("loss.q_loss_coef: not a setting (known: discount, q_agg") for p in fql)
    assert "optim.tau: got 0, allowed a finite number in (0, 1]" in fql
    iql = problems(compose_train(["algo=iql", "loss.expectile=1.5"]))
    assert "loss.expectile: got 1.5, allowed a finite number in (0, 1)" in iql
    rebrac = problems(compose_train(["algo=rebrac", "env.rebrac.alpha_actor=-1"]))
    assert any(
        p.startswith("loss.alpha_actor (= ${env.rebrac.alpha_actor}): got -1") for p in rebrac
    )
    sorl = problems(compose_train(["optim=joint"]))  # SORL's update step has no such key
    assert any(p.startswith("optim.target_from_pre_step: not a setting (known: lr,") for p in sorl)
    for algo in ALGORITHMS:  # the shipped settings of every algorithm pass their checks
        shipped = problems(compose_train([f"algo={algo}"]))
        assert not [p for p in shipped if p.startswith(("algo", "loss", "optim", "network", "env"))]


def test_flow_bc_may_train_without_a_critic_then_evaluates_one_candidate():
    no_critic = ["algo=bc", "network.num_critics=0"]
    lines = problems(compose_train([*no_critic, "eval.num_candidates=[1]"]))
    assert not [p for p in lines if p.startswith(("network", "eval.num_candidates"))]
    lines = problems(compose_train(no_critic))
    assert any(p.startswith("eval.num_candidates: got [1, 4, 16], allowed [1]") for p in lines)
    fql = problems(compose_train(["algo=fql", "network.num_critics=0"]))
    assert any(p.startswith("network.num_critics: got 0") for p in fql)
    modules = build_algorithm(compose_train([*no_critic, "network=tiny"]), CPU)
    assert modules.critic is None and isinstance(modules.sampler(2, 1), ShortcutActor)


def test_baseline_run_dirs_are_per_algorithm_and_sorls_unchanged():
    sorl = compose_train(["env=scene-play", "seed=3"], hydra=True)
    assert sorl.hydra.run.dir == "runs/scene-play-task2/seed3"
    fql = compose_train(["algo=fql", "env=scene-play", "seed=3"], hydra=True)
    assert fql.hydra.run.dir == "runs/fql/scene-play-task2/seed3"


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_the_experiments_keep_each_algorithms_optimiser(algo):
    paper = compose_train([f"algo={algo}", "+experiment=paper"])
    assert list(paper.network.actor_cells) == [512] * 4
    assert paper.optim.lr == (1e-4 if algo == "sorl" else 3e-4)
    assert ("shared_optimizer" in paper.optim) == (algo == "sorl")
    demo = compose_train([f"algo={algo}", "+experiment=demo"])
    assert demo.optim.lr == 5e-4 and list(demo.network.actor_cells) == [256, 256]


def test_compiled_precompile_leaves_weights_optimizer_and_random_stream_alone():
    cfg = compose_train(["algo=fql", "network=tiny"])
    modules = build_algorithm(cfg, Runtime(torch.device("cpu"), "default", "", False, None))
    update, data = modules.update, batch(28, 5)
    update(data)  # an optimizer state to keep
    weights = copy.deepcopy(modules.loss.state_dict())
    optimizer = copy.deepcopy(update.optimizer.state_dict())
    seen = []
    torch.manual_seed(9)
    seconds = update.precompile(data, progress=seen.append)
    after_rng = torch.rand(3)
    torch.manual_seed(9)
    assert torch.equal(after_rng, torch.rand(3))
    assert seconds > 0 and seen == [1] and update.is_compiled and update.compile_failures == {}
    for key, value in weights.items():
        torch.testing.assert_close(modules.loss.state_dict()[key], value, rtol=0, atol=0)
    state = update.optimizer.state_dict()["state"]
    for index, entry in optimizer["state"].items():
        for name, value in entry.items():
            torch.testing.assert_close(state[index][name], value, rtol=0, atol=0)
    assert update.num_updates == 1
    assert all(p.grad is None for p in modules.loss.parameters())


def test_the_docs_tables_show_every_algorithm_and_env_block():
    import importlib.util

    root = Path(CONF_DIR).parents[2]
    spec = importlib.util.spec_from_file_location("_tables", root / "docs" / "_recipe_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    algos = [line.split("|")[1].strip(" `") for line in tables.algo_table(CONF_DIR).splitlines()]
    assert sorted(algos[2:]) == sorted(ALGORITHMS)
    rows = {}
    for line in tables.baselines_table(CONF_DIR).splitlines()[2:]:
        env, algo, settings, source = (cell.strip() for cell in line.strip("|").split("|"))
        rows[env.strip("`"), algo.strip("`")] = (settings, source)
    values = env_file("humanoidmaze-medium-navigate")
    settings, source = rows["humanoidmaze-medium-navigate", "fql"]
    assert settings == ", ".join(f"`{k}={v}`" for k, v in values["fql"].items())
    assert source.startswith("published")
    assert rows["cube-double-play", "rebrac"][1].startswith("placeholder")
    envs = {path.stem for path in (Path(CONF_DIR) / "env").glob("*.yaml")}
    with_blocks = {env for env in envs if "fql" in env_file(env)}
    assert {env for env, _ in rows} == with_blocks
