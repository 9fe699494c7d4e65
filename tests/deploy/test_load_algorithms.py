"""load_policy for every algorithm: train two updates, save as train.py does, load, act."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from deploy_helpers import ACT, OBS, run_config
from helpers import make_batch
from tensordict import TensorDict

from sorl_torchrl import BestOfNSampler, ShortcutActor, VerifierSampler, load_policy
from sorl_torchrl._validation import SettingError
from sorl_torchrl.checkpoint import save_checkpoint
from sorl_torchrl.deploy import POLICY_BUILDERS, load_networks
from sorl_torchrl.modules import GaussianActor, OneStepPolicy, TanhActor
from sorl_torchrl.objectives import JointUpdateStep, SORLUpdateStep

# What each algorithm's recorded config holds beyond the shared parts (run_config): its
# algo group and loss settings, as the recipe records them.
LOSSES = {
    "sorl": {"discount": 0.99, "q_agg": "min", "q_loss_coef": 10.0, "alpha": 10.0},
    "fql": {"discount": 0.99, "q_agg": "min", "alpha": 300.0},
    "iql": {"discount": 0.99, "alpha": 10.0, "expectile": 0.9},
    "rebrac": {"discount": 0.99, "alpha_actor": 0.1, "alpha_critic": 0.01},
    "bc": {"discount": 0.99, "q_agg": "mean"},
}
POLICIES = {
    "sorl": ShortcutActor,
    "fql": OneStepPolicy,
    "iql": GaussianActor,
    "rebrac": TanhActor,
    "bc": ShortcutActor,
}


def algo_config(algo: str, **network) -> dict:
    config = run_config(algo={"name": algo}, loss=dict(LOSSES[algo]), optim={"lr": 1e-3})
    config["network"].update(network)  # the shared network group, step keys included
    return config


def batch(seed: int) -> TensorDict:
    data = make_batch(32, OBS, ACT, seed=seed)
    data["next", "action"] = torch.rand(32, ACT) * 2 - 1  # ReBRAC's a'_D
    return data


def train_and_save(path: Path, config: dict, updates: int = 2):
    """Build, train ``updates`` steps and save as train.py does; returns the trained originals."""
    torch.manual_seed(1)
    algo = config["algo"]["name"]
    policy, critic, loss = POLICY_BUILDERS[algo](config)
    step = SORLUpdateStep if algo == "sorl" else JointUpdateStep
    update = step(loss, **config["optim"])
    for i in range(updates):
        update(batch(i))
    save_checkpoint(
        path,
        {"step": updates, "config": config, "loss": loss.state_dict(), "optimizers": {}},
    )
    return policy.eval(), critic.eval() if critic is not None else None


@pytest.fixture(scope="module", params=sorted(LOSSES))
def trained(request, tmp_path_factory):
    algo = request.param
    path = tmp_path_factory.mktemp(algo) / "checkpoint.pt"
    policy, critic = train_and_save(path, algo_config(algo))
    return algo, path, policy, critic


def test_the_loaded_networks_are_the_trained_ones(trained):
    algo, path, policy, critic = trained
    networks = load_networks(path)
    assert networks.algo == algo and isinstance(networks.actor, POLICIES[algo])
    assert networks.has_steps == (algo in ("sorl", "bc"))
    for loaded, original in ((networks.actor, policy), (networks.critic, critic)):
        got, want = loaded.state_dict(), original.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    assert not any(p.requires_grad for p in networks.actor.parameters())
    # the verifier aggregates as the TD target: the loss's q_agg, min for IQL and ReBRAC
    assert networks.q_agg == LOSSES[algo].get("q_agg", "min")


def test_best_of_n_of_the_loaded_policy_is_the_hand_computed_pick(trained):
    algo, path, policy, critic = trained
    k = 2 if algo in ("sorl", "bc") else 1
    sampler = load_policy(path, inference_steps=k, num_candidates=6)
    assert isinstance(sampler, VerifierSampler if algo in ("sorl", "bc") else BestOfNSampler)
    observation, noise = torch.randn(5, OBS), torch.randn(5, 6, ACT)
    with torch.no_grad():  # by hand, with the trained originals
        s = observation.unsqueeze(1)
        if algo in ("sorl", "bc"):
            candidates = policy.sample(s, k, noise)
        elif algo == "fql":
            candidates = policy.sample(s, noise)
        else:  # IQL's and ReBRAC's candidates are sampled at temperature 1
            candidates = policy.sample(s, noise, 1.0)
        values = critic.values(s.expand(5, 6, OBS), candidates, float(k))
        how = LOSSES[algo].get("q_agg", "min")
        scores = values.amin(0) if how == "min" else values.mean(0)
        expected = candidates[torch.arange(5), scores.squeeze(-1).argmax(1)]
    action, _, _ = sampler.select(observation, noise=noise)
    torch.testing.assert_close(action, expected, rtol=0, atol=0)


def test_one_candidate_is_the_bare_policy(trained):
    algo, path, policy, _ = trained
    bare = load_policy(path)
    assert isinstance(bare, POLICIES[algo])
    observation = torch.randn(3, OBS)
    torch.manual_seed(4)
    got = bare(TensorDict(observation=observation, batch_size=[3]))["action"]
    torch.manual_seed(4)
    with torch.no_grad():
        expected = policy(TensorDict(observation=observation, batch_size=[3]))["action"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("algo", ["fql", "iql", "rebrac"])
def test_steps_other_than_one_are_refused_for_policies_without_steps(tmp_path, algo):
    path = tmp_path / "checkpoint.pt"
    train_and_save(path, algo_config(algo), updates=1)
    for num_candidates in (1, 4):
        with pytest.raises(SettingError, match=r"inference_steps must be 1 \(.*no inference"):
            load_policy(path, inference_steps=2, num_candidates=num_candidates)


def test_flow_bc_without_a_critic_loads_for_one_candidate_only(tmp_path):
    path = tmp_path / "checkpoint.pt"
    policy, critic = train_and_save(path, algo_config("bc", num_critics=0), updates=1)
    assert critic is None
    networks = load_networks(path)
    assert networks.critic is None
    bare = load_policy(path, inference_steps=4)
    assert isinstance(bare, ShortcutActor) and bare.inference_steps == 4
    for key, value in policy.state_dict().items():  # the trained velocity network
        torch.testing.assert_close(bare.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(SettingError, match="no critic to verify candidates with"):
        load_policy(path, num_candidates=4)
    with pytest.raises(SettingError, match="compile must be False for a model without a critic"):
        load_policy(path, compile=True)


def test_a_baseline_record_keeps_the_shared_network_groups_step_keys(tmp_path):
    """The recorded network group has SORL's step keys; the baselines' critics ignore them."""
    config = algo_config("fql")
    assert config["network"]["condition_on_steps"] is True
    path = tmp_path / "checkpoint.pt"
    train_and_save(path, copy.deepcopy(config), updates=1)
    assert not load_networks(path).critic.condition_on_steps
