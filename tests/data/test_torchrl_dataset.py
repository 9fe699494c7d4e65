"""Any TorchRL dataset for SORL: local Minari datasets end to end, and the generic path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data.datasets import utils as dataset_registry
from torchrl.data.replay_buffers import TensorDictReplayBuffer, TensorStorage

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss
from sorl_torchrl.data.make_minari import main as make_minari_main
from sorl_torchrl.data.make_minari import record
from sorl_torchrl.data.torchrl_dataset import (
    directory_fingerprint,
    open_dataset,
    parse_dataset_spec,
)

DATASET = "sorl/invertedpendulum/mixed-v0"
SPEC = f"minari:{DATASET}"
HIGH = 3.0  # InvertedPendulum-v5 actions lie in [-3, 3]


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four short episodes: the noisy controller truncates at 20 steps, high noise falls."""
    root = tmp_path_factory.mktemp("minari")
    record(dataset_id=DATASET, episodes=4, noise=1.0, max_episode_steps=20, root=root)
    record(dataset_id="sorl/invertedpendulum/falls-v0", episodes=3, noise=6.0, root=root)
    return root


def raw_transitions(dataset_dir: Path) -> dict[str, np.ndarray]:
    """The transitions read straight from Minari's HDF5 file, episodes in id order."""
    parts: dict[str, list[np.ndarray]] = {}
    with h5py.File(dataset_dir / "data" / "main_data.hdf5", "r") as file:
        for name in sorted(file, key=lambda key: int(key.removeprefix("episode_"))):
            episode = file[name]
            observations = episode["observations"][()]
            for key, value in (
                ("observation", observations[:-1]),
                ("next_observation", observations[1:]),
                ("action", episode["actions"][()]),
                ("reward", episode["rewards"][()]),
                ("terminated", episode["terminations"][()]),
                ("truncated", episode["truncations"][()]),
            ):
                parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def test_batches_hold_the_minari_arrays(minari_root):
    data = open_dataset(SPEC, batch_size=64, root=minari_root)
    raw = raw_transitions(minari_root / DATASET)
    assert len(data.buffer) == len(raw["action"])
    assert raw["truncated"].sum() >= 1  # some episodes reached the 20-step limit
    batch = data.buffer.sample()
    rows = batch["index"].numpy()
    for key in ("observation", "action", ("next", "observation"), ("next", "reward")):
        assert batch[key].dtype == torch.float32
    np.testing.assert_allclose(batch["observation"], raw["observation"][rows], rtol=1e-6)
    np.testing.assert_allclose(
        batch["next", "observation"], raw["next_observation"][rows], rtol=1e-6
    )
    np.testing.assert_allclose(batch["action"], raw["action"][rows] / HIGH, atol=1e-5)
    assert batch["action"].abs().max() < 1
    np.testing.assert_array_equal(batch["next", "reward"].squeeze(-1), raw["reward"][rows])
    np.testing.assert_array_equal(batch["next", "truncated"].squeeze(-1), raw["truncated"][rows])
    np.testing.assert_array_equal(
        batch["next", "done"].squeeze(-1), raw["truncated"][rows] | raw["terminated"][rows]
    )


def test_torchrl_minari_class_still_stores_zeros(minari_root, tmp_path, monkeypatch):
    """Why LocalMinariExperienceReplay exists; when this fails, TorchRL's class can be used."""
    from torchrl.data.datasets import MinariExperienceReplay

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    theirs = MinariExperienceReplay(
        DATASET, batch_size=4, root=tmp_path, load_from_local_minari=True
    ).storage.get(slice(None))
    ours = open_dataset(SPEC, batch_size=4, root=minari_root).buffer.storage.get(slice(None))
    assert ours["observation"].abs().sum() > 0 and ours["action"].abs().sum() > 0
    assert theirs["observation"].abs().sum() == 0 and theirs["action"].abs().sum() == 0
    assert sorted(theirs.keys(True, True), key=str) == sorted(ours.keys(True, True), key=str)


def test_terminations_become_the_loss_mask(minari_root):
    data = open_dataset("minari:sorl/invertedpendulum/falls-v0", batch_size=4, root=minari_root)
    raw = raw_transitions(minari_root / "sorl/invertedpendulum/falls-v0")
    assert raw["terminated"].sum() == 3  # the pole fell in each episode
    stored = data.buffer.storage.get(slice(None))
    np.testing.assert_array_equal(stored["next", "terminated"].squeeze(-1), raw["terminated"])
    np.testing.assert_array_equal(
        stored["next", "done"].squeeze(-1), raw["terminated"] | raw["truncated"]
    )


