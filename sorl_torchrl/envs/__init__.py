"""OGBench environments as TorchRL envs, and policy evaluation."""

from sorl_torchrl.envs.evaluate import (
    EvaluationResult,
    env_attribute,
    evaluate_policy,
    evaluation_env,
)
from sorl_torchrl.envs.ogbench import OGBenchInfoWrapper, make_ogbench_env, resolve_env_id
from sorl_torchrl.envs.oracle import CubeOraclePolicy

__all__ = [
    "CubeOraclePolicy",
    "EvaluationResult",
    "OGBenchInfoWrapper",
    "env_attribute",
    "evaluate_policy",
    "evaluation_env",
    "make_ogbench_env",
    "resolve_env_id",
]
