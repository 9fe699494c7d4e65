"""Bad inputs at every boundary of the core modules: each refused with the setting and its range.

Each case builds or calls something with one bad value and expects an error of a given type
whose message names the setting and what is allowed. Messages are matched against the
ranges written here, not against the code's own text.
"""

from __future__ import annotations

import math
import pickle
import warnings

import pytest
import torch
from helpers import linear_actor, make_batch, small_critic
from tensordict import TensorDict

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep, VerifierSampler
from sorl_torchrl._validation import SettingError, SettingsError, check_device
from sorl_torchrl.modules.actor import StepsBeyondTrainingWarning
from sorl_torchrl.modules.networks import EnsembleMLP, VelocityMLP, make_velocity_mlp

OBS, ACT = 3, 2
NAN, INF = float("nan"), float("inf")


def _loss(**kwargs) -> ShortcutLoss:
    return ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS, ACT), **kwargs)


def _sampler(**kwargs) -> VerifierSampler:
    return VerifierSampler(linear_actor(OBS, ACT), small_critic(OBS, ACT), **kwargs)


POWER = r"positive power of two \(1, 2, 4, 8, \.\.\.\)"

# (what is built with which bad setting, the fragment: setting name ... allowed range)
LOSS_CASES = [
    (dict(discount=1.5), r"discount must be a finite number in \[0, 1\], got 1\.5"),
    (dict(discount=-0.01), r"discount must be a finite number in \[0, 1\]"),
    (dict(discount=NAN), r"discount must be a finite number in \[0, 1\], got nan"),
    (dict(discount=True), r"discount must be a finite number in \[0, 1\], got True"),
    (dict(q_loss_coef=NAN), r"q_loss_coef must be a finite number >= 0 .*got nan"),
    (dict(q_loss_coef=INF), r"q_loss_coef must be a finite number >= 0 .*got inf"),
    (dict(q_loss_coef=-1.0), r"q_loss_coef must be a finite number >= 0"),
    (dict(q_loss_coef="100"), r"q_loss_coef must be a finite number >= 0 .*got '100'"),
    (dict(alpha=-1.0), r"alpha must be a finite number >= 0, got -1\.0"),
    (dict(alpha=INF), r"alpha must be a finite number >= 0, got inf"),
    (dict(fm_coef=NAN), r"fm_coef must be a finite number >= 0, got nan"),
    (dict(time_epsilon=1.0), r"time_epsilon must be a finite number in \[0, 1\), got 1\.0"),
    (dict(time_epsilon=-1e-5), r"time_epsilon must be a finite number in \[0, 1\)"),
    (dict(discretization_steps=6), r"discretization_steps must be a power of two >= 2"),
    (dict(discretization_steps=1), r"discretization_steps must be a power of two >= 2"),
    (dict(discretization_steps=True), r"discretization_steps must be a power of two >= 2"),
    (dict(max_bptt_steps=3), rf"max_bptt_steps must be a {POWER}"),
    (dict(max_bptt_steps=0), rf"max_bptt_steps must be a {POWER}"),
    (
        dict(max_bptt_steps=16),
        r"max_bptt_steps must be a power of two <= discretization_steps \(8\), got 16",
    ),
    (dict(normalize_q_loss=1), r"normalize_q_loss must be one of True, False, got 1"),
    (dict(next_action_grad="yes"), r"next_action_grad must be one of True, False"),
    (dict(validate_inputs=None), r"validate_inputs must be one of True, False, got None"),
    (dict(q_agg="max"), r"q_agg must be one of 'mean', 'min', got 'max'"),
    (dict(actor_q_agg="median"), r"actor_q_agg must be one of 'mean', 'min', None"),
    (dict(sc_target_network="ema"), r"sc_target_network must be one of 'target', 'online'"),
]


@pytest.mark.parametrize("kwargs, match", LOSS_CASES, ids=lambda v: str(v)[:40])
def test_loss_settings(kwargs, match):
    with pytest.raises(SettingError, match=match):
        _loss(**kwargs)


def test_loss_lists_every_bad_setting_at_once():
    with pytest.raises(SettingsError) as info:
        _loss(discount=1.5, q_loss_coef=NAN, alpha=-1)
    text = str(info.value)
    assert "3 settings are not allowed" in text
    for line in (
        "discount: got 1.5, allowed a finite number in [0, 1]",
        "q_loss_coef: got nan, allowed a finite number >= 0",
        "alpha: got -1, allowed a finite number >= 0",
    ):
        assert line in text


def test_loss_networks_of_other_types_or_sizes():
    with pytest.raises(TypeError, match="actor_network must be a ShortcutActor, got Linear"):
        ShortcutLoss(torch.nn.Linear(3, 2), small_critic(OBS, ACT))
    with pytest.raises(ValueError, match=r"disagree .*\(3, 2\) and \(4, 2\)"):
        ShortcutLoss(linear_actor(OBS, ACT), small_critic(OBS + 1, ACT))


