"""The online buffer and the mixed batches against hand computations and known distributions."""

import math

import pytest
import torch
from tensordict import TensorDict

from sorl_torchrl.data.online import MixedBatches, OnlineTransitions


def rows(n: int, offset: float = 0.0, done_every: int = 0, episode: bool = True) -> TensorDict:
    """TED rows whose observation and action are their row number plus ``offset``."""
    index = torch.arange(n, dtype=torch.float32)[:, None] + offset
    done = torch.zeros(n, 1, dtype=torch.bool)
    if done_every:
        done[done_every - 1 :: done_every] = True
    data = {
        "observation": index.expand(n, 3).clone(),
        "action": index.expand(n, 2).clone(),
        ("next", "observation"): index.expand(n, 3) + 0.5,
        ("next", "action"): torch.zeros(n, 2),
        ("next", "reward"): index * 0.1,
        ("next", "done"): done,
        ("next", "terminated"): done.clone(),
        ("next", "truncated"): torch.zeros(n, 1, dtype=torch.bool),
    }
    if episode:
        data["episode"] = torch.zeros(n, dtype=torch.long)
    return TensorDict(data, batch_size=[n])


def collected(n: int, offset: float = 100.0, done_every: int = 0) -> TensorDict:
    """What a collector gives: no next action nor episode id, extra entries."""
    steps = rows(n, offset, done_every).exclude(("next", "action"), "episode")
    steps["collector", "traj_ids"] = torch.zeros(n, dtype=torch.long)
    steps["next", "success"] = steps["next", "done"].clone()
    return steps


def test_rows_keep_the_offline_entries_and_the_next_action_of_the_following_row():
    online = OnlineTransitions(rows(4), capacity=10)
    online.add(collected(5, done_every=3))  # episodes: rows 0-2 and 3-4 (unfinished)
    stored = online[torch.arange(5)]
    assert set(stored.keys(True, True)) == set(rows(1).keys(True, True))
    assert stored["observation"][:, 0].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    # action[min(i + 1, n - 1)], across the episode boundary (row 2 -> 103), as offline
    assert stored["next", "action"][:, 0].tolist() == [101.0, 102.0, 103.0, 104.0, 104.0]
    assert stored["episode"].tolist() == [-1, -1, -1, -2, -2]
    assert online.episodes == 1
    assert stored["next", "reward"].dtype == torch.float32
    expected = torch.tensor([10.0, 10.1, 10.2, 10.3, 10.4])
    assert torch.allclose(stored["next", "reward"][:, 0], expected)


def test_added_one_by_one_equals_added_at_once():
    one = OnlineTransitions(rows(1), capacity=8)
    for step in collected(6, done_every=2).split(1):
        one.add(step)
    many = OnlineTransitions(rows(1), capacity=8)
    many.add(collected(6, done_every=2))
    assert (one[torch.arange(6)] == many[torch.arange(6)]).all()
    assert one.episodes == many.episodes == 3


def test_state_dict_round_trip_into_a_larger_buffer():
    online = OnlineTransitions(rows(1), capacity=6)
    online.add(collected(6, done_every=4))
    restored = OnlineTransitions(rows(1), capacity=20)
    restored.load_state_dict(online.state_dict())
    assert len(restored) == 6 and restored.episodes == 1
    assert (restored[torch.arange(6)] == online[torch.arange(6)]).all()
    restored.add(collected(1, offset=500.0))  # the next action of the last row is updated
    assert restored[torch.tensor([5])]["next", "action"][0, 0].item() == 500.0
    small = OnlineTransitions(rows(1), capacity=3)
    with pytest.raises(ValueError, match="online_steps>=6"):
        small.load_state_dict(online.state_dict())


def test_full_buffer_and_missing_entries_are_refused():
    online = OnlineTransitions(rows(1), capacity=2)
    with pytest.raises(KeyError, match="terminated"):
        online.add(collected(1).exclude(("next", "terminated")))
    online.add(collected(2))
    with pytest.raises(RuntimeError, match="full"):
        online.add(collected(1))
    with pytest.raises(ValueError, match="capacity"):
        OnlineTransitions(rows(1), capacity=0)


def test_balanced_batches_are_half_offline_half_online():
    torch.manual_seed(0)
    offline, online = rows(50), OnlineTransitions(rows(1), capacity=10)
    online.add(collected(3))
    batch = MixedBatches(offline, online, batch_size=64, balanced=True).sample()
    is_online = batch["observation"][:, 0] >= 100
    assert batch.batch_size == torch.Size([64])
    assert is_online.sum().item() == 32 and bool(is_online[32:].all())
    # each online row is drawn uniformly: all 3 appear among 32 draws (P(miss) < 1e-5)
    assert set(batch["observation"][is_online, 0].tolist()) == {100.0, 101.0, 102.0}


def test_union_batches_draw_online_rows_in_proportion():
    # n_off = 90, n_on = 10: each draw is online with p = 0.1; over 200 batches of 64 the
    # count is Binomial(12800, 0.1): mean 1280, sd 33.9; 5 sd is a 1-in-3-million miss.
    torch.manual_seed(1)
    offline, online = rows(90), OnlineTransitions(rows(1), capacity=10)
    online.add(collected(10))
    batches = MixedBatches(offline, online, batch_size=64, balanced=False)
    count = 0
    offline_seen = torch.zeros(90)
    for _ in range(200):
        batch = batches.sample()
        assert batch.batch_size == torch.Size([64])
        is_online = batch["observation"][:, 0] >= 100
        count += int(is_online.sum())
        offline_seen.index_add_(
            0, batch["observation"][~is_online, 0].long(), torch.ones(int((~is_online).sum()))
        )
    sd = math.sqrt(12800 * 0.1 * 0.9)
    assert abs(count - 1280) < 5 * sd
    assert bool((offline_seen > 0).all())  # every offline row is reachable


def test_same_seed_same_batches_and_empty_online_refused():
    offline, online = rows(30), OnlineTransitions(rows(1), capacity=5)
    batches = MixedBatches(offline, online, batch_size=16, balanced=False)
    with pytest.raises(RuntimeError, match="No online transition"):
        batches.sample()
    online.add(collected(2))
    torch.manual_seed(3)
    first = batches.sample()
    torch.manual_seed(3)
    assert (batches.sample() == first).all()
