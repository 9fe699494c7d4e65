"""On a CUDA GPU: the update, its compiled forms, checkpoints and the verifier agree with the CPU.

Every comparison gives both sides the same weights (built from one seed on the CPU, then
moved) and the same random draws: the update draws its randomness outside the losses
(``ShortcutLoss.draw_critic_randomness`` / ``draw_actor_randomness``), so the draws of one
update step are recorded and replayed, moved, into the other. Float32 matrix products run
without TF32.

Skipped without a GPU (``benchmarks/gpu_check.sh`` runs them on one).
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep, VerifierSampler
from sorl_torchrl.checkpoint import (
    get_rng_state,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    set_rng_state,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DEVICE = "cuda"
OBS, ACT, CELLS, BATCH = 28, 5, (64, 64), 64
PARAM_GROUPS = (
    "actor_network_params",
    "qvalue_network_params",
    "target_actor_network_params",
    "target_qvalue_network_params",
)
# Float32 on two devices (or fused against unfused kernels): reductions in another order.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _full_float32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    torch.set_float32_matmul_precision(precision)


def sgd(params):
    """Plain SGD: parameter differences stay proportional to gradient differences.

    Adam's first steps move every weight by about ``lr`` whatever the size of its
    gradient, so a gradient element near zero can flip sign with float rounding alone.
    """
    return torch.optim.SGD(params, lr=1e-2)


def build(device: str, seed: int = 0, **update_kwargs) -> tuple[ShortcutLoss, SORLUpdateStep]:
    """A small SORL loss and update step, the weights drawn on the CPU from ``seed``."""
    torch.manual_seed(seed)
    actor = ShortcutActor(OBS, ACT, num_cells=CELLS).to(device)
    critic = QEnsemble(OBS, ACT, num_cells=CELLS).to(device)
    # k in {1, 2}: both losses compile one graph per k, so two of each.
    loss = ShortcutLoss(actor, critic, q_loss_coef=10.0, max_bptt_steps=2)
    return loss, SORLUpdateStep(loss, **update_kwargs)


def make_batch(seed: int) -> TensorDict:
    gen = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "observation": torch.randn(BATCH, OBS, generator=gen),
            "action": torch.rand(BATCH, ACT, generator=gen) * 2 - 1,
            "next": {
                "observation": torch.randn(BATCH, OBS, generator=gen),
                "reward": -torch.rand(BATCH, 1, generator=gen),
                "terminated": torch.rand(BATCH, 1, generator=gen) < 0.2,
            },
        },
        batch_size=[BATCH],
    )


class Draws:
    """The random draws of one update step, recorded on one loss and replayed into others."""

    NAMES = ("draw_critic_randomness", "draw_actor_randomness")

    def __init__(self) -> None:
        self.drawn: dict[str, list[dict]] = {name: [] for name in self.NAMES}

    def record(self, loss: ShortcutLoss) -> None:
        for name in self.NAMES:
            original, store = getattr(loss, name), self.drawn[name]

            def draw(batch, original=original, store=store):
                drawn = original(batch)
                store.append({k: _to(v, "cpu") for k, v in drawn.items()})
                return drawn

            setattr(loss, name, draw)

    def replay(self, loss: ShortcutLoss, device: str, start: int = 0) -> None:
        for name in self.NAMES:
            store, position = self.drawn[name], [start]

            def draw(batch, store=store, position=position):
                drawn = store[position[0]]
                position[0] += 1
                return {k: _to(v, device) for k, v in drawn.items()}

            setattr(loss, name, draw)


def _to(value, device: str):
    """A tensor copied to ``device`` (a copy even when already there); anything else as is."""
    return value.to(device, copy=True) if isinstance(value, torch.Tensor) else value


def params(loss: ShortcutLoss) -> dict[str, list[torch.Tensor]]:
    return {
        group: [p.detach().cpu().clone() for p in getattr(loss, group).values(True, True)]
        for group in PARAM_GROUPS
    }


def assert_params_close(actual: dict, expected: dict, **tolerance) -> None:
    for group in PARAM_GROUPS:
        for i, (a, b) in enumerate(zip(actual[group], expected[group], strict=True)):
            torch.testing.assert_close(a, b, **(tolerance or TOLERANCE), msg=f"{group}[{i}]")


def assert_info_close(actual: TensorDict, expected: TensorDict) -> None:
    assert set(actual.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(actual[key].cpu(), expected[key].cpu(), **TOLERANCE, msg=key)


def train(update: SORLUpdateStep, device: str, seeds: range) -> list[TensorDict]:
    return [update(make_batch(seed).to(device)).clone() for seed in seeds]


def test_update_on_cuda_equals_the_cpu_update():
    cpu_loss, cpu_update = build("cpu", optimizer_factory=sgd)
    gpu_loss, gpu_update = build(DEVICE, optimizer_factory=sgd)
    assert_params_close(params(gpu_loss), params(cpu_loss), rtol=0, atol=0)
    draws = Draws()
    draws.record(cpu_loss)
    draws.replay(gpu_loss, DEVICE)
    cpu_info = train(cpu_update, "cpu", range(4))
    gpu_info = train(gpu_update, DEVICE, range(4))
    for gpu, cpu in zip(gpu_info, cpu_info, strict=True):
        assert_info_close(gpu, cpu)
    assert_params_close(params(gpu_loss), params(cpu_loss))
    assert {int(i["critic_bptt_steps"]) for i in cpu_info} <= {1, 2}


@pytest.mark.parametrize("mode", [True, "reduce-overhead"], ids=["compile", "cudagraphs"])
def test_compiled_update_on_cuda_equals_eager(mode):
    eager_loss, eager_update = build(DEVICE, optimizer_factory=sgd)
    compiled_loss, compiled_update = build(DEVICE, optimizer_factory=sgd, compile=mode)
    draws = Draws()
    draws.record(eager_loss)
    draws.replay(compiled_loss, DEVICE)
    # Every (critic k, actor k) pair: each graph compiles, then runs again (CUDA graphs:
    # recorded, then replayed).
    ks = iter([1, 1, 2, 2, 1, 2, 2, 1, 1, 2, 2, 1])
    eager_loss.draw_num_steps = lambda: next(ks)
    for seed in range(6):
        eager_info = eager_update(make_batch(seed).to(DEVICE)).clone()
        compiled_info = compiled_update(make_batch(seed).to(DEVICE)).clone()
        assert_info_close(compiled_info, eager_info)
    assert compiled_update.is_compiled, compiled_update.compile_failures
    assert_params_close(params(compiled_loss), params(eager_loss))


def _assert_nearly_all_close(actual: dict, expected: dict, max_fraction: float = 1e-3) -> None:
    """All but a few weights close (Adam: a near-zero gradient's sign may flip, see ``sgd``)."""
    for group in PARAM_GROUPS:
        far = total = 0
        for a, b in zip(actual[group], expected[group], strict=True):
            far += int((~torch.isclose(a, b, **TOLERANCE)).sum())
            total += a.numel()
        assert far <= max_fraction * total, f"{group}: {far} of {total} weights differ"


@pytest.mark.parametrize(("source", "target"), [("cpu", DEVICE), (DEVICE, "cpu")])
def test_checkpoint_moves_between_devices_and_resumes(tmp_path, source, target):
    loss, update = build(source)  # the default optimizer: Adam, fused where available
    draws = Draws()
    draws.record(loss)
    train(update, source, range(2))
    path = save_checkpoint(
        tmp_path / "checkpoint.pt",
        {
            "step": 2,
            "loss": loss.state_dict(),
            "optimizers": update.state_dict(),
            "rng": get_rng_state(),
        },
    )
    train(update, source, range(2, 4))  # the run as if never interrupted

    # Resume as sorl-train does: load onto the run's device, weights, optimizer, RNG.
    state = load_checkpoint(path, map_location=target)
    resumed_loss, resumed_update = build(target, seed=1)  # other weights: all must load
    load_module_state(resumed_loss, state["loss"], path)
    resumed_update.load_state_dict(state["optimizers"])
    set_rng_state(state["rng"])
    kind = torch.device(target).type
    for slot in resumed_update.optimizers["shared"].state.values():
        for name, value in slot.items():
            if isinstance(value, torch.Tensor) and name != "step":
                assert value.device.type == kind, name
    draws.replay(resumed_loss, target, start=2)
    train(resumed_update, target, range(2, 4))
    _assert_nearly_all_close(params(resumed_loss), params(loss))


@pytest.mark.parametrize(("num_candidates", "steps"), [(1, 1), (16, 4), (64, 8)])
def test_verifier_on_cuda_equals_the_cpu_verifier(num_candidates, steps):
    torch.manual_seed(0)
    actor, critic = ShortcutActor(OBS, ACT, num_cells=CELLS), QEnsemble(OBS, ACT, num_cells=CELLS)
    cpu = VerifierSampler(actor, critic, return_candidates=True).eval()
    torch.manual_seed(0)
    actor = ShortcutActor(OBS, ACT, num_cells=CELLS).to(DEVICE)
    critic = QEnsemble(OBS, ACT, num_cells=CELLS).to(DEVICE)
    gpu = VerifierSampler(actor, critic, return_candidates=True).eval()
    gen = torch.Generator().manual_seed(3)
    observation = torch.randn(32, OBS, generator=gen)
    noise = torch.randn(32, num_candidates, ACT, generator=gen)
    expected = cpu.select(observation, num_candidates, steps, noise=noise)
    actual = gpu.select(observation.to(DEVICE), num_candidates, steps, noise=noise.to(DEVICE))
    action, candidates, scores = (t.cpu() for t in actual)
    torch.testing.assert_close(candidates, expected[1], **TOLERANCE)
    torch.testing.assert_close(scores, expected[2], **TOLERANCE)
    # The same choice wherever the best candidate leads the next by more than rounding.
    top = expected[2].topk(min(2, num_candidates), dim=-1).values
    decisive = (top[:, 0] - top[:, -1] > 1e-3) | (num_candidates == 1)
    assert decisive.any()
    torch.testing.assert_close(action[decisive], expected[0][decisive], **TOLERANCE)
