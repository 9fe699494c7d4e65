"""sorl-torchrl: SORL (Scalable Offline RL with shortcut models) as TorchRL components."""

__version__ = "0.1.0"

# Data and environments (importing sorl_torchrl.data registers the "ogbench" dataset prefix).
from sorl_torchrl.data import OGBenchExperienceReplay as OGBenchExperienceReplay
from sorl_torchrl.data import generate_dataset as generate_dataset
from sorl_torchrl.data import verify_dataset_file as verify_dataset_file
from sorl_torchrl.envs import evaluate_policy as evaluate_policy
from sorl_torchrl.envs import make_ogbench_env as make_ogbench_env
