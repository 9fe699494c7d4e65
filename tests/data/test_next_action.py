"""``("next", "action")``: the following transition's action, as the released code builds it."""

import numpy as np
import torch

from sorl_torchrl.data.ted import rows_to_ted


def test_next_action_is_the_following_transitions_action_even_across_episodes():
    # two recorded episodes of 3 rows each; the last row of each is terminal (no transition)
    actions = np.arange(6, dtype=np.float32)[:, None] / 10  # row r has action r / 10
    terminals = np.array([0, 0, 1, 0, 0, 1], dtype=bool)
    obs = np.arange(6, dtype=np.float32)[:, None]
    zeros = np.zeros(6, dtype=np.float32)
    ted = rows_to_ted(obs, actions, terminals, zeros, zeros, action_clip=None)
    # transitions are rows 0, 1 (episode 0) and 3, 4 (episode 1)
    assert ted["action"].squeeze(-1).tolist() == torch.tensor([0.0, 0.1, 0.3, 0.4]).tolist()
    # row 1's next is row 3's action: the next episode's first (released-code quirk);
    # the last transition's next action is its own (index clamped at n - 1)
    expected = torch.tensor([0.1, 0.3, 0.4, 0.4])
    assert ted["next", "action"].squeeze(-1).tolist() == expected.tolist()


def test_next_action_is_clipped_like_the_action():
    actions = np.array([[0.5], [2.0], [0.0]], dtype=np.float32)
    terminals = np.array([0, 0, 1], dtype=bool)
    zeros = np.zeros(3, dtype=np.float32)
    ted = rows_to_ted(np.zeros((3, 1), np.float32), actions, terminals, zeros, zeros, 0.9)
    assert ted["next", "action"].squeeze(-1).tolist() == [0.8999999761581421] * 2
