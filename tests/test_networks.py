import numpy as np
import pytest
import torch
from reference import EnsembleCritic, MLPVelocity, gelu_tanh, to_np

from sorl_torchrl.modules.networks import (
    EnsembleLinear,
    EnsembleMLP,
    TanhGELU,
    VelocityMLP,
    make_velocity_mlp,
)
from sorl_torchrl.modules.networks import (
    gelu_tanh as fast_gelu,
)


@pytest.mark.parametrize("build", ["plain", "split"])
def test_velocity_mlp_structure_and_init(build):
    mlp = make_velocity_mlp(10, 3) if build == "plain" else VelocityMLP(5, 3)
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert [lin.in_features for lin in linears] == [10, 512, 512, 512, 512]
    assert [lin.out_features for lin in linears] == [512, 512, 512, 512, 3]
    gelus = [m for m in mlp if isinstance(m, TanhGELU)]
    assert len(gelus) == 4 and len(mlp) == 9
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in mlp)
    for lin in linears:
        bound = np.sqrt(6.0 / (lin.in_features + lin.out_features))
        w = lin.weight.detach()
        assert w.abs().max() <= bound
        # Glorot-uniform variance: bound^2 / 3
        assert abs(w.var().item() - bound**2 / 3) < 0.1 * bound**2 / 3
        assert torch.count_nonzero(lin.bias) == 0


def test_gelu_is_tanh_approximation():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    mlp = make_velocity_mlp(1, 1, num_cells=(1,))
    gelu = mlp[1]
    np.testing.assert_allclose(to_np(gelu(x)), gelu_tanh(to_np(x)), rtol=1e-12, atol=1e-12)


def _gelu_tanh_derivative(x: np.ndarray) -> np.ndarray:
    """d/dx of 0.5 x (1 + tanh(c (x + a x^3))), by hand."""
    c, a = np.sqrt(2.0 / np.pi), 0.044715
    t = np.tanh(c * (x + a * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * c * (1.0 + 3.0 * a * x**2)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_fast_gelu_values_and_gradient_match_reference(compiled):
    """Both forms of the networks' GELU (tanh eagerly, sigmoid under torch.compile)."""
    fn = torch.compile(fast_gelu, fullgraph=True, dynamic=False) if compiled else fast_gelu
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    xs = to_np(x)
    np.testing.assert_allclose(to_np(y), gelu_tanh(xs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(grad), _gelu_tanh_derivative(xs), rtol=1e-10, atol=1e-12)


def test_ensemble_linear_members_are_independent_and_glorot():
    layer = EnsembleLinear(4, 64, 32)
    w = layer.weight.detach()
    bound = np.sqrt(6.0 / (64 + 32))
    assert w.abs().max() <= bound
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(w[i], w[j])
            # independent draws are uncorrelated
            corr = np.corrcoef(w[i].flatten().numpy(), w[j].flatten().numpy())[0, 1]
            assert abs(corr) < 0.1


def test_ensemble_mlp_matches_per_member_loop():
    torch.manual_seed(3)
    mlp = EnsembleMLP(3, 5, 1, num_cells=(16, 8), layer_norm=True).double()
    with torch.no_grad():  # non-trivial LayerNorm affine, so a wrong member index shows
        for p in mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)

    class Wrapper(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

    ref = EnsembleCritic.from_module(Wrapper(mlp))
    x = torch.randn(7, 5, dtype=torch.float64)
    got = mlp(x)
    z0 = to_np(x)
    expected = ref(z0[:, :4], z0[:, 4:], None)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 7, 5), (7, 5)])
def test_ensemble_mlp_accepts_shared_and_per_member_inputs(shape):
    mlp = EnsembleMLP(3, 5, 2, num_cells=(4,))
    out = mlp(torch.randn(*shape))
    assert out.shape == (3, 7, 2)


def _perturbed_velocity_mlp(obs_dim=4, act_dim=2):
    torch.manual_seed(5)
    net = VelocityMLP(obs_dim, act_dim, num_cells=(16, 8)).double()
    with torch.no_grad():  # non-zero biases, so a dropped bias shows
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def test_split_velocity_matches_numpy_mlp_on_concatenated_input():
    net = _perturbed_velocity_mlp()
    ref = MLPVelocity([(m.weight, m.bias) for m in net if isinstance(m, torch.nn.Linear)])
    s = torch.randn(5, 1, 4, dtype=torch.float64)  # one observation row for 3 points each
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    t = torch.rand(5, 3, 1, dtype=torch.float64)
    got = net.velocity(net.observation_part(s), x, t, 2.0)
    expected = ref(to_np(s), to_np(x), to_np(t), 2.0)
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-12, atol=1e-12)
    # called as a module it is the MLP on the concatenated input
    flat = torch.cat([s.expand(5, 3, 4), x, t, torch.full_like(t, 2.0)], -1)
    np.testing.assert_allclose(to_np(net(flat)), expected, rtol=1e-12, atol=1e-12)


def test_velocity_mlp_state_dict_is_the_plain_mlps():
    plain, split = make_velocity_mlp(4 + 2 + 2, 2, (16, 8)), VelocityMLP(4, 2, (16, 8))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in split.state_dict().items()
    }
    split.load_state_dict(plain.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(split(x), plain(x))