UPDATE_CASES = [
    (dict(lr=0.0), r"lr must be a finite number > 0, got 0\.0"),
    (dict(lr=-1e-4), r"lr must be a finite number > 0"),
    (dict(lr=NAN), r"lr must be a finite number > 0, got nan"),
    (dict(lr=True), r"lr must be a finite number > 0, got True"),
    (dict(tau=0.0), r"tau must be a finite number in \(0, 1\], got 0\.0"),
    (dict(tau=1.5), r"tau must be a finite number in \(0, 1\], got 1\.5"),
    (dict(grad_clip_norm=-1), r"grad_clip_norm must be None or a finite number >= 0 .*got -1"),
    (dict(grad_clip_norm=NAN), r"grad_clip_norm must be None or a finite number >= 0"),
    (dict(grad_clip_norm="1"), r"grad_clip_norm must be None or a finite number >= 0"),
    (dict(shared_optimizer=1), r"shared_optimizer must be one of True, False, got 1"),
    (dict(actor_uses_pre_step_critic="no"), r"actor_uses_pre_step_critic must be one of True"),
    (dict(targets_track_pre_step_weights=0), r"targets_track_pre_step_weights must be one of"),
    (dict(compile="fastest"), r"compile must be True, False or a torch\.compile mode"),
]


@pytest.mark.parametrize("kwargs, match", UPDATE_CASES, ids=lambda v: str(v)[:40])
def test_update_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SORLUpdateStep(_loss(), **kwargs)


def test_update_step_clipping_off_is_documented_and_allowed():
    # 0 and None both switch the clip off; a positive norm clips (no error either way)
    loss = _loss()
    assert SORLUpdateStep(loss, grad_clip_norm=0).grad_clip_norm is None
    assert SORLUpdateStep(loss, grad_clip_norm=None).grad_clip_norm is None
    assert SORLUpdateStep(loss, grad_clip_norm=2).grad_clip_norm == 2.0
    with pytest.raises(TypeError, match="loss must be a ShortcutLoss, got Linear"):
        SORLUpdateStep(torch.nn.Linear(2, 2))


ACTOR_CASES = [
    (dict(observation_dim=0, action_dim=2), r"observation_dim must be an integer >= 1, got 0"),
    (dict(observation_dim=2.5, action_dim=2), r"observation_dim must be an integer >= 1"),
    (dict(observation_dim=3, action_dim=-1), r"action_dim must be an integer >= 1, got -1"),
    (dict(observation_dim=3, action_dim=2, num_cells=(8, 0)), r"num_cells\[1\] must be an "),
    (dict(observation_dim=3, action_dim=2, num_cells="64"), r"num_cells must be a list"),
    (
        dict(observation_dim=3, action_dim=2, inference_steps=3),
        rf"inference_steps must be a {POWER}",
    ),
]


@pytest.mark.parametrize("kwargs, match", ACTOR_CASES, ids=lambda v: str(v)[:50])
def test_actor_settings(kwargs, match):
    with pytest.raises(SettingError, match=match):
        ShortcutActor(**kwargs)


