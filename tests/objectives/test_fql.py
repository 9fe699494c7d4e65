"""FQLLoss and the one-step policy against NumPy hand computations (float64)."""

import math

import baseline_reference as ref
import numpy as np
import pytest
import torch
from helpers import make_batch
from reference import to_np
from tensordict import TensorDict

from sorl_torchrl import QEnsemble
from sorl_torchrl._validation import SettingError, SettingsError
from sorl_torchrl.modules.actor import ShortcutModel
from sorl_torchrl.modules.networks import VelocityMLP
from sorl_torchrl.modules.one_step_policy import OneStepPolicy
from sorl_torchrl.objectives.fql import FQLLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep
from sorl_torchrl.toy import bimodal_bandit_batch

OBS, ACT, B = 3, 2, 7


def _networks(seed=0):
    torch.manual_seed(seed)
    policy = OneStepPolicy(OBS, ACT, num_cells=(8, 8)).double()
    flow = ShortcutModel(VelocityMLP(OBS, ACT, (8, 8)), OBS, ACT).double()
    critic = QEnsemble(OBS, ACT, num_cells=(8, 8), condition_on_steps=False).double()
    with torch.no_grad():  # LayerNorm affine and biases away from their 1 / 0 init
        for p in critic.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for p in [*policy.parameters(), *flow.parameters()]:
            p.mul_(2.0)  # actions beyond [-1, 1] for some rows: the clips matter
    return policy, flow, critic


def _loss(**kwargs):
    loss = FQLLoss(*_networks(), **kwargs)
    JointUpdateStep(loss)  # attaches the target update
    with torch.no_grad():
        for t in loss.target_qvalue_network_params.values(True, True):
            t.add_(torch.randn_like(t) * 0.2)
    return loss


def _mu(loss):
    return ref.OneStep(ref.MLP.from_params(loss.actor_network_params, ("module", "network")))


def _flow(loss):
    return ref.FlowField(ref.MLP.from_params(loss.bc_flow_network_params, ("network",)))


def _critics(loss):
    critic = loss.qvalue_network
    return (
        ref.critic_of(critic, loss.qvalue_network_params),
        ref.critic_of(critic, loss.target_qvalue_network_params),
    )


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "observation": randn(B, OBS),
        "action": torch.rand(B, ACT, generator=g, dtype=torch.float64) * 2 - 1,
        "next_observation": randn(B, OBS),
        "reward": -torch.rand(B, 1, generator=g, dtype=torch.float64),
        "mask": torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.float64).unsqueeze(-1),
        "noise": randn(B, ACT),
        "time": torch.rand(B, 1, generator=g, dtype=torch.float64),
    }


# ------------------------------------------------------------------ each term vs NumPy


@pytest.mark.parametrize("q_agg", ["mean", "min"])
def test_td_loss_matches_hand_computation(q_agg):
    loss = _loss(q_agg=q_agg, discount=0.9)
    x = _tensors()
    got, q, y = loss.td_loss(
        x["observation"], x["action"], x["next_observation"], x["reward"], x["mask"], x["noise"]
    )
    online, target = _critics(loss)
    s, a, s2, r, m, z2 = map(
        to_np,
        (x[k] for k in ("observation", "action", "next_observation", "reward", "mask", "noise")),
    )
    expected, y_ref = ref.fql_td_loss(_mu(loss), online, target, s, a, s2, r, m, z2, 0.9, q_agg)
    np.testing.assert_allclose(to_np(y), y_ref, rtol=1e-10)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    np.testing.assert_allclose(to_np(q), online(s, a, None), rtol=1e-10)
    np.testing.assert_allclose(to_np(y)[m[:, 0] == 0], r[m[:, 0] == 0])  # no bootstrap


def test_bc_flow_loss_matches_hand_computation():
    loss = _loss()
    x = _tensors()
    got = loss.bc_flow_loss(x["observation"], x["action"], x["noise"], x["time"])
    s, a, x0, t = map(to_np, (x["observation"], x["action"], x["noise"], x["time"]))
    np.testing.assert_allclose(
        got.item(), ref.fql_bc_flow_loss(_flow(loss), s, a, x0, t), rtol=1e-10
    )


@pytest.mark.parametrize("steps", [10, 3, 1])
def test_flow_actions_match_an_independent_euler_loop(steps):
    loss = _loss(flow_steps=steps)
    x = _tensors()
    got = loss.flow_actions(x["observation"], x["noise"])
    s, z = to_np(x["observation"]), to_np(x["noise"])
    expected = ref.euler_flow(_flow(loss), s, z, steps)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-10, atol=1e-12)
    assert not got.requires_grad  # the distillation target is a stop-gradient
    assert np.abs(expected).max() == 1.0  # some rows reach the clip: the test covers it


