"""Datasets: OGBench (official downloads, local generation, verification) and any TorchRL one.

Importing this package registers :class:`OGBenchExperienceReplay` under the ``"ogbench"``
prefix of :func:`torchrl.data.datasets.load_dataset`.
"""

from torchrl.data.datasets import register_dataset

from sorl_torchrl.data.download import DownloadError, DownloadResult, download_dataset
from sorl_torchrl.data.generate import GenerationResult, generate_dataset
from sorl_torchrl.data.ogbench import OGBenchExperienceReplay
from sorl_torchrl.data.provenance import default_dataset_dir
from sorl_torchrl.data.specs import (
    DATASETS,
    DatasetSpec,
    get_dataset_spec,
    list_datasets,
    parse_env_id,
    parse_singletask_id,
)
from sorl_torchrl.data.torchrl_dataset import OfflineDataset, open_dataset, parse_dataset_spec
from sorl_torchrl.data.verify import VerificationReport, format_report, verify_dataset_file

register_dataset("ogbench", OGBenchExperienceReplay, replace=True)

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DownloadError",
    "DownloadResult",
    "GenerationResult",
    "OGBenchExperienceReplay",
    "OfflineDataset",
    "VerificationReport",
    "default_dataset_dir",
    "download_dataset",
    "format_report",
    "generate_dataset",
    "get_dataset_spec",
    "list_datasets",
    "open_dataset",
    "parse_dataset_spec",
    "parse_env_id",
    "parse_singletask_id",
    "verify_dataset_file",
]
