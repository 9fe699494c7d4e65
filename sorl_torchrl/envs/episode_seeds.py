"""Seed every episode of an env: episode ``i`` starts from ``seed + i``, whoever resets it.

A TorchRL collector resets its env itself when an episode ends, so the start states of the
episodes it collects depend on the env's random state, which a checkpoint does not hold.
:class:`EpisodeSeeds` seeds each reset instead (``set_seed(seed + i)`` on the base env, then
the reset, as :func:`~sorl_torchrl.envs.evaluate_policy` seeds its episodes), and counts the
episodes in a buffer: a run restored with that count (:attr:`EpisodeSeeds.episodes`) plays
the same episodes from there on as one that never stopped.

Examples:
    >>> from torchrl.envs import TransformedEnv
    >>> from sorl_torchrl.envs import make_ogbench_env
    >>> env = TransformedEnv(make_ogbench_env("pointmaze-medium-navigate-singletask-v0"),
    ...                      EpisodeSeeds(seed=7))
    >>> first, second = env.reset()["observation"], env.reset()["observation"]
    >>> int(env.transform.episodes)
    2
    >>> again = TransformedEnv(make_ogbench_env("pointmaze-medium-navigate-singletask-v0"),
    ...                        EpisodeSeeds(seed=7, first_episode=1))
    >>> bool((again.reset()["observation"] == second).all())  # episode 1 again
    True
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.envs.transforms import Transform

from sorl_torchrl._validation import SEED, Number

__all__ = ["EpisodeSeeds"]


class EpisodeSeeds(Transform):
    """Seed the ``i``-th reset of the env it is appended to with ``seed + i``.

    Args:
        seed: the seed of episode 0.
        first_episode: the episode the next reset starts (a restored run's count).

    Raises:
        SettingError: ``seed`` or ``first_episode`` is not a non-negative integer.
    """

    def __init__(self, seed: int, first_episode: int = 0) -> None:
        super().__init__()
        self.seed = SEED(seed, "seed")
        first = Number("[0, inf)", integer=True)(first_episode, "first_episode")
        self.register_buffer("episodes", torch.tensor(first, dtype=torch.long))

    def _reset_env_preprocess(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        base_env = self.container.base_env
        if base_env.batch_size.numel() != 1:
            raise RuntimeError(
                "EpisodeSeeds seeds one env's episodes; the env it is on has batch size "
                f"{tuple(base_env.batch_size)}. Collect from a single env."
            )
        base_env.set_seed(self.seed + int(self.episodes))
        self.episodes += 1
        return tensordict
