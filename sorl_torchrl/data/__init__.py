"""OGBench datasets: local generation, verification and TorchRL replay buffers.

Importing this package registers :class:`OGBenchExperienceReplay` under the ``"ogbench"``
prefix of :func:`torchrl.data.datasets.load_dataset`.
"""

from torchrl.data.datasets import register_dataset

from sorl_torchrl.data.generate import GenerationResult, default_dataset_dir, generate_dataset
from sorl_torchrl.data.ogbench import OGBenchExperienceReplay
from sorl_torchrl.data.specs import (
    DATASETS,
    DatasetSpec,
    get_dataset_spec,
    list_datasets,
    parse_env_id,
    parse_singletask_id,
)
from sorl_torchrl.data.verify import VerificationReport, format_report, verify_dataset_file

register_dataset("ogbench", OGBenchExperienceReplay, replace=True)

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "GenerationResult",
    "OGBenchExperienceReplay",
    "VerificationReport",
    "default_dataset_dir",
    "format_report",
    "generate_dataset",
    "get_dataset_spec",
    "list_datasets",
    "parse_env_id",
    "parse_singletask_id",
    "verify_dataset_file",
]