CRITIC_CASES = [
    (dict(num_members=0), r"num_members must be an integer >= 1, got 0"),
    (dict(num_members=True), r"num_members must be an integer >= 1, got True"),
    (dict(layer_norm_eps=0.0), r"layer_norm_eps must be a finite number > 0, got 0\.0"),
    (dict(step_feature="sqrt"), r"step_feature must be one of 'steps', 'log2', got 'sqrt'"),
    (dict(condition_on_steps="yes"), r"condition_on_steps must be one of True, False"),
    (dict(layer_norm=1), r"layer_norm must be one of True, False, got 1"),
    (dict(num_cells=(0,)), r"num_cells\[0\] must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("kwargs, match", CRITIC_CASES, ids=lambda v: str(v)[:40])
def test_critic_settings(kwargs, match):
    with pytest.raises(SettingError, match=match):
        QEnsemble(OBS, ACT, **kwargs)


NETWORK_CASES = [
    (lambda: VelocityMLP(3, 0), r"action_dim must be an integer >= 1, got 0"),
    (lambda: make_velocity_mlp(0, 2), r"in_features must be an integer >= 1, got 0"),
    (lambda: EnsembleMLP(0, 6, 1), r"num_members must be an integer >= 1, got 0"),
    (lambda: EnsembleMLP(2, 6, 1, layer_norm_eps=-1.0), r"layer_norm_eps must be a finite "),
]


@pytest.mark.parametrize("build, match", NETWORK_CASES)
def test_network_sizes(build, match):
    with pytest.raises(SettingError, match=match):
        build()


VERIFIER_CASES = [
    (dict(num_candidates=0), r"num_candidates must be an integer >= 1, got 0"),
    (dict(num_candidates=True), r"num_candidates must be an integer >= 1, got True"),
    (dict(num_candidates=2.5), r"num_candidates must be an integer >= 1, got 2\.5"),
    (dict(inference_steps=3), rf"inference_steps must be a {POWER}, got 3"),
    (dict(q_agg="max"), r"q_agg must be one of 'mean', 'min', got 'max'"),
    (dict(return_candidates=1), r"return_candidates must be one of True, False, got 1"),
    (dict(compile="fastest"), r"compile must be True, False or a torch\.compile mode"),
]


@pytest.mark.parametrize("kwargs, match", VERIFIER_CASES, ids=lambda v: str(v)[:40])
def test_verifier_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sampler(**kwargs)


# Per-call overrides go through the constructor's checks (no IndexError in argmax, no
# True taken as 1, no TypeError inside randn).
PER_CALL_CASES = [
    ("select", dict(num_candidates=0), r"num_candidates must be an integer >= 1, got 0"),
    ("select", dict(num_candidates=True), r"num_candidates must be an integer >= 1, got True"),
    ("select", dict(num_candidates=2.5), r"num_candidates must be an integer >= 1, got 2\.5"),
    ("select", dict(inference_steps=3), rf"inference_steps must be a {POWER}, got 3"),
    ("select", dict(inference_steps=True), rf"inference_steps must be a {POWER}, got True"),
    ("select", dict(inference_steps=2.5), rf"inference_steps must be a {POWER}, got 2\.5"),
    ("forward", dict(num_candidates=0), r"num_candidates must be an integer >= 1, got 0"),
    ("forward", dict(inference_steps=0), rf"inference_steps must be a {POWER}, got 0"),
    ("setter", dict(num_candidates=-2), r"num_candidates must be an integer >= 1, got -2"),
    ("setter", dict(inference_steps=6), rf"inference_steps must be a {POWER}, got 6"),
]


@pytest.mark.parametrize("how, kwargs, match", PER_CALL_CASES, ids=lambda v: str(v)[:40])
def test_verifier_per_call_overrides(how, kwargs, match):
    policy = _sampler(num_candidates=2)
    observation = torch.randn(4, OBS)
    with pytest.raises(SettingError, match=match):
        if how == "select":
            policy.select(observation, **kwargs)
        elif how == "forward":
            policy(TensorDict(observation=observation, batch_size=[4]), **kwargs)
        else:
            ((name, value),) = kwargs.items()
            setattr(policy, name, value)


@pytest.mark.parametrize("bad", [0, True, 2.5, "4", 3])
def test_actor_per_call_steps(bad):
    actor = linear_actor(OBS, ACT)
    td = TensorDict(observation=torch.randn(4, OBS), batch_size=[4])
    with pytest.raises(SettingError, match=rf"inference_steps must be a {POWER}"):
        actor(td, inference_steps=bad)


@pytest.mark.parametrize("bad", [0, 3, -4, True])
def test_critic_step_count(bad):
    # the step count of a scored action: log2(0) ended in "math domain error"
    critic = small_critic(OBS, ACT, step_feature="log2")
    with pytest.raises(SettingError, match=rf"inference_steps must be a {POWER}"):
        critic.values(torch.randn(4, OBS), torch.rand(4, ACT), bad)


def test_critic_batch_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"batch shape \[2\] and action batch shape \[3\]"):
        small_critic(OBS, ACT).values(torch.randn(2, OBS), torch.rand(3, ACT), 1)


# --------------------------------------------------------------------------- dtypes
INT_DTYPES = [torch.int64, torch.int32, torch.bool]


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integer_observations_are_refused_naming_the_expected_dtype(dtype):
    observation = torch.zeros(4, OBS, dtype=dtype)
    expected = (
        r"observation must be a floating-point tensor \(the model computes in torch\.float32\)"
    )
    with pytest.raises(ValueError, match=expected):
        linear_actor(OBS, ACT).sample(observation)
    with pytest.raises(ValueError, match=expected):
        linear_actor(OBS, ACT)(TensorDict(observation=observation, batch_size=[4]))
    with pytest.raises(ValueError, match=expected):
        _sampler(num_candidates=2).select(observation)
    with pytest.raises(ValueError, match=expected):
        small_critic(OBS, ACT).values(observation, torch.rand(4, ACT), 1)
    batch = make_batch(4, OBS, ACT)
    batch["observation"] = observation
    with pytest.raises(ValueError, match=expected):
        _loss()(batch)


def test_float64_inputs_into_a_float32_model_are_converted():
    """The documented rule: the same numbers as float32 inputs, no torch dtype error."""
    obs64 = torch.randn(4, OBS, dtype=torch.float64)
    noise64 = torch.randn(4, ACT, dtype=torch.float64)
    actor = linear_actor(OBS, ACT)
    expected = actor.sample(obs64.float(), 4, noise64.float())
    got = actor.sample(obs64, 4, noise64)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    critic = small_critic(OBS, ACT)
    q64 = critic.values(obs64, torch.rand(4, ACT, dtype=torch.float64), 2)
    assert q64.dtype == torch.float32
    policy = VerifierSampler(actor, critic, num_candidates=3)
    action, _, _ = policy.select(obs64, noise=torch.randn(4, 3, ACT, dtype=torch.float64))
    assert action.dtype == torch.float32
    out = _loss()(make_batch(8, OBS, ACT).double())  # float64 batch, float32 networks
    loss_actor = out["loss_actor"].detach()
    assert math.isfinite(float(loss_actor)) and loss_actor.dtype == torch.float32


def test_terminated_must_hold_0_and_1():
    batch = make_batch(6, OBS, ACT)
    batch["next", "terminated"] = torch.tensor([[2], [0], [1], [0], [0], [1]])
    with pytest.raises(ValueError, match=r"terminated holds 1 value\(s\) other than 0 and 1"):
        _loss()(batch)
    batch["next", "terminated"] = torch.tensor([[1.0], [0.0], [1.0], [0.0], [0.0], [1.0]])
    mask = _loss().read_batch(batch)["mask"].flatten().tolist()
    assert mask == [0.0, 1.0, 0.0, 1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_says_so():
    with pytest.raises(SettingError, match="CUDA is not available"):
        check_device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "", 3.5])
