import numpy as np
import pytest
import torch
from helpers import linear_actor
from reference import LinearVelocity, euler_sample, to_np
from tensordict import TensorDict

from sorl_torchrl import ShortcutActor


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_euler_sampling_matches_reference_loop(k):
    actor = linear_actor(3, 2).double()
    obs = torch.randn(6, 3, dtype=torch.float64)
    noise = torch.randn(6, 2, dtype=torch.float64)
    ref = LinearVelocity(actor.module.network.weight, actor.module.network.bias)
    expected = euler_sample(ref, to_np(obs), to_np(noise), k)
    got = actor.sample(obs, k, noise)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-12)


def test_policy_call_uses_default_and_call_time_steps():
    actor = linear_actor(3, 2)
    calls = []
    actor.module.network.register_forward_hook(lambda m, i, o: calls.append(i[0]))
    td = TensorDict(observation=torch.randn(4, 3), batch_size=[4])
    actor(td)
    assert len(calls) == 1 and td["action"].shape == (4, 2)
    calls.clear()
    actor(td, inference_steps=8)
    assert len(calls) == 8
    # the step code fed to the network is log2(k) = 3, the times are i / 8
    assert torch.all(calls[0][:, -1] == 3)
    assert [c[0, -2].item() for c in calls] == [i / 8 for i in range(8)]
    calls.clear()
    actor.inference_steps = 4
    actor(td)
    assert len(calls) == 4


def test_actions_are_clipped():
    actor = linear_actor(3, 2)
    out = actor.sample(torch.randn(100, 3), 1, noise=torch.full((100, 2), 50.0))
    assert out.abs().max() == 1.0


def test_fresh_noise_differs_and_given_noise_is_deterministic():
    actor = linear_actor(3, 2)
    obs = torch.randn(5, 3)
    assert not torch.equal(actor.sample(obs, 2), actor.sample(obs, 2))
    noise = torch.randn(5, 2)
    assert torch.equal(actor.sample(obs, 2, noise), actor.sample(obs, 2, noise))


def test_gradient_flows_only_in_grad_mode():
    actor = linear_actor(3, 2)
    obs = torch.randn(5, 3)
    actor.sample(obs, 4).sum().backward()
    assert actor.module.network.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert not actor.sample(obs, 4).requires_grad


def test_default_network_is_paper_mlp():
    actor = ShortcutActor(28, 5)
    linears = [m for m in actor.module.network if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (35, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 5),
    ]


@pytest.mark.parametrize("bad", [0, 3, 6, -2, 2.5, True, "4"])
def test_non_power_of_two_steps_raise(bad):
    actor = linear_actor(3, 2)
    with pytest.raises(ValueError, match="power of two"):
        actor.sample(torch.randn(2, 3), bad)
    with pytest.raises(ValueError, match="power of two"):
        actor.inference_steps = bad
    with pytest.raises(ValueError, match="power of two"):
        ShortcutActor(3, 2, inference_steps=bad)


@pytest.mark.parametrize("network", ["mlp", "relu"])
def test_one_observation_row_for_many_noise_rows(network):
    """``[B, 1, obs]`` against noise ``[B, N, act]``: each observation's N samples, as if
    the observation were repeated."""
    torch.manual_seed(0)
    net = None
    if network == "relu":  # not a plain GELU MLP: the module path
        net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    actor = ShortcutActor(3, 2, num_cells=(16, 16), network=net)
    obs, noise = torch.randn(4, 1, 3), torch.randn(4, 5, 2)
    got = actor.sample(obs, 4, noise)
    assert got.shape == (4, 5, 2)
    for row in range(4):
        expected = actor.sample(obs[row].expand(5, 3), 4, noise[row])
        torch.testing.assert_close(got[row], expected)
    with pytest.raises(ValueError, match="broadcast"):
        actor.sample(torch.randn(4, 2, 3), 4, noise)


def test_wrong_observation_shape_raises():
    actor = linear_actor(3, 2)
    with pytest.raises(ValueError, match=r"observation must have shape \[..., 3\], got \[4, 5\]"):
        actor(TensorDict(observation=torch.randn(4, 5), batch_size=[4]))
    with pytest.raises(ValueError, match="noise"):
        actor.sample(torch.randn(4, 3), 2, noise=torch.randn(4, 3))


def test_nan_observation_raises():
    actor = linear_actor(3, 2)
    obs = torch.randn(4, 3)
    obs[2, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        actor(TensorDict(observation=obs, batch_size=[4]))


def test_missing_key_raises():
    actor = linear_actor(3, 2)
    with pytest.raises(KeyError):
        actor(TensorDict(obs=torch.randn(4, 3), batch_size=[4]))