def test_distillation_loss_matches_hand_computation():
    loss = _loss()
    x = _tensors()
    got = loss.distillation_loss(x["observation"], x["noise"])
    s, z = to_np(x["observation"]), to_np(x["noise"])
    expected = ref.fql_distillation_loss(_mu(loss), _flow(loss), s, z, 10)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    assert np.abs(_mu(loss)(s, z)).max() > 1  # mu is regressed unclipped


@pytest.mark.parametrize("normalize", [False, True])
def test_q_loss_matches_hand_computation(normalize):
    loss = _loss(normalize_q_loss=normalize, q_agg="min")  # q_agg does not apply here
    x = _tensors()
    got, q, lam = loss.q_loss(x["observation"], x["noise"])
    online, _ = _critics(loss)
    s, z = to_np(x["observation"]), to_np(x["noise"])
    expected, q_ref = ref.fql_q_loss(_mu(loss), online, s, z, normalize)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    np.testing.assert_allclose(to_np(q), q_ref, rtol=1e-10)
    np.testing.assert_allclose(lam.item(), 1 / np.abs(q_ref).mean() if normalize else 1.0)


@pytest.mark.parametrize(
    "kwargs, agg, clip",
    [
        (dict(actor_q_agg="min"), "min", True),
        (dict(actor_q_agg=None, q_agg="min"), "min", True),
        (dict(actor_q_agg=None, q_agg="mean"), "mean", True),
        (dict(clip_q_actions=False), "mean", False),
    ],
)
def test_q_loss_switches_of_quirks_c_and_d(kwargs, agg, clip):
    loss = _loss(**kwargs)
    x = _tensors()
    got, q, _ = loss.q_loss(x["observation"], x["noise"])
    online, _ = _critics(loss)
    s, z = to_np(x["observation"]), to_np(x["noise"])
    expected, q_ref = ref.fql_q_loss(_mu(loss), online, s, z, False, agg, clip)
    np.testing.assert_allclose(got.item(), expected, rtol=1e-10)
    default, _ = ref.fql_q_loss(_mu(loss), online, s, z, False)
    assert not np.isclose(expected, default) or kwargs == dict(actor_q_agg=None, q_agg="mean")


def test_compute_terms_match_hand_computation():
    loss = _loss(alpha=3.0, discount=0.95, normalize_q_loss=True)
    x = _tensors()
    batch = {k: x[k] for k in ("observation", "action", "next_observation", "reward", "mask")}
    g = torch.Generator().manual_seed(9)
    draws = {
        "next_noise": torch.randn(B, ACT, generator=g, dtype=torch.float64),
        "flow_noise": torch.randn(B, ACT, generator=g, dtype=torch.float64),
        "flow_time": torch.rand(B, 1, generator=g, dtype=torch.float64),
        "noise": torch.randn(B, ACT, generator=g, dtype=torch.float64),
    }
    out = loss.compute_terms(batch, draws)
    s, a, s2, r, m = map(to_np, batch.values())
    z2, x0, t, z = map(to_np, draws.values())
    mu, f = _mu(loss), _flow(loss)
    online, target = _critics(loss)
    l_q, _ = ref.fql_td_loss(mu, online, target, s, a, s2, r, m, z2, 0.95, "mean")
    l_d = ref.fql_distillation_loss(mu, f, s, z, 10)
    l_pi, q_pi = ref.fql_q_loss(mu, online, s, z, True)
    np.testing.assert_allclose(out["loss_qvalue"].item(), l_q, rtol=1e-10)
    np.testing.assert_allclose(
        out["loss_bc_flow"].item(), ref.fql_bc_flow_loss(f, s, a, x0, t), rtol=1e-10
    )
    np.testing.assert_allclose(out["loss_actor"].item(), 3.0 * l_d + l_pi, rtol=1e-10)
    np.testing.assert_allclose(out["distill_loss"].item(), l_d, rtol=1e-10)
    np.testing.assert_allclose(out["q_policy"].item(), q_pi.mean(), rtol=1e-10)
    mse = np.mean((np.clip(mu(s, z), -1, 1) - a) ** 2)
    np.testing.assert_allclose(out["action_mse"].item(), mse, rtol=1e-10)
    assert out["td_error"].shape == (B,)


# ------------------------------------------------------------------ where the gradients go


def _grad_owners(loss, value):
    groups = {
        "critic": loss.qvalue_network_params,
        "flow": loss.bc_flow_network_params,
        "policy": loss.actor_network_params,
    }
    owners = set()
    for name, params in groups.items():
        leaves = list(params.values(True, True))
        grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        if any(g is not None and g.abs().sum() > 0 for g in grads):
            owners.add(name)
    return owners


