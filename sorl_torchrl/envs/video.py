"""Rollout videos of a policy in an OGBench env: MP4 files, and through a TorchRL logger.

:func:`record_videos` plays seeded episodes in an env that renders frames
(``make_ogbench_env(..., render_size=(W, H))``), records them with TorchRL's
:class:`~torchrl.record.VideoRecorder` and writes one MP4 per episode with :class:`Mp4Logger`
(and :func:`write_mp4`), which also hands each video to the run's TensorBoard or W&B logger.
MuJoCo renders offscreen through the OpenGL backend named by ``MUJOCO_GL``;
:func:`configure_gl_backend` picks one that works on this machine. See ``docs/video.md``.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, TransformedEnv, set_exploration_type
from torchrl.record import VideoRecorder
from torchrl.record.loggers import TensorboardLogger, WandbLogger
from torchrl.record.loggers.common import Logger

from sorl_torchrl._io import atomic_write
from sorl_torchrl._validation import SEED, Number, SettingError, Settings, Text

__all__ = ["Mp4Logger", "configure_gl_backend", "record_videos", "write_mp4"]

_log = logging.getLogger(__name__)

#: The offscreen backends tried, in order, when ``MUJOCO_GL`` is not set.
GL_BACKENDS = ("egl", "osmesa")

_PROBE = """import mujoco
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
data = mujoco.MjData(model); mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 16, 16); renderer.update_scene(data)
print("rendered", renderer.render().shape)"""


def _probe(backend: str, timeout: float) -> tuple[bool, str]:
    """Render one tiny frame with ``MUJOCO_GL=backend`` in a subprocess: (ok, last line)."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)  # mujoco wants both
    command = [sys.executable, "-c", _PROBE]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"no frame after {timeout:g} s (timed out)"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else f"exit status {done.returncode}"


def _use_in_mujoco(backend: str) -> None:
    """Make an already imported ``mujoco`` render through ``backend``.

    MuJoCo reads ``MUJOCO_GL`` once, when it is imported (TorchRL imports it), so a backend
    chosen later is loaded here by re-importing MuJoCo's small GL-context module.
    """
    wanted = backend.lower().strip()
    names = ("mujoco.rendering.classic.gl_context", "mujoco.gl_context")
    modules = [sys.modules[name] for name in names if name in sys.modules]
    owner = next((module for module in modules if hasattr(module, "_MUJOCO_GL")), None)
    if owner is None or owner._MUJOCO_GL == wanted:
        return
    for module in modules:  # the module that reads MUJOCO_GL first, then the re-export
        importlib.reload(module)
    if "mujoco" in sys.modules and hasattr(owner, "GLContext"):
        sys.modules["mujoco"].GLContext = owner.GLContext


_choice: str | RuntimeError | None = None  # this process's backend, or why none works


def _pick_backend(timeout: float) -> str:
    """The first of :data:`GL_BACKENDS` that renders; probed once per process."""
    global _choice
    if _choice is None:
        tried = []
        for backend in GL_BACKENDS:
            ok, last_line = _probe(backend, timeout)
            if ok:
                _choice = backend
                break
            tried.append(f"  MUJOCO_GL={backend}: {last_line}")
        else:
            _choice = RuntimeError(
                "MuJoCo cannot render offscreen here: no OpenGL backend works.\n"
                + "\n".join(tried)
                + "\nInstall EGL (apt install libegl1 libgl1-mesa-dri; works without a GPU) "
                "or OSMesa (apt install libosmesa6), or set MUJOCO_GL to a backend that works."
            )
    if isinstance(_choice, RuntimeError):
        raise RuntimeError(str(_choice))
    return _choice


