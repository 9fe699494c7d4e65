"""Rollout videos: MP4 writing, the pixel env, record_videos and the Mp4Logger."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from torchrl.data import Bounded
from torchrl.envs.utils import RandomPolicy
from torchrl.record.loggers import CSVLogger, TensorboardLogger

from sorl_torchrl._validation import SettingError
from sorl_torchrl.envs import (
    Mp4Logger,
    configure_gl_backend,
    make_ogbench_env,
    record_videos,
    write_mp4,
)
from sorl_torchrl.envs import video as video_module

av = pytest.importorskip("av")

CUBE = "cube-single-play-singletask-task2-v0"
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)] * 2


def _read(path) -> np.ndarray:
    """The decoded frames of an MP4, ``[T, H, W, 3]`` uint8, read independently with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def gl():
    try:
        return configure_gl_backend()
    except RuntimeError as err:
        pytest.skip(f"no offscreen OpenGL backend: {err}")


def _solid(colours, height, width):
    return np.stack([np.broadcast_to(np.uint8(c), (height, width, 3)) for c in colours])


def test_write_mp4_round_trip_pads_odd_sizes(tmp_path):
    path = write_mp4(torch.from_numpy(_solid(COLOURS, 17, 33)), tmp_path / "a.mp4", fps=10)
    frames = _read(path)
    assert frames.shape == (10, 18, 34, 3)  # padded to even sizes for yuv420p
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    for frame, colour in zip(frames, COLOURS):
        assert np.abs(frame[:17, :33].reshape(-1, 3).mean(0) - colour).max() < 8