def test_sizes_env_and_description_come_from_the_data(minari_root):
    data = open_dataset(SPEC, batch_size=8, root=minari_root)
    raw = raw_transitions(minari_root / DATASET)
    assert (data.observation_dim, data.action_dim) == (
        raw["observation"].shape[1],
        raw["action"].shape[1],
    )
    metadata = json.loads((minari_root / DATASET / "data" / "metadata.json").read_text())
    assert data.env_id == json.loads(metadata["env_spec"])["id"] == "InvertedPendulum-v5"
    described = data.describe()
    assert described["episodes"] == 4 and described["transitions"] == len(raw["action"])
    assert described["prefix"] == "minari" and described["id"] == SPEC
    assert described["source"] == "local"
    assert described["action_low"] == [-HIGH] and described["action_high"] == [HIGH]
    assert described["fingerprint"] == directory_fingerprint(minari_root / DATASET).token
    size = sum(p.stat().st_size for p in (minari_root / DATASET).rglob("*") if p.is_file())
    assert described["size_bytes"] == size
    with pytest.raises(ValueError, match="observation size 5 and action size 1.*size 4 and"):
        data.check_sizes(5, 1, "checkpoint.pt")


def test_shortcut_loss_trains_on_a_batch(minari_root):
    data = open_dataset(SPEC, batch_size=16, root=minari_root)
    actor = ShortcutActor(data.observation_dim, data.action_dim, num_cells=(8,))
    critic = QEnsemble(data.observation_dim, data.action_dim, num_cells=(8,))
    loss = ShortcutLoss(actor, critic, discretization_steps=4, max_bptt_steps=4)
    out = loss(data.buffer.sample())
    total = out["loss_actor"] + out["loss_qvalue"]
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in actor.parameters())


def test_env_maps_policy_actions_back_to_the_dataset_scale(minari_root):
    data = open_dataset(SPEC, batch_size=32, root=minari_root)
    raw = raw_transitions(minari_root / DATASET)
    env = data.make_env()
    try:
        assert env.action_spec.space.low.tolist() == [-1.0]
        assert env.action_spec.space.high.tolist() == [1.0]
        assert env.max_episode_steps == 20
        simulator = env.base_env._env.unwrapped
        batch = data.buffer.sample()
        td = env.reset()
        for unit_action, row in zip(batch["action"][:5], batch["index"][:5]):
            td["action"] = unit_action
            td = env.step(td)["next"].clone()
            assert td["observation"].dtype == torch.float32
            # MuJoCo keeps the control it applied: the dataset's action, in env units
            np.testing.assert_allclose(simulator.data.ctrl, raw["action"][row], atol=1e-4)
    finally:
        env.close()
    batched = data.make_env(num_envs=2)
    try:
        assert batched.batch_size == torch.Size([2]) and batched.max_episode_steps == 20
        assert batched.rollout(3)["next", "reward"].shape == torch.Size([2, 3, 1])
    finally:
        batched.close()


def test_the_copy_is_rebuilt_when_the_data_changes(minari_root, tmp_path):
    shutil.copytree(minari_root / DATASET, tmp_path / DATASET)
    before = directory_fingerprint(tmp_path / DATASET)
    assert before.sha256 == directory_fingerprint(minari_root / DATASET).sha256
    open_dataset(SPEC, batch_size=4, root=tmp_path)
    with h5py.File(tmp_path / DATASET / "data" / "main_data.hdf5", "r+") as file:
        file["episode_0"]["rewards"][0] = 7
    assert directory_fingerprint(tmp_path / DATASET).sha256 != before.sha256
    data = open_dataset(SPEC, batch_size=4, root=tmp_path)
    assert data.describe()["fingerprint"] != before.token
    assert data.buffer.storage.get(0)["next", "reward"].item() == 7


