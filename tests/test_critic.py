import copy

import numpy as np
import pytest
import torch
from helpers import small_critic
from reference import EnsembleCritic, to_np
from tensordict import TensorDict

from sorl_torchrl import QEnsemble


def _perturbed(critic):
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return critic


@pytest.mark.parametrize("step_feature", ["steps", "log2"])
def test_values_match_reference(step_feature):
    critic = _perturbed(small_critic(3, 2, step_feature=step_feature).double())
    obs, act = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    got = critic.values(obs, act, 4)
    feature = 4.0 if step_feature == "steps" else 2.0
    expected = EnsembleCritic.from_module(critic)(to_np(obs), to_np(act), feature)
    assert got.shape == (2, 5, 1)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-10, atol=1e-10)


def test_unconditioned_critic_is_q_of_s_a():
    critic = _perturbed(small_critic(3, 2, condition_on_steps=False).double())
    obs, act = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    expected = EnsembleCritic.from_module(critic)(to_np(obs), to_np(act), None)
    np.testing.assert_allclose(to_np(critic.values(obs, act)), expected, rtol=1e-10)
    assert critic.in_keys == ["observation", "action"]


def test_members_are_independent():
    critic = QEnsemble(3, 2, num_members=4)
    out = critic.values(torch.randn(64, 3), torch.rand(64, 2), 1)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j])


def test_aggregation():
    values = torch.tensor([[[1.0], [5.0]], [[3.0], [-1.0]]])  # E=2, B=2
    assert QEnsemble.aggregate(values, "min").flatten().tolist() == [1.0, -1.0]
    assert QEnsemble.aggregate(values, "mean").flatten().tolist() == [2.0, 2.0]
    with pytest.raises(ValueError, match="min"):
        QEnsemble.aggregate(values, "max")


def test_tensordict_forward_follows_ensemble_module_layout():
    critic = small_critic(3, 2, num_members=3)
    td = TensorDict(
        observation=torch.randn(4, 3),
        action=torch.rand(4, 2),
        inference_steps=torch.full((4, 1), 2.0),
        batch_size=[4],
    )
    out = critic(td)
    assert out.batch_size == (3, 4)
    expected = critic.values(td["observation"], td["action"], 2.0)
    torch.testing.assert_close(out["state_action_value"], expected)


def test_missing_step_count_and_keys_raise():
    critic = small_critic(3, 2)
    with pytest.raises(ValueError, match="inference_steps"):
        critic.values(torch.randn(4, 3), torch.rand(4, 2))
    with pytest.raises(KeyError, match="inference_steps"):
        critic(TensorDict(observation=torch.randn(4, 3), action=torch.rand(4, 2), batch_size=[4]))
    with pytest.raises(ValueError, match=r"action must have shape \[..., 2\]"):
        critic.values(torch.randn(4, 3), torch.rand(4, 3), 1)


def test_functional_params_swap():
    critic = small_critic(3, 2)
    params = TensorDict.from_module(critic)
    other = copy.deepcopy(critic)
    _perturbed(other)
    obs, act = torch.randn(4, 3), torch.rand(4, 2)
    with TensorDict.from_module(other).to_module(critic):
        swapped = critic.values(obs, act, 1)
    torch.testing.assert_close(swapped, other.values(obs, act, 1))
    assert params is not None