def test_each_term_reaches_only_its_network():
    loss = _loss(normalize_q_loss=True)
    x = _tensors()
    obs, act, noise = x["observation"], x["action"], x["noise"]
    td = loss.td_loss(obs, act, x["next_observation"], x["reward"], x["mask"], noise)[0]
    assert _grad_owners(loss, td) == {"critic"}
    assert _grad_owners(loss, loss.bc_flow_loss(obs, act, noise, x["time"])) == {"flow"}
    assert _grad_owners(loss, loss.distillation_loss(obs, noise)) == {"policy"}
    assert _grad_owners(loss, loss.q_loss(obs, noise)[0]) == {"policy"}
    batch = loss.read_batch(make_batch(B, OBS, ACT).double())
    out = loss.compute_terms(batch, loss.draw_randomness(batch))
    owners = {
        key: _grad_owners(loss, out[key]) for key in ("loss_qvalue", "loss_bc_flow", "loss_actor")
    }
    assert owners == {"loss_qvalue": {"critic"}, "loss_bc_flow": {"flow"}, "loss_actor": {"policy"}}


def test_step_code_input_of_the_flow_gets_no_gradient():
    loss = _loss()
    x = _tensors()
    loss.bc_flow_loss(x["observation"], x["action"], x["noise"], x["time"]).backward()
    first = loss.bc_flow_network_params.get(("network", "0", "weight")).grad
    assert first[:, -1].abs().max() == 0 and first[:, -2].abs().max() > 0  # code, time


# ------------------------------------------------------------------ draws and contract


def test_draws_are_four_independent_tensors():
    loss = _loss()
    batch = loss.read_batch(make_batch(512, OBS, ACT).double())
    draws = loss.draw_randomness(batch)
    assert list(draws) == ["next_noise", "flow_noise", "flow_time", "noise"]
    assert draws["flow_time"].shape == (512, 1)
    assert 0 <= draws["flow_time"].min() and draws["flow_time"].max() < 1
    assert len(torch.unique(draws["flow_time"])) == 512  # continuous, no grid
    gaussians = [draws[k].flatten() for k in ("next_noise", "flow_noise", "noise")]
    corr = np.corrcoef(torch.stack(gaussians).numpy())
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.1


def test_forward_keys_and_only_the_priority_is_written():
    loss = _loss()
    batch = make_batch(B, OBS, ACT).double()
    before = batch.clone()
    out = loss(batch)
    assert set(out.keys()) == set(loss.out_keys)
    assert set(batch.keys(True, True)) - set(before.keys(True, True)) == {"td_error"}
    for key in before.keys(True, True):
        assert torch.equal(batch[key], before[key])
    assert batch["td_error"].shape == (B,)
    assert out["loss_actor"].requires_grad and not out["q_mean"].requires_grad
    assert loss.in_keys == [
        "observation",
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "terminated"),
    ]


def test_set_keys_renames_inputs():
    loss = _loss()
    batch = make_batch(B, OBS, ACT).double()
    renamed = TensorDict(
        {
            "obs": batch["observation"],
            "act": batch["action"],
            "next": {
                "obs": batch["next", "observation"],
                "r": batch["next", "reward"],
                "term": batch["next", "terminated"],
            },
        },
        batch_size=[B],
    )
    loss.set_keys(observation="obs", action="act", reward="r", terminated="term", priority="prio")
    out = loss(renamed)
    assert math.isfinite(out["loss_qvalue"].item()) and "prio" in renamed.keys()
    assert ("next", "r") in loss.in_keys


def test_missing_keys_raise_clear_error():
    loss = _loss()
    batch = make_batch(B, OBS, ACT).double()
    del batch["next", "terminated"]
    with pytest.raises(KeyError, match="set_keys"):
        loss(batch)


def test_state_dict_round_trip_restores_every_term():
    loss = _loss()
    other = FQLLoss(*_networks(seed=1))
    JointUpdateStep(other)
    batch = make_batch(B, OBS, ACT).double()
    keys = set(loss.state_dict())
    assert any(k.startswith("target_qvalue") for k in keys)
    assert not any(k.startswith(("target_actor", "target_bc_flow")) for k in keys)
    other.load_state_dict(loss.state_dict())
    torch.manual_seed(3)
    a = loss(batch.clone())
    torch.manual_seed(3)
    b = other(batch.clone())
    for key in loss.out_keys:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_bad_settings_are_listed():
    with pytest.raises(SettingsError) as info:
        FQLLoss(*_networks(), discount=2.0, q_agg="max", alpha=-1.0)
    text = str(info.value)
    assert "discount" in text and "q_agg" in text and "alpha" in text
    with pytest.raises(SettingError, match="flow_steps"):
        FQLLoss(*_networks(), flow_steps=2.5)


