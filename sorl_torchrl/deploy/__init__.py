"""From checkpoint to controller: load a trained policy, export its step, choose ``(k, N)``.

- :func:`load_policy` (:mod:`~sorl_torchrl.deploy.load`): a checkpoint as a ready TorchRL
  policy, built from the checkpoint's own config, without Hydra or the recipes;
- :func:`export_policy` (:mod:`~sorl_torchrl.deploy.export`, ``sorl-export``): the whole step
  as a ``torch.export`` program that runs without this package;
- :mod:`sorl_torchrl.deploy.budget` (``sorl-budget``): the latency of every ``(k, N)`` on
  this machine, joined with the run's success, and the best cell within a budget (it reads
  run records, so it is imported on its own: ``from sorl_torchrl.deploy import budget``);
- :mod:`~sorl_torchrl.deploy.build`: the one builder of a run config's networks, which the
  training recipe uses too.
"""

from sorl_torchrl.deploy.build import (
    NETWORK_KEYS,
    build_networks,
    build_sorl_modules,
    model_sizes,
)
from sorl_torchrl.deploy.export import (
    ExportedPolicy,
    ExportError,
    PolicyStep,
    export_policy,
    load_program,
)
from sorl_torchrl.deploy.latency import Latency, measure_latency
from sorl_torchrl.deploy.load import (
    POLICY_BUILDERS,
    TrainedNetworks,
    algorithm_of,
    load_networks,
    load_policy,
)

__all__ = [
    "NETWORK_KEYS",
    "POLICY_BUILDERS",
    "ExportError",
    "ExportedPolicy",
    "Latency",
    "PolicyStep",
    "TrainedNetworks",
    "algorithm_of",
    "build_networks",
    "build_sorl_modules",
    "export_policy",
    "load_networks",
    "load_policy",
    "load_program",
    "measure_latency",
    "model_sizes",
]