def test_write_mp4_refuses_bad_frames(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        write_mp4(np.zeros((2, 8, 8, 3), dtype=np.float32), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        write_mp4(np.zeros((8, 8, 3), dtype=np.uint8), tmp_path / "a.mp4")
    assert not list(tmp_path.iterdir())


def test_write_mp4_without_av_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    with pytest.raises(ImportError, match=r'pip install "sorl-torchrl\[video\]"'):
        write_mp4(_solid(COLOURS[:2], 16, 16), tmp_path / "a.mp4")


@pytest.mark.parametrize(
    ("env_id", "state_size"), [(CUBE, 28), ("pointmaze-medium-navigate-singletask-v0", 2)]
)
def test_pixels_in_reset_and_step(gl, env_id, state_size):
    env = make_ogbench_env(env_id, render_size=(64, 48), seed=0)
    try:
        td = env.reset()
        step = env.rand_step(td)
    finally:
        env.close()
    for pixels in (td["pixels"], step["next", "pixels"]):
        assert pixels.shape == (48, 64, 3) and pixels.dtype == torch.uint8
        assert pixels.unique().numel() > 10  # a real image, not a blank frame
    assert td["observation"].shape == (state_size,) and "success" in step["next"].keys()


def test_render_size_is_checked():
    with pytest.raises(ValueError, match="num_envs=1"):
        make_ogbench_env(CUBE, num_envs=2, render_size=(64, 64))
    with pytest.raises(ValueError, match="render_size must be"):
        make_ogbench_env(CUBE, render_size=(64, 0))


def test_record_videos(gl, tmp_path):
    factory = functools.partial(make_ogbench_env, CUBE, max_episode_steps=5)
    policy = RandomPolicy(Bounded(-1.0, 1.0, shape=(5,)))  # cube-single's action spec
    torch.manual_seed(123)
    before = torch.get_rng_state()
    rows = record_videos(
        policy, factory, num_episodes=2, seed=7, out_dir=tmp_path / "a", step=40, size=(32, 32)
    )
    assert torch.equal(torch.get_rng_state(), before)  # the caller's stream is untouched
    assert [row["path"].name for row in rows] == ["rollout0_step40.mp4", "rollout1_step40.mp4"]
    firsts = []
    for row in rows:
        frames = _read(row["path"])
        # VideoRecorder keeps the reset frame and one frame per step: 1 + 5.
        assert row["steps"] == 5 and row["frames"] == len(frames) == 6
        assert frames.shape[1:] == (32, 32, 3)
        assert row["success"] is False and row["episode_return"] == pytest.approx(-5.0)
        assert row["seconds"] > 0
        assert row["seconds_per_frame"] == pytest.approx(row["seconds"] / 6)
        firsts.append(frames[0])
    again = record_videos(
        policy, factory, num_episodes=1, seed=7, out_dir=tmp_path / "b", step=40, size=(32, 32)
    )
    assert np.array_equal(_read(again[0]["path"])[0], firsts[0])  # same seed, same frame


class _RecordingTensorboard(TensorboardLogger):
    """A TensorBoard logger that records what it is given (no writer)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = [], fail

    def log_video(self, name, video, step=None, **kwargs):
        if self.fail:
            raise Exception("moviepy not found, videos cannot be logged with TensorboardLogger")
        self.calls.append((name, tuple(video.shape), step, kwargs))


def _clip(frames=4, channels=3):
    return torch.randint(0, 256, (1, frames, channels, 16, 16), dtype=torch.uint8)


def test_mp4_logger_forwards_to_tensorboard(tmp_path):
    run_logger = _RecordingTensorboard()
    logger = Mp4Logger(tmp_path, forward_to=run_logger, fps=12)
    logger.log_video("rollout0", _clip(), step=3)
    assert run_logger.calls == [("rollout0", (1, 4, 3, 16, 16), 3, {"fps": 12})]
    assert _read(tmp_path / "rollout0_step3.mp4").shape == (4, 16, 16, 3)


def test_mp4_logger_keeps_the_mp4_when_forwarding_fails(tmp_path, caplog):
    logger = Mp4Logger(tmp_path, forward_to=_RecordingTensorboard(fail=True))
    with caplog.at_level(logging.WARNING, logger=video_module.__name__):
        logger.log_video("rollout0", _clip()[0, :, :1], step=None)  # [T, 1, H, W]
    assert _read(tmp_path / "rollout0.mp4").shape == (4, 16, 16, 3)
    assert "pip install moviepy" in caplog.text


def test_mp4_logger_does_not_forward_to_csv(tmp_path, monkeypatch):
    csv = CSVLogger("run", log_dir=str(tmp_path / "csv"))
    monkeypatch.setattr(csv, "log_video", lambda *a, **k: pytest.fail("forwarded to CSV"))
    Mp4Logger(tmp_path / "v", forward_to=csv).log_video("clip", _clip(), step=1)
    assert (tmp_path / "v" / "clip_step1.mp4").exists()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_episodes": 0}, "num_episodes"), ({"size": (8, 8)}, "size"), ({"fps": 0}, "fps")],
)
def test_record_videos_bad_arguments(tmp_path, kwargs, name):
    arguments = {"num_episodes": 1, "seed": 0, "out_dir": tmp_path, "step": 0, **kwargs}
    with pytest.raises(SettingError, match=rf"^{name} must be") as info:
        record_videos(lambda td: td, make_ogbench_env, **arguments)
    assert info.value.name == name
    assert not list(tmp_path.iterdir())


def test_configure_gl_backend_keeps_explicit_choice(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(video_module, "_probe", lambda *a: pytest.fail("probed"))
    monkeypatch.setattr(video_module, "_use_in_mujoco", lambda backend: None)
    assert configure_gl_backend() == "osmesa"


def test_configure_gl_backend_reports_every_failure(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(video_module, "_choice", None)
    monkeypatch.setattr(video_module, "_probe", lambda backend, timeout: (False, f"{backend}!"))
    with pytest.raises(RuntimeError) as info:
        configure_gl_backend()
    message = str(info.value)
    assert "MUJOCO_GL=egl: egl!" in message and "MUJOCO_GL=osmesa: osmesa!" in message
    assert "libegl1" in message and "libosmesa6" in message
    monkeypatch.setattr(video_module, "_probe", lambda *a: pytest.fail("probed twice"))
    with pytest.raises(RuntimeError, match="osmesa!"):  # cached for the process
        configure_gl_backend()