def test_devices_that_do_not_exist(bad):
    with pytest.raises(SettingError, match=r"device must be 'auto' or a torch device such as"):
        check_device(bad)


def test_setting_errors_survive_a_pickle():
    # errors cross process boundaries in sweeps (joblib, submitit)
    error = pickle.loads(pickle.dumps(SettingError("tau", 2.0, "a finite number in (0, 1]")))
    assert str(error) == "tau must be a finite number in (0, 1], got 2.0."
    several = pickle.loads(pickle.dumps(SettingsError("X", ["a: got 1", "b: got 2"])))
    assert several.problems == ["a: got 1", "b: got 2"]


# --------------------------------------------------------------------------- steps beyond M_disc
def _caught(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, StepsBeyondTrainingWarning)]


def test_the_loss_tells_the_actor_what_it_trains_without_touching_the_state_dict():
    actor = linear_actor(OBS, ACT)
    keys = sorted(actor.state_dict())
    assert actor.trained_steps is None
    ShortcutLoss(actor, small_critic(OBS, ACT), discretization_steps=4, max_bptt_steps=4)
    assert actor.trained_steps == 4
    assert sorted(actor.state_dict()) == keys


def test_sampling_beyond_training_warns_once_per_step_count():
    actor = linear_actor(OBS, ACT)
    ShortcutLoss(actor, small_critic(OBS, ACT), discretization_steps=8)
    obs = torch.randn(4, OBS)
    assert _caught(lambda: [actor.sample(obs, k) for k in (1, 2, 4, 8)]) == []
    first = _caught(lambda: [actor.sample(obs, 16) for _ in range(3)])
    assert len(first) == 1
    assert "inference_steps=16" in str(first[0].message) and "8" in str(first[0].message)
    assert _caught(lambda: actor.sample(obs, 16)) == []  # once per actor and k
    assert (
        len(_caught(lambda: actor(TensorDict(observation=obs, batch_size=[4]), inference_steps=32)))
        == 1
    )


def test_the_verifier_warns_through_its_actor_once():
    actor, critic = linear_actor(OBS, ACT), small_critic(OBS, ACT)
    ShortcutLoss(actor, critic, discretization_steps=2, max_bptt_steps=2)
    policy = VerifierSampler(actor, critic, num_candidates=3, inference_steps=4)
    obs = torch.randn(5, OBS)
    caught = _caught(lambda: [policy.select(obs) for _ in range(3)])
    assert len(caught) == 1 and "inference_steps=4" in str(caught[0].message)
    assert _caught(lambda: policy.select(obs, inference_steps=2)) == []


def test_an_actor_no_loss_has_trained_never_warns():
    actor = linear_actor(OBS, ACT)
    assert _caught(lambda: actor.sample(torch.randn(2, OBS), 64)) == []


def test_the_warning_can_be_made_an_error():
    actor = linear_actor(OBS, ACT)
    actor.trained_steps = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", StepsBeyondTrainingWarning)
        with pytest.raises(StepsBeyondTrainingWarning, match="more Euler steps than the 2"):
            actor.sample(torch.randn(2, OBS), 4)
    with pytest.raises(SettingError, match=r"trained_steps must be a positive power of two"):
        actor.trained_steps = 3