def configure_gl_backend(timeout: float = 60.0) -> str:
    """Choose MuJoCo's offscreen OpenGL backend (``MUJOCO_GL``) and return it.

    An ``MUJOCO_GL`` already set is kept. Otherwise ``egl`` then ``osmesa`` are tried, each
    by rendering one tiny frame in a short subprocess (a broken backend cannot crash this
    process); the first that works is put in ``os.environ["MUJOCO_GL"]``. The choice is
    made once per process. MuJoCo, if already imported, is switched to the backend.

    Args:
        timeout: Seconds each subprocess may take.

    Returns:
        The backend, e.g. ``"egl"``.

    Raises:
        RuntimeError: No backend works; the message lists what each one printed and how to
            install one.

    Examples:
        >>> configure_gl_backend() in ("egl", "osmesa")  # doctest: +SKIP
        True
    """
    backend = os.environ.get("MUJOCO_GL")
    if not backend:
        backend = _pick_backend(float(timeout))
        os.environ["MUJOCO_GL"] = backend
    _use_in_mujoco(backend)
    return backend


def write_mp4(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: int = 30) -> Path:
    """Write frames as an H.264 MP4 (yuv420p), atomically.

    Odd heights or widths are padded by one row or column (a copy of the last one), as
    H.264 in yuv420p needs even sizes. The file is written next to ``path`` under a
    temporary name and then renamed, so a reader never sees half a video.

    Args:
        frames: uint8 frames ``[T, H, W, 3]`` (a tensor or an array), ``T >= 1``.
        path: The ``.mp4`` file to write; its folder is created if needed.
        fps: Frames per second.

    Returns:
        The path written.

    Raises:
        ImportError: PyAV is not installed.
        ValueError: ``frames`` is not uint8 ``[T, H, W, 3]``.

    Examples:
        >>> frames = torch.zeros(4, 17, 33, 3, dtype=torch.uint8)  # odd sizes are padded
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_mp4(frames, Path(tmp) / "black.mp4", fps=10)
        ...     print(path.name, path.stat().st_size > 0)
        black.mp4 True
    """
    try:
        import av
    except ImportError as err:
        raise ImportError(
            'Writing MP4 videos needs PyAV: pip install "sorl-torchrl[video]".'
        ) from err
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else frames
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or not len(array):
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3] with T >= 1, got {array.dtype} {list(array.shape)}."
        )
    _, height, width, _ = array.shape
    array = np.pad(array, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    path = Path(path)
    with atomic_write(path, "wb") as handle, av.open(handle, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.height, stream.width = array.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for image in array:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


class Mp4Logger(Logger):
    """A TorchRL logger that writes each video as ``<log_dir>/<name>_step<step>.mp4``.

    Give it to a :class:`~torchrl.record.VideoRecorder`. With ``forward_to``, the run's
    logger, each video is also logged there when that logger is a TensorBoard or W&B one
    (the CSV logger's video is the MP4 file itself). A failure there (e.g. moviepy missing)
    is a logged warning; the MP4 is kept. Scalars, hyperparameters and histograms are not
    its business: those methods do nothing.

    Args:
        log_dir: Folder of the MP4 files (created).
        forward_to: The run's TorchRL logger, or ``None``.
        fps: Frames per second of the videos (a ``fps=`` given to ``log_video`` wins).
        exp_name: Name of this logger's "experiment".

    Attributes:
        written: ``(path, frames)`` of each video written, in order.

    Examples:
        >>> video = torch.zeros(1, 5, 3, 32, 32, dtype=torch.uint8)  # what VideoRecorder gives
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     logger = Mp4Logger(Path(tmp) / "videos", fps=10)
        ...     logger.log_video("rollout0", video, step=100)
        >>> [(path.name, frames) for path, frames in logger.written]
        [('rollout0_step100.mp4', 5)]
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        forward_to: Logger | None = None,
        fps: int = 30,
        exp_name: str = "videos",
    ) -> None:
        self.fps = int(fps)
        self.forward_to = forward_to
        self.written: list[tuple[Path, int]] = []
        super().__init__(exp_name=exp_name, log_dir=str(log_dir))

    def _create_experiment(self) -> None:
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)

    def log_scalar(self, name: str, value: float, step: int | None = None) -> None:
        """Do nothing: scalars belong to the run's logger."""

    def log_hparams(self, cfg: Any) -> None:
        """Do nothing: hyperparameters belong to the run's logger."""

    def log_histogram(self, name: str, data: Sequence, **kwargs: Any) -> None:
        """Do nothing: histograms belong to the run's logger."""

    def __repr__(self) -> str:
        return f"Mp4Logger(log_dir={self.log_dir!r}, forward_to={self.forward_to!r})"

    def log_video(
        self, name: str, video: torch.Tensor, step: int | None = None, **kwargs: Any
    ) -> None:
        """Write ``video`` (uint8 ``[T, C, H, W]`` or ``[1, T, C, H, W]``) as an MP4 and forward it.

        Args:
            name: The video's tag; the file is ``<name>_step<step>.mp4`` (or ``<name>.mp4``).
            video: The frames, channels first (what ``VideoRecorder.dump`` gives).
            step: The training step, in the file name and for the forwarded video.
            **kwargs: ``fps`` (default: the logger's), then passed to the forwarded call.
        """
        fps = int(kwargs.pop("fps", self.fps))
        clip = video if video.ndim == 5 else video.unsqueeze(0)
        if clip.ndim != 5 or clip.shape[0] != 1 or clip.shape[2] not in (1, 3):
            raise ValueError(
                f"video must be uint8 [T, C, H, W] or [1, T, C, H, W] with C 1 or 3, "
                f"got {list(video.shape)}."
            )
        frames = clip[0].permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
        suffix = "" if step is None else f"_step{int(step)}"
        path = write_mp4(frames, Path(self.log_dir) / f"{name}{suffix}.mp4", fps=fps)
        self.written.append((path, int(frames.shape[0])))
        if not isinstance(self.forward_to, (TensorboardLogger, WandbLogger)):
            return
        try:
            self.forward_to.log_video(name, clip, step=step, fps=fps, **kwargs)
        except Exception as err:  # the MP4 is written: a backend's failure must not lose it
            who, what = type(self.forward_to).__name__, f"{type(err).__name__}: {err}"
            _log.warning(
                f"Video {name!r} was written to {path} but {who} could not log it ({what}). "
                "TensorBoard and W&B encode videos with moviepy: pip install moviepy."
            )


def _check_size(value: Any, name: str) -> tuple[int, int]:
    allowed = "a (width, height) pair of integers >= 16"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise SettingError(name, value, allowed)
    try:
        width, height = (Number("[16, inf)", integer=True)(v, name) for v in value)
    except SettingError:
        raise SettingError(name, value, allowed) from None
    return width, height


#: The checks of :func:`record_videos`'s arguments.
VIDEO_SETTINGS = Settings(
    "record_videos",
    {
        "num_episodes": Number("[1, inf)", integer=True),
        "seed": SEED,
        "step": Number("[0, inf)", integer=True),
        "size": _check_size,
        "fps": Number("[1, inf)", integer=True),
        "tag": Text(),
    },
)


def record_videos(
    policy: Callable[[TensorDictBase], TensorDictBase],
    env_factory: Callable[..., EnvBase],
    *,
    num_episodes: int,
    seed: int,
    out_dir: str | os.PathLike,
    step: int,
    logger: Logger | None = None,
    size: tuple[int, int] = (256, 256),
    fps: int = 30,
    tag: str = "rollout",
) -> list[dict[str, Any]]:
    """Record ``num_episodes`` seeded episodes of ``policy`` as MP4 files.

    Episode ``i`` gets a fresh env ``env_factory(num_envs=1, render_size=size)`` seeded
    with ``seed + i`` (``env.set_seed`` then the rollout's reset, as in
    :func:`~sorl_torchrl.envs.evaluate_policy`), plays until done or the env's
    ``max_episode_steps`` with exploration off, and is written as
    ``<out_dir>/<tag><i>_step<step>.mp4``: the reset frame and one frame per step. torch's
    RNG is forked and seeded with ``seed``, so the caller's random stream is unchanged.

    Args:
        policy: A TorchRL policy: reads ``"observation"``, writes ``"action"``.
        env_factory: Builds the env, e.g. ``functools.partial(make_ogbench_env, env_id)``;
            it must accept ``num_envs`` and ``render_size`` and give ``"pixels"`` and a
            ``max_episode_steps`` attribute.
        num_episodes: Episodes to record (integer >= 1).
        seed: Seed of the first episode and of torch's RNG.
        out_dir: Folder of the MP4 files.
        step: Training step, in the file names and for ``logger``.
        logger: The run's TorchRL logger; TensorBoard and W&B ones also get the videos.
        size: ``(width, height)`` of the frames, each >= 16.
        fps: Frames per second of the videos.
        tag: File name prefix.

    Returns:
        One dict per episode: ``path``, ``frames``, ``steps``, ``episode_return``,
        ``success`` (``None`` if the env reports none), ``seconds`` (the rollout, rendering
        and encoding, not building the env) and ``seconds_per_frame``.

    Raises:
        SettingError: An argument is out of range (``SettingsError``: several).
        RuntimeError: No OpenGL backend renders (see :func:`configure_gl_backend`), or the
            env recorded no ``"pixels"``.
        ValueError: The env has no ``max_episode_steps`` attribute.

    Examples:
        >>> import functools, tempfile
        >>> from torchrl.envs.utils import RandomPolicy
        >>> from sorl_torchrl.envs import make_ogbench_env
        >>> factory = functools.partial(
        ...     make_ogbench_env, "cube-single-play-singletask-task2-v0", max_episode_steps=5
        ... )
        >>> policy = RandomPolicy(factory().action_spec)  # doctest: +SKIP
        >>> rows = record_videos(policy, factory, num_episodes=1, seed=0, step=0,  # doctest: +SKIP
        ...                      out_dir=tempfile.mkdtemp(), size=(64, 64))
        >>> rows[0]["path"].name, rows[0]["frames"]  # doctest: +SKIP
        ('rollout0_step0.mp4', 6)
    """
    arguments = dict(num_episodes=num_episodes, seed=seed, step=step, size=size, fps=fps)
    checked = VIDEO_SETTINGS.check(dict(arguments, tag=tag))
    configure_gl_backend()
    videos = Mp4Logger(out_dir, forward_to=logger, fps=checked["fps"])
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(checked["seed"])
        for i in range(checked["num_episodes"]):
            rows.append(_record_episode(policy, env_factory, videos, i, checked))
    return rows


def _record_episode(
    policy: Callable[[TensorDictBase], TensorDictBase],
    env_factory: Callable[..., EnvBase],
    videos: Mp4Logger,
    index: int,
    checked: dict[str, Any],
) -> dict[str, Any]:
    """One episode of :func:`record_videos`, with checked arguments."""
    base = env_factory(num_envs=1, render_size=checked["size"])
    recorder = VideoRecorder(
        logger=videos, tag=f"{checked['tag']}{index}", in_keys=["pixels"], skip=1
    )
    env = TransformedEnv(base, recorder)
    try:
        horizon = getattr(base, "max_episode_steps", None)
        if horizon is None:
            raise ValueError("The env factory's env has no max_episode_steps attribute.")
        start = time.perf_counter()
        env.set_seed(checked["seed"] + index)
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            rollout = env.rollout(max_steps=horizon, policy=policy, break_when_any_done=True)
        written = len(videos.written)
        recorder.dump(step=checked["step"])
        seconds = time.perf_counter() - start
    finally:
        env.close()
    if len(videos.written) != written + 1:
        raise RuntimeError(
            "The env recorded no frames: given render_size, env_factory's env must put "
            "'pixels' in its tensordicts (make_ogbench_env does)."
        )
    path, frames = videos.written[-1]
    success_key = ("next", "success")
    has_success = success_key in rollout.keys(include_nested=True)
    return {
        "path": path,
        "frames": frames,
        "steps": int(rollout.shape[-1]),
        "episode_return": float(rollout["next", "reward"].sum()),
        "success": bool(rollout[success_key].any()) if has_success else None,
        "seconds": seconds,
        "seconds_per_frame": seconds / frames,
    }