def test_wrong_networks_are_refused():
    policy, flow, critic = _networks()
    with pytest.raises(ValueError, match="condition_on_steps=False"):
        FQLLoss(policy, flow, QEnsemble(OBS, ACT, num_cells=(4,)))
    with pytest.raises(TypeError, match="bc_flow_network"):
        FQLLoss(policy, flow.network, critic)
    with pytest.raises(ValueError, match="disagree"):
        FQLLoss(policy, flow, QEnsemble(OBS + 1, ACT, num_cells=(4,), condition_on_steps=False))


# ------------------------------------------------------------------ the one-step policy


def test_one_step_policy_samples_clip_of_the_mlp():
    policy = _networks()[0]
    s = torch.randn(5, OBS, dtype=torch.float64)
    z = 3 * torch.randn(5, ACT, dtype=torch.float64)
    mlp = ref.OneStep(
        ref.MLP([(lin.weight, lin.bias) for lin in policy.module.network if hasattr(lin, "weight")])
    )
    expected = mlp(to_np(s), to_np(z))
    np.testing.assert_allclose(to_np(policy.sample(s, z, clip=False)), expected, rtol=1e-10)
    np.testing.assert_allclose(to_np(policy.sample(s, z)), np.clip(expected, -1, 1), rtol=1e-10)
    first, second = policy.sample(s), policy.sample(s)  # fresh noise on every call
    assert not torch.equal(first, second) and first.abs().max() <= 1
    td = TensorDict({"observation": s}, batch_size=[5])
    assert policy(td)["action"].shape == (5, ACT)


def test_one_step_policy_runs_a_torchrl_rollout():
    from torchrl.envs import GymEnv

    env = GymEnv("Pendulum-v1")
    env.set_seed(0)
    obs_dim = env.observation_spec["observation"].shape[-1]
    policy = OneStepPolicy(obs_dim, env.action_spec.shape[-1], num_cells=(8,))
    rollout = env.rollout(4, policy=policy)
    assert rollout["action"].shape == (4, 1) and rollout["action"].abs().max() <= 1


# ------------------------------------------------------------------ a short training run


def test_short_training_run_learns_the_behaviour():
    torch.manual_seed(0)
    policy = OneStepPolicy(1, 2, num_cells=(32, 32))
    flow = ShortcutModel(VelocityMLP(1, 2, (32, 32)), 1, 2)
    critic = QEnsemble(1, 2, num_cells=(32, 32), condition_on_steps=False)
    loss = FQLLoss(policy, flow, critic, alpha=10.0, validate_inputs=False)
    update = JointUpdateStep(loss, lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(200):
        info = update(bimodal_bandit_batch(64, generator=gen))
        history.append([info[k].item() for k in ("loss_bc_flow", "distill_loss", "loss_qvalue")])
    history = np.array(history)
    first, last = history[:20].mean(0), history[-20:].mean(0)
    assert np.isfinite(history).all()
    assert last[0] < 0.75 * first[0]  # the flow learns the data (seeds 0-2: 0.52-0.60)
    assert last[1] < 0.5 * first[1]  # the one-step policy follows the flow
    assert last[2] < 0.2 * first[2]  # the critic fits r (every transition terminates)
    assert update.state_dict()["step"] == 200


def test_builder_makes_a_trainable_fql():
    from sorl_torchrl.deploy.build_baselines import build_fql_modules, build_joint_update

    config = {
        "sizes": {"observation_dim": OBS, "action_dim": ACT},
        "network": {"actor_cells": [8], "critic_cells": [8], "condition_on_steps": False},
        "loss": {"alpha": 30.0, "q_agg": "min", "discount": 0.995},
        "optim": {"lr": 1e-3, "tau": 0.01},
    }
    policy, critic, loss = build_fql_modules(config)
    update = build_joint_update(loss, config)
    assert (loss.alpha, loss.q_agg, loss.discount, update.tau) == (30.0, "min", 0.995, 0.01)
    assert loss.actor_network is policy and loss.qvalue_network is critic
    assert not critic.condition_on_steps and critic.num_members == 2
    info = update(make_batch(B, OBS, ACT))
    assert math.isfinite(info["total_loss"].item())
    with pytest.raises(SettingError, match="condition_on_steps"):
        build_fql_modules({**config, "network": {"condition_on_steps": True}})