def edited_copy(minari_root: Path, tmp_path: Path, **changes) -> Path:
    shutil.copytree(minari_root / DATASET, tmp_path / DATASET)
    path = tmp_path / DATASET / "data" / "metadata.json"
    metadata = json.loads(path.read_text())
    action = json.loads(metadata["action_space"])
    for key, value in changes.items():
        if key == "data_format":
            metadata[key] = value
        else:
            action[key] = value
    metadata["action_space"] = json.dumps(action)
    path.write_text(json.dumps(metadata))
    return tmp_path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"type": "Discrete", "n": 3}, "Discrete action space.*continuous actions"),
        ({"low": [float("-inf")]}, "infinite bounds"),
        ({"data_format": "arrow"}, "stored as 'arrow'.*main_data.hdf5"),
    ],
)
def test_data_sorl_cannot_use_is_refused(minari_root, tmp_path, changes, message):
    root = edited_copy(minari_root, tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        open_dataset(SPEC, batch_size=4, root=root)


def test_bad_specs_are_refused_with_the_fix(minari_root):
    with pytest.raises(ValueError, match="must be '<prefix>:<id>'.*minari"):
        parse_dataset_spec("sorl/invertedpendulum/mixed-v0")
    with pytest.raises(ValueError, match="Unknown dataset source 'minary'.*minari"):
        parse_dataset_spec("minary:x")
    with pytest.raises(ValueError, match="names no dataset"):
        parse_dataset_spec("minari:")
    assert parse_dataset_spec("ogbench:cube-single-play-singletask-v0")[0] == "ogbench"
    with pytest.raises(ValueError, match="OGBenchExperienceReplay"):
        open_dataset("ogbench:cube-single-play-singletask-v0", batch_size=4)
    with pytest.raises(FileNotFoundError, match=f"nope/x-v0.*{DATASET}.*make_minari"):
        open_dataset("minari:nope/x-v0", batch_size=4, root=minari_root)


def test_make_minari_refuses_to_overwrite(minari_root, capsys):
    with pytest.raises(SystemExit) as exit_info:
        make_minari_main(["--dataset-id", DATASET, "--root", str(minari_root)])
    assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(ValueError, match="gains for InvertedPendulum-v5 only"):
        record("Hopper-v5", episodes=1, policy="linear", root=minari_root)


class ToyDataset(TensorDictReplayBuffer):
    """A source already in the TED layout, as other TorchRL dataset classes give it."""

    def __init__(
        self, dataset_id: str, batch_size: int, root: str, action_scale: float = 1.0, reward=1.0
    ):
        n = 6
        flags = torch.arange(n).unsqueeze(-1) % 3 == 2
        data = TensorDict(
            {
                "observation": torch.arange(n * 2, dtype=torch.float64).reshape(n, 2),
                "action": torch.linspace(-action_scale, action_scale, n).unsqueeze(-1),
                "next": {
                    "observation": torch.ones(n, 2, dtype=torch.float64),
                    "reward": torch.full((n, 1), reward, dtype=torch.float64),
                    "terminated": flags,
                    "done": flags.clone(),
                },
            },
            batch_size=[n],
        )
        self.data_path_root = Path(root) / dataset_id
        data.memmap(self.data_path_root)
        super().__init__(storage=TensorStorage(data), batch_size=batch_size)


def test_other_sources_go_through_torchrl_load_dataset(monkeypatch, tmp_path):
    monkeypatch.setitem(dataset_registry._DATASET_REGISTRY, "toyted", ToyDataset)
    data = open_dataset("toyted:tiny", batch_size=4, root=tmp_path)
    assert (data.observation_dim, data.action_dim, len(data.buffer)) == (2, 1, 6)
    assert data.buffer.sample()["observation"].dtype == torch.float32
    assert data.make_env() is None and "evaluation is off" in data.evaluation_note
    assert data.describe()["path"] == str((tmp_path / "tiny").resolve())

    def bad(dataset_id, **kwargs):
        wide = dataset_id == "wide"
        return ToyDataset(
            dataset_id,
            action_scale=2.0 if wide else 1.0,
            reward=1.0 if wide else float("nan"),
            **kwargs,
        )

    monkeypatch.setitem(dataset_registry._DATASET_REGISTRY, "toyted", bad)
    with pytest.raises(ValueError, match="outside the action space.*found \\[-2, 2\\]"):
        open_dataset("toyted:wide", batch_size=4, root=tmp_path)
    with pytest.raises(ValueError, match="toyted:nan: next.reward contains 6 non-finite"):
        open_dataset("toyted:nan", batch_size=4, root=tmp_path)
