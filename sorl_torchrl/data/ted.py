"""Turn OGBench's row layout (one row per env step) into TorchRL's TED transitions.

In the files, episodes are concatenated and ``terminals`` marks the last row of each
episode. That last row has no next state, so it starts no transition; every other row
``t`` gives the transition ``(s_t, a_t, s_{t+1})``, as in ``ogbench.load_dataset``.

Examples:
    >>> import numpy as np
    >>> obs = np.arange(6, dtype=np.float32)[:, None]
    >>> terminals = np.array([0, 0, 1, 0, 0, 1], dtype=bool)
    >>> td = rows_to_ted(obs, np.zeros((6, 1), np.float32), terminals,
    ...                  rewards=np.zeros(6, np.float32), successes=np.zeros(6, bool))
    >>> td["observation"].squeeze(-1).tolist(), td["next", "observation"].squeeze(-1).tolist()
    ([0.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 5.0])
    >>> td["next", "truncated"].squeeze(-1).tolist(), td["episode"].tolist()
    ([False, True, False, True], [0, 0, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["rows_to_ted", "DEFAULT_ACTION_CLIP"]

DEFAULT_ACTION_CLIP = 1.0 - 1e-5
"""Actions are clipped to ``[-c, c]`` so that ``atanh`` of a dataset action stays finite."""


def rows_to_ted(
    observations: np.ndarray,
    actions: np.ndarray,
    terminals: np.ndarray,
    rewards: np.ndarray,
    successes: np.ndarray,
    action_clip: float | None = DEFAULT_ACTION_CLIP,
) -> TensorDict:
    """Build the TED TensorDict of all transitions of a file.

    Args:
        observations: ``[rows, obs_dim]``.
        actions: ``[rows, act_dim]``.
        terminals: ``[rows]``, true on the last row of each episode.
        rewards: ``[rows]`` singletask reward of each row's state.
        successes: ``[rows]`` singletask success of each row's state.
        action_clip: Clip actions to ``[-action_clip, action_clip]`` (``None``: no clipping).

    Returns:
        A TensorDict with batch size ``[transitions]`` and keys ``observation``, ``action``,
        ``episode``, ``("next", "observation")``, ``("next", "reward")`` ``[..., 1]``,
        ``("next", "terminated")`` (= success = ``1 - mask``), ``("next", "truncated")`` and
        ``("next", "done")`` (both: last transition of a recorded episode) and
        ``("next", "action")``: the action of the following transition, ``action[min(i + 1,
        n - 1)]``, as the released code's ``next_actions`` (ReBRAC's critic penalty reads
        it). At the end of an episode it is the next episode's first action, a quirk the
        released code warns about, reproduced so ReBRAC trains on the same targets.
    """
    terminals = np.asarray(terminals, dtype=bool)
    valid = ~terminals
    next_rows = np.concatenate([[False], valid[:-1]])
    episode_ends = np.concatenate([terminals[1:], [True]])[valid]
    episode = np.concatenate([[0], np.cumsum(terminals)[:-1]])[valid]
    action = actions[valid]
    if action_clip is not None:
        action = np.clip(action, -action_clip, action_clip)
    episode_end = torch.from_numpy(episode_ends).unsqueeze(-1)
    n = int(valid.sum())
    next_action_rows = np.minimum(np.arange(n) + 1, n - 1)
    return TensorDict(
        {
            "observation": torch.from_numpy(np.ascontiguousarray(observations[valid])),
            "action": torch.from_numpy(np.ascontiguousarray(action)),
            "episode": torch.from_numpy(episode.astype(np.int64)),
            "next": {
                "observation": torch.from_numpy(np.ascontiguousarray(observations[next_rows])),
                "action": torch.from_numpy(np.ascontiguousarray(action[next_action_rows])),
                "reward": torch.from_numpy(rewards[valid].astype(np.float32)).unsqueeze(-1),
                "terminated": torch.from_numpy(successes[valid].astype(bool)).unsqueeze(-1),
                "truncated": episode_end,
                "done": episode_end.clone(),
            },
        },
        batch_size=[n],
    )
