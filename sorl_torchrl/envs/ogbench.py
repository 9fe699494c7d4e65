"""TorchRL envs for OGBench singletask tasks (state based).

:func:`make_ogbench_env` returns a :class:`~torchrl.envs.GymWrapper` around the OGBench
singletask env (float32 observations, ``success`` in every step's tensordict, OGBench's
horizon as the time limit), or a :class:`~torchrl.envs.SerialEnv` /
:class:`~torchrl.envs.ParallelEnv` of several for batched evaluation.

Success timing, one rule everywhere: ``"post"``. OGBench computes an episode's success,
reward and termination either on the state *after* the action (``"post"``, what ogbench 1.1
did, and what the published SORL numbers were made with) or on the state *before* it
(``"pre"``, the default of the ogbench >= 1.2 registrations). ``"post"`` is the default of
:func:`make_ogbench_env`, of :func:`~sorl_torchrl.envs.evaluate_policy` and of every recipe
config (``env.success_timing``); the env carries its timing as ``env.success_timing``, and
the (k, N) grid rows record it. With ``"pre"`` a successful episode lasts one step longer.

Examples:
    >>> env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0", seed=0)
    >>> td = env.rollout(3)
    >>> td["observation"].dtype, td["next", "success"].shape, env.max_episode_steps
    (torch.float32, torch.Size([3, 1]), 1000)
    >>> env.success_timing
    'post'
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Literal

import gymnasium
import numpy as np
import torch
from torchrl.data import Binary, Composite
from torchrl.envs import EnvBase, GymWrapper, ParallelEnv, SerialEnv
from torchrl.envs.gym_like import default_info_dict_reader

from sorl_torchrl.data.specs import parse_env_id

__all__ = ["make_ogbench_env", "OGBenchInfoWrapper", "resolve_env_id"]

SuccessTiming = Literal["pre", "post"]


def resolve_env_id(env_id: str) -> tuple[str, int, int]:
    """OGBench env id, horizon and task for a singletask env or dataset id.

    >>> resolve_env_id("cube-single-play-singletask-task3-v0")
    ('cube-single-singletask-task3-v0', 200, 3)
    """
    ogbench_id, spec, task = parse_env_id(env_id)
    return ogbench_id, spec.horizon, task


class OGBenchInfoWrapper(gymnasium.Wrapper):
    """Make an OGBench env TorchRL-friendly: float32 observations, ``success`` as an array.

    OGBench returns ``info["success"]`` as a Python float or bool, which TorchRL's info
    reader cannot store; the wrapper keeps only ``success``, as a numpy bool, also at reset.

    OGBench's resets also draw from numpy's *global* RNG (the maze start noise, a random
    task id). When ``reset`` gets a seed, the wrapper seeds the action space and gives the
    env its own copy of that global RNG, seeded with ``seed``: every reset of this env draws
    from its own copy, and the caller's global numpy state is left as it was. So envs that
    share a process (a :class:`~torchrl.envs.SerialEnv`) give each the episodes of its own
    seed, as if each ran alone. (Steps use the global RNG only in OGBench's teleport mazes,
    which the package does not ship.)

    Examples:
        >>> import numpy as np
        >>> from sorl_torchrl.envs import make_ogbench_env
        >>> env = make_ogbench_env("pointmaze-medium-navigate-singletask-v0")
        >>> state = np.random.get_state()[1].copy()
        >>> first = env.reset(seed=3)["observation"]
        >>> bool((np.random.get_state()[1] == state).all())  # global RNG untouched
        True
        >>> bool((env.reset(seed=3)["observation"] == first).all())
        True
    """

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gymnasium.spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32
        )
        self._numpy_state: tuple | None = None  # this env's global-RNG state, once seeded

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        """Reset; see the class docstring for the seeding."""
        if seed is not None:
            self._numpy_state = np.random.RandomState(seed % 2**32).get_state()
            self.env.action_space.seed(seed)
        if self._numpy_state is None:
            ob, _ = self.env.reset(seed=seed, options=options)
        else:
            outer = np.random.get_state()
            np.random.set_state(self._numpy_state)
            try:
                ob, _ = self.env.reset(seed=seed, options=options)
            finally:
                self._numpy_state = np.random.get_state()
                np.random.set_state(outer)
        return ob.astype(np.float32), {"success": np.array([False])}

    def step(self, action: np.ndarray) -> tuple:
        """Step and convert the observation and ``success``."""
        ob, reward, terminated, truncated, info = self.env.step(action)
        return (
            ob.astype(np.float32),
            float(reward),
            bool(terminated),
            bool(truncated),
            {"success": np.array([bool(info["success"])])},
        )


def _check_render_size(render_size: Any) -> tuple[int, int] | None:
    """``render_size`` as a ``(width, height)`` pair of positive ints, or ``None``."""
    if render_size is None:
        return None
    ok = isinstance(render_size, (tuple, list)) and len(render_size) == 2
    if ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in render_size):
        return int(render_size[0]), int(render_size[1])
    raise ValueError(
        f"render_size must be None or a (width, height) pair of positive ints, got {render_size!r}."
    )


def _make_gym_env(
    ogbench_id: str, kwargs: dict[str, Any], render_size: tuple[int, int] | None
) -> gymnasium.Env:
    """``gymnasium.make`` the OGBench env, rendering ``rgb_array`` frames of ``render_size``."""
    if render_size is None:
        return gymnasium.make(ogbench_id, **kwargs)
    width, height = render_size
    try:
        with warnings.catch_warnings():  # manipulation envs list no render modes, yet render
            warnings.filterwarnings("ignore", message=".*not in the possible render_modes")
            gym_env = gymnasium.make(
                ogbench_id, **kwargs, render_mode="rgb_array", width=width, height=height
            )
    except TypeError as err:
        raise ValueError(
            f"{ogbench_id} does not accept render_mode/width/height, so it cannot render "
            f"frames of render_size={render_size}: {err}"
        ) from err
    if gym_env.render_mode is None:  # manipulation envs render, but list no render modes
        inner = gym_env.unwrapped
        inner.metadata = {**inner.metadata, "render_modes": ["rgb_array"]}
        inner.render_mode = "rgb_array"
    return gym_env


def _make_single_env(
    ogbench_id: str,
    success_timing: SuccessTiming,
    max_episode_steps: int | None,
    device: str,
    env_kwargs: dict[str, Any],
    render_size: tuple[int, int] | None = None,
) -> GymWrapper:
    import ogbench  # noqa: F401  (registers the envs)

    kwargs = dict(env_kwargs, success_timing=success_timing)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    gym_env = OGBenchInfoWrapper(_make_gym_env(ogbench_id, kwargs, render_size))
    if render_size is None:
        env = GymWrapper(gym_env, device=device)
    else:
        with warnings.catch_warnings():  # OGBench declares no render fps (videos set theirs)
            warnings.filterwarnings("ignore", message=".*No render fps was declared")
            env = GymWrapper(gym_env, device=device, from_pixels=True, pixels_only=False)
    reader = default_info_dict_reader(
        ["success"], spec=Composite(success=Binary(1, dtype=torch.bool))
    )
    env.set_info_dict_reader(reader)
    return env


def make_ogbench_env(
    env_id: str,
    *,
    num_envs: int = 1,
    parallel: bool = False,
    success_timing: SuccessTiming = "post",
    max_episode_steps: int | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    render_size: tuple[int, int] | None = None,
    **env_kwargs: Any,
) -> EnvBase:
    """Make a TorchRL env for an OGBench singletask task.

    Args:
        env_id: Singletask env id (``"cube-single-singletask-task2-v0"``) or the
            dataset-style id used for training (``"cube-single-play-singletask-task2-v0"``).
        num_envs: Number of envs; more than one gives a batched env.
        parallel: With ``num_envs > 1``, use a :class:`~torchrl.envs.ParallelEnv`
            (one process each) instead of a :class:`~torchrl.envs.SerialEnv` (all in this
            process). A ParallelEnv changes this process's torch thread count while it runs
            and when it closes (TorchRL's doing);
            :func:`~sorl_torchrl.envs.evaluate_policy` restores it for the envs it builds.
        success_timing: ``"post"`` (the default: success on the state after the action, as
            in ogbench 1.1 and the published SORL numbers) or ``"pre"`` (on the state before
            it, the ogbench >= 1.2 registrations' default); see the module docstring.
        max_episode_steps: Override OGBench's horizon (default: 200 for cube-single, ...).
        seed: Seed passed to :meth:`~torchrl.envs.EnvBase.set_seed`.
        device: Device of the env's tensordicts.
        render_size: ``(width, height)`` of rendered frames, or ``None`` (the default: no
            rendering). When given, the OGBench env renders ``rgb_array`` frames of that
            size and every reset and step tensordict also holds ``"pixels"``, a uint8
            ``[height, width, 3]`` image, next to the state ``"observation"``. Rendering
            needs an offscreen OpenGL backend, ``MUJOCO_GL``: call
            :func:`~sorl_torchrl.envs.configure_gl_backend` first (``record_videos`` does).
            One env only (``num_envs=1``).
        **env_kwargs: Extra keyword arguments for ``gymnasium.make``.

    Returns:
        The env; its ``max_episode_steps`` attribute is the horizon and its
        ``success_timing`` attribute the timing.

    Raises:
        ValueError: Unknown env id, task or success timing; a ``render_size`` that is not
            two positive ints, or given with ``num_envs > 1``.
    """
    if success_timing not in ("pre", "post"):
        raise ValueError(f"success_timing must be 'pre' or 'post', got {success_timing!r}.")
    render_size = _check_render_size(render_size)
    if render_size is not None and num_envs != 1:
        raise ValueError(
            f"render_size needs num_envs=1 (one env renders the frames), got num_envs={num_envs}."
        )
    ogbench_id, horizon, _ = resolve_env_id(env_id)
    make = functools.partial(
        _make_single_env,
        ogbench_id,
        success_timing,
        max_episode_steps,
        str(device),
        env_kwargs,
        render_size,
    )
    if num_envs == 1:
        env: EnvBase = make()
    elif num_envs > 1:
        batched = ParallelEnv if parallel else SerialEnv
        env = batched(num_envs, make, device=device)
    else:
        raise ValueError(f"num_envs must be at least 1, got {num_envs}.")
    env.max_episode_steps = max_episode_steps or horizon
    env.success_timing = success_timing
    if seed is not None:
        env.set_seed(seed)
    return env
