"""OGBench environments as TorchRL envs, and policy evaluation."""

from sorl_torchrl.envs.evaluate import EvaluationResult, evaluate_policy
from sorl_torchrl.envs.ogbench import OGBenchInfoWrapper, make_ogbench_env, resolve_env_id
from sorl_torchrl.envs.oracle import CubeOraclePolicy

__all__ = [
    "CubeOraclePolicy",
    "EvaluationResult",
    "OGBenchInfoWrapper",
    "evaluate_policy",
    "make_ogbench_env",
    "resolve_env_id",
]
