"""online_steps=M: the online phase of the recipe, its resume, init_from, and each algorithm."""

import csv
import json

import pytest
import torch
from recipe_helpers import compose_train, tiny_overrides

from sorl_torchrl.checkpoint import CheckpointError, load_checkpoint
from sorl_torchrl.data import online as online_module
from sorl_torchrl.recipes.algorithms import ALGORITHMS
from sorl_torchrl.recipes.train import run

#: Offline updates, online steps and the collecting env's time limit: episodes end at steps
#: 8, 16, 24, ... (or earlier on success), so checkpoints fall at 16 and 32 with interval 12.
ONLINE = ["online.max_episode_steps=8", "checkpoint_interval=12", "log_interval=4"]


def online_overrides(root, run_dir, updates=8, online_steps=40, extra=()):
    return (
        tiny_overrides(root, run_dir, updates)
        + ONLINE
        + [f"online_steps={online_steps}", "eval.inference_steps=[1]", "eval.num_candidates=[1]"]
        + list(extra)
    )


def online_rows(run_dir):
    with open(run_dir / "logs" / "online.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_online_phase_collects_updates_and_records(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    results = run(compose_train(online_overrides(tiny_cube_root, run_dir)))
    assert results["status"] == "finished"
    summary = results["online"]
    assert summary["steps"] == summary["transitions"] == 40
    assert summary["episodes"] >= 5  # a time limit of 8 steps: at least 5 in 40 steps
    assert summary["inference_steps"] == 1 and summary["num_candidates"] == 1
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == 8 and state["online"]["step"] == 40
    assert state["online"]["transitions"]["count"] == 40
    # one update per offline update and per online step (SORL's shared Adam counts two
    # steps per update, as in test_train's resume check)
    assert state["optimizers"]["shared"]["state"][0]["step"] == 2 * (8 + 40)
    rows = online_rows(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(12, 49, 4))  # update counts
    assert {"loss_actor", "episodes", "env_steps_per_second"} <= set(rows[0])
    assert [e["step"] for e in results["evaluations"]] == [8, 48]  # before and after
    assert results["segments"][-1]["to_update"] == 48


def test_interrupted_online_run_resumes_exactly(tiny_cube_root, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(compose_train(online_overrides(tiny_cube_root, straight)))

    stopped = tmp_path / "stopped"
    add = online_module.OnlineTransitions.add
    calls = {"n": 0}

    def add_then_crash(self, transitions):
        calls["n"] += 1
        if calls["n"] > 37:
            raise KeyboardInterrupt("killed")
        add(self, transitions)

    monkeypatch.setattr(online_module.OnlineTransitions, "add", add_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run(compose_train(online_overrides(tiny_cube_root, stopped)))
    monkeypatch.setattr(online_module.OnlineTransitions, "add", add)
    interrupted = load_checkpoint(stopped / "checkpoint.pt")
    assert 0 < interrupted["online"]["step"] < 37  # the last checkpoint, between episodes
    results = run(compose_train(online_overrides(tiny_cube_root, stopped)))
    assert results["resumed_from_update"] == 8 + interrupted["online"]["step"]

    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(stopped / "checkpoint.pt")
    for key in a["loss"]:
        torch.testing.assert_close(a["loss"][key], b["loss"][key], rtol=0, atol=0, msg=key)
    rows_a, rows_b = a["online"]["transitions"]["rows"], b["online"]["transitions"]["rows"]
    for key in ("observation", "action"):
        torch.testing.assert_close(rows_a[key], rows_b[key], rtol=0, atol=0)
    torch.testing.assert_close(rows_a["next"]["reward"], rows_b["next"]["reward"], rtol=0, atol=0)
    # the same losses at every logged step, the rows past the checkpoint written once
    losses = [(r["step"], r["loss_actor"], r["loss_qvalue"]) for r in online_rows(straight)]
    assert losses == [(r["step"], r["loss_actor"], r["loss_qvalue"]) for r in online_rows(stopped)]


def test_a_finished_offline_run_is_extended_online_and_then_skipped(tiny_cube_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_train(online_overrides(tiny_cube_root, run_dir, online_steps=0)))
    with pytest.raises(FileExistsError, match="more updates or online steps"):
        run(compose_train(online_overrides(tiny_cube_root, run_dir, online_steps=16)))
    extended = run(
        compose_train(online_overrides(tiny_cube_root, run_dir, online_steps=16) + ["resume=true"])
    )
    assert extended["resumed_from_update"] == 8 and extended["online"]["steps"] == 16
    again = run(compose_train(online_overrides(tiny_cube_root, run_dir, online_steps=16)))
    assert again["finished_at"] == extended["finished_at"]  # skipped: the stored record
    shorter = online_overrides(tiny_cube_root, run_dir, online_steps=8) + ["resume=true"]
    with pytest.raises(CheckpointError, match="online_steps>=16"):
        run(compose_train(shorter))
    offline_after = online_overrides(tiny_cube_root, run_dir, updates=12, online_steps=24)
    with pytest.raises(CheckpointError, match="offline updates cannot follow online ones"):
        run(compose_train(offline_after + ["resume=true"]))


def test_init_from_another_run(tiny_cube_root, tmp_path):
    source = tmp_path / "offline"
    run(compose_train(online_overrides(tiny_cube_root, source, online_steps=0)))
    tuned = tmp_path / "tuned"
    results = run(
        compose_train(online_overrides(tiny_cube_root, tuned, extra=[f"init_from={source}"]))
    )
    assert results["init_from"]["update"] == 8
    assert results["init_from"]["path"] == str((source / "checkpoint.pt").resolve())
    assert results["online"]["steps"] == 40
    # the run's first evaluation (before the online phase) is the source's weights
    before = json.loads((source / "results.json").read_text())["grid"][0]["success_rate"]
    assert results["evaluations"][0]["step"] == 8
    assert results["evaluations"][0]["grid"][0]["success_rate"] == before
    with pytest.raises(CheckpointError, match="algo=sorl"):
        run(
            compose_train(
                online_overrides(tiny_cube_root, tmp_path / "x", extra=[f"init_from={source}"])
                + ["algo=iql"]
            )
        )
    with pytest.raises(CheckpointError, match="num_updates=8"):
        run(
            compose_train(
                online_overrides(
                    tiny_cube_root, tmp_path / "y", updates=4, extra=[f"init_from={source}"]
                )
            )
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(
            compose_train(
                online_overrides(
                    tiny_cube_root, tmp_path / "z", extra=[f"init_from={tmp_path / 'nothing'}"]
                )
            )
        )


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_fine_tunes(algo, tiny_cube_root, tmp_path):
    extra = [f"algo={algo}", "online.balanced_sampling=true"]
    results = run(
        compose_train(
            online_overrides(tiny_cube_root, tmp_path / algo, online_steps=12, extra=extra)
        )
    )
    assert results["status"] == "finished" and results["online"]["transitions"] == 12
    state = load_checkpoint(tmp_path / algo / "checkpoint.pt")
    assert state["online"]["step"] == 12


def _actions(policy, observation, n=4000):
    from tensordict import TensorDict

    td = TensorDict(observation=observation.expand(n, -1).clone(), batch_size=[n])
    with torch.no_grad():
        return policy(td)["action"]


def test_exploring_policies_sample_as_the_released_code():
    from sorl_torchrl.recipes.algorithms import build_algorithm
    from sorl_torchrl.recipes.online import exploring_policy
    from sorl_torchrl.recipes.runtime import Runtime

    cpu = Runtime(torch.device("cpu"), None, "eager", False, None)
    torch.manual_seed(0)
    observation = torch.randn(1, 28)
    iql = build_algorithm(compose_train(["algo=iql", "network=tiny"]), cpu)
    mode = _actions(iql.policy, observation, 1)  # temperature 0: the mean, clipped
    explored = _actions(exploring_policy(iql, 1, 1, 1.0), observation)
    # clip(mu + eps), eps ~ N(0, 1): unclipped components are Gaussian with sd 1 around mu,
    # and P(mu + eps > 1) = 1 - Phi(1 - mu) per component (Phi: the normal CDF)
    normal = torch.distributions.Normal(0.0, 1.0)
    above = 1 - normal.cdf(1 - mode[0])
    sd = (above * (1 - above) / explored.shape[0]).sqrt()
    assert ((explored == 1).float().mean(0) - above).abs().max() < 5 * sd.max()
    rebrac = build_algorithm(compose_train(["algo=rebrac", "network=tiny"]), cpu)
    mode = _actions(rebrac.policy, observation, 1)
    explored = _actions(exploring_policy(rebrac, 1, 1, 1.0), observation)
    offset = explored - mode
    # 0.2 * eps clipped at +-0.5 (|eps| > 2.5 has probability 1.2%), then clipped to [-1, 1]
    inside = (mode.abs() < 0.4).expand_as(offset)
    assert offset.abs().max() <= 0.5 + 1e-6
    assert 0.185 < offset[inside].std() < 0.21
    # FQL and SORL explore with their own noise: the sampler itself
    fql = build_algorithm(compose_train(["algo=fql", "network=tiny"]), cpu)
    sampler = exploring_policy(fql, 1, 1, 1.0)
    assert type(sampler).__name__ == "BestOfNSampler" and sampler.num_candidates == 1
    assert exploring_policy(rebrac, 1, 4, 0.5).candidate_temperature == 0.5
