"""sorl-torchrl: SORL (Scalable Offline RL with shortcut models) as TorchRL components."""

# Importing sorl_torchrl.data registers the "ogbench" prefix of torchrl's load_dataset.
from sorl_torchrl.data import OGBenchExperienceReplay, generate_dataset, verify_dataset_file
from sorl_torchrl.deploy import load_policy
from sorl_torchrl.envs import evaluate_policy, make_ogbench_env
from sorl_torchrl.modules import BestOfNSampler, QEnsemble, ShortcutActor, VerifierSampler
from sorl_torchrl.objectives import (
    FlowBCLoss,
    FQLLoss,
    IQLLoss,
    JointUpdateStep,
    ReBRACLoss,
    ShortcutLoss,
    SORLUpdateStep,
)

__version__ = "0.1.0"

__all__ = [
    "BestOfNSampler",
    "FQLLoss",
    "FlowBCLoss",
    "IQLLoss",
    "JointUpdateStep",
    "OGBenchExperienceReplay",
    "QEnsemble",
    "ReBRACLoss",
    "SORLUpdateStep",
    "ShortcutActor",
    "ShortcutLoss",
    "VerifierSampler",
    "evaluate_policy",
    "generate_dataset",
    "load_policy",
    "make_ogbench_env",
    "verify_dataset_file",
]
