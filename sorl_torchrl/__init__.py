"""sorl-torchrl: SORL (Scalable Offline RL with shortcut models) as TorchRL components."""

__version__ = "0.1.0"

# Data and environments (importing sorl_torchrl.data registers the "ogbench" dataset prefix).
from sorl_torchrl.data import OGBenchExperienceReplay, generate_dataset, verify_dataset_file
from sorl_torchrl.envs import evaluate_policy, make_ogbench_env
