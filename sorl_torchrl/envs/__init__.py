"""OGBench environments as TorchRL envs, policy evaluation and rollout videos."""

from sorl_torchrl.envs.episode_seeds import EpisodeSeeds
from sorl_torchrl.envs.evaluate import (
    EvaluationResult,
    env_attribute,
    evaluate_policy,
    evaluation_env,
)
from sorl_torchrl.envs.ogbench import OGBenchInfoWrapper, make_ogbench_env, resolve_env_id
from sorl_torchrl.envs.oracle import CubeOraclePolicy
from sorl_torchrl.envs.video import Mp4Logger, configure_gl_backend, record_videos, write_mp4

__all__ = [
    "CubeOraclePolicy",
    "EpisodeSeeds",
    "EvaluationResult",
    "Mp4Logger",
    "OGBenchInfoWrapper",
    "configure_gl_backend",
    "env_attribute",
    "evaluate_policy",
    "evaluation_env",
    "make_ogbench_env",
    "record_videos",
    "resolve_env_id",
    "write_mp4",
]
