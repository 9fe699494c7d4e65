"""Small offline intersphinx inventories for the external objects these docs reference.

Sphinx fetches the real ``objects.inv`` of Python, PyTorch, tensordict and TorchRL when the
network is reachable. Without network (CI, air-gapped machines) it falls back to the
inventories written here, so that cross-references still resolve to the same URLs and a
``-W`` build does not fail on an unreachable server.

Each entry is ``(name, role, path)``: ``path`` is relative to the project's documentation
root and may end in ``#$`` (Sphinx's shorthand for ``#<name>``). To link a new external
object, add it here.
"""

from __future__ import annotations

import zlib
from pathlib import Path

PROJECTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "python": (
        "https://docs.python.org/3/",
        [
            ("int", "py:class", "library/functions.html#$"),
            ("float", "py:class", "library/functions.html#$"),
            ("bool", "py:class", "library/functions.html#$"),
            ("str", "py:class", "library/stdtypes.html#$"),
            ("tuple", "py:class", "library/stdtypes.html#$"),
            ("list", "py:class", "library/stdtypes.html#$"),
            ("dict", "py:class", "library/stdtypes.html#$"),
            ("object", "py:class", "library/functions.html#$"),
            ("None", "py:data", "library/constants.html#$"),
            ("ValueError", "py:exception", "library/exceptions.html#$"),
            ("KeyError", "py:exception", "library/exceptions.html#$"),
            ("TypeError", "py:exception", "library/exceptions.html#$"),
            ("FileNotFoundError", "py:exception", "library/exceptions.html#$"),
            ("RuntimeError", "py:exception", "library/exceptions.html#$"),
            ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterator", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
            ("typing.Literal", "py:data", "library/typing.html#$"),
            ("typing.Any", "py:data", "library/typing.html#$"),
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
            ("os.PathLike", "py:class", "library/os.html#$"),
            ("dataclasses.dataclass", "py:function", "library/dataclasses.html#$"),
        ],
    ),
    "torch": (
        "https://docs.pytorch.org/docs/stable/",
        [
            ("torch.Tensor", "py:class", "tensors.html#$"),
            ("torch.device", "py:class", "tensor_attributes.html#$"),
            ("torch.dtype", "py:class", "tensor_attributes.html#$"),
            ("torch.Generator", "py:class", "generated/torch.Generator.html#$"),
            ("torch.no_grad", "py:class", "generated/torch.no_grad.html#$"),
            ("torch.set_num_threads", "py:function", "generated/torch.set_num_threads.html#$"),
            ("torch.compile", "py:function", "generated/torch.compile.html#$"),
            ("torch.random.fork_rng", "py:function", "random.html#$"),
            ("torch.nn.Module", "py:class", "generated/torch.nn.Module.html#$"),
            ("torch.nn.Sequential", "py:class", "generated/torch.nn.Sequential.html#$"),
            ("torch.nn.Linear", "py:class", "generated/torch.nn.Linear.html#$"),
            ("torch.nn.GELU", "py:class", "generated/torch.nn.GELU.html#$"),
            ("torch.nn.LayerNorm", "py:class", "generated/torch.nn.LayerNorm.html#$"),
            (
                "torch.nn.parameter.Parameter",
                "py:class",
                "generated/torch.nn.parameter.Parameter.html#$",
            ),
            ("torch.optim.Optimizer", "py:class", "optim.html#$"),
            ("torch.optim.Adam", "py:class", "generated/torch.optim.Adam.html#$"),
            (
                "torch.optim.adam.Adam",
                "py:class",
                "generated/torch.optim.Adam.html#torch.optim.Adam",
            ),
        ],
    ),
    "tensordict": (
        "https://docs.pytorch.org/tensordict/stable/",
        [
            (
                "tensordict.TensorDict",
                "py:class",
                "reference/generated/tensordict.TensorDict.html#$",
            ),
            (
                "tensordict.TensorDictBase",
                "py:class",
                "reference/generated/tensordict.TensorDictBase.html#$",
            ),
            (
                "tensordict.TensorDictParams",
                "py:class",
                "reference/generated/tensordict.TensorDictParams.html#$",
            ),
            (
                "tensordict.nn.TensorDictModule",
                "py:class",
                "reference/generated/tensordict.nn.TensorDictModule.html#$",
            ),
            (
                "tensordict.nn.TensorDictModuleBase",
                "py:class",
                "reference/generated/tensordict.nn.TensorDictModuleBase.html#$",
            ),
            (
                "tensordict.nn.EnsembleModule",
                "py:class",
                "reference/generated/tensordict.nn.EnsembleModule.html#$",
            ),
            (
                "tensordict.nn.CudaGraphModule",
                "py:class",
                "reference/generated/tensordict.nn.CudaGraphModule.html#$",
            ),
        ],
    ),
    "torchrl": (
        "https://docs.pytorch.org/rl/stable/",
        [
            (
                "torchrl.collectors.Collector",
                "py:class",
                "reference/generated/torchrl.collectors.Collector.html#$",
            ),
            (
                "torchrl.envs.transforms.Transform",
                "py:class",
                "reference/generated/torchrl.envs.transforms.Transform.html#$",
            ),
            (  # the path show-inheritance names
                "torchrl.envs.transforms._base.Transform",
                "py:class",
                "reference/generated/torchrl.envs.transforms.Transform.html",
            ),
            (
                "torchrl.record.VideoRecorder",
                "py:class",
                "reference/generated/torchrl.record.VideoRecorder.html#$",
            ),
            (
                "torchrl.record.loggers.Logger",
                "py:class",
                "reference/generated/torchrl.record.loggers.Logger.html#$",
            ),
            (  # the path show-inheritance and annotations name
                "torchrl.record.loggers.common.Logger",
                "py:class",
                "reference/generated/torchrl.record.loggers.Logger.html",
            ),
            (
                "torchrl.objectives.LossModule",
                "py:class",
                "reference/generated/torchrl.objectives.LossModule.html#$",
            ),
            (
                "torchrl.objectives.SoftUpdate",
                "py:class",
                "reference/generated/torchrl.objectives.SoftUpdate.html#$",
            ),
            (
                "torchrl.data.ReplayBuffer",
                "py:class",
                "reference/generated/torchrl.data.ReplayBuffer.html#$",
            ),
            (
                "torchrl.data.TensorDictReplayBuffer",
                "py:class",
                "reference/generated/torchrl.data.TensorDictReplayBuffer.html#$",
            ),
            (
                "torchrl.data.LazyTensorStorage",
                "py:class",
                "reference/generated/torchrl.data.LazyTensorStorage.html#$",
            ),
            (
                "torchrl.data.SamplerWithoutReplacement",
                "py:class",
                "reference/generated/torchrl.data.SamplerWithoutReplacement.html#$",
            ),
            (
                "torchrl.data.datasets.BaseDatasetExperienceReplay",
                "py:class",
                "reference/generated/torchrl.data.datasets.BaseDatasetExperienceReplay.html#$",
            ),
            (
                "torchrl.data.datasets.load_dataset",
                "py:function",
                "reference/generated/torchrl.data.datasets.load_dataset.html#$",
            ),
            (
                "torchrl.envs.EnvBase",
                "py:class",
                "reference/generated/torchrl.envs.EnvBase.html#$",
            ),
            (
                "torchrl.envs.EnvBase.set_seed",
                "py:method",
                "reference/generated/torchrl.envs.EnvBase.html#$",
            ),
            (
                "torchrl.envs.EnvBase.rollout",
                "py:method",
                "reference/generated/torchrl.envs.EnvBase.html#$",
            ),
            (
                "torchrl.data.replay_buffers.ImmutableDatasetWriter",
                "py:class",
                "reference/generated/torchrl.data.replay_buffers.ImmutableDatasetWriter.html#$",
            ),
            (
                "torchrl.data.ReplayBuffer.sample",
                "py:method",
                "reference/generated/torchrl.data.ReplayBuffer.html#$",
            ),
            (
                "torchrl.envs.GymWrapper",
                "py:class",
                "reference/generated/torchrl.envs.GymWrapper.html#$",
            ),
            (
                "torchrl.envs.SerialEnv",
                "py:class",
                "reference/generated/torchrl.envs.SerialEnv.html#$",
            ),
            (
                "torchrl.envs.ParallelEnv",
                "py:class",
                "reference/generated/torchrl.envs.ParallelEnv.html#$",
            ),
            (
                "torchrl.data.replay_buffers.Sampler",
                "py:class",
                "reference/generated/torchrl.data.replay_buffers.Sampler.html#$",
            ),
            (
                "torchrl.objectives.IQLLoss",
                "py:class",
                "reference/generated/torchrl.objectives.IQLLoss.html#$",
            ),
            (
                "torchrl.objectives.IQLLoss.loss_value_diff",
                "py:method",
                "reference/generated/torchrl.objectives.IQLLoss.html#$",
            ),
            (
                "torchrl.objectives.TD3BCLoss",
                "py:class",
                "reference/generated/torchrl.objectives.TD3BCLoss.html#$",
            ),
            (
                "torchrl.objectives.TD3BCLoss.qvalue_loss",
                "py:method",
                "reference/generated/torchrl.objectives.TD3BCLoss.html#$",
            ),
        ],
    ),
    "gymnasium": (
        "https://gymnasium.farama.org/",
        [
            ("gymnasium.Wrapper", "py:class", "api/wrappers/#$"),
            ("gymnasium.Env", "py:class", "api/env/#$"),
        ],
    ),
}

#: Names under which objects show up in signatures and base-class lists (their defining
#: module) mapped to the name the projects document them under.
ALIASES: dict[str, str] = {
    "torchrl.objectives.common.LossModule": "torchrl.objectives.LossModule",
    "torchrl.objectives.utils.SoftUpdate": "torchrl.objectives.SoftUpdate",
    "tensordict.nn.common.TensorDictModule": "tensordict.nn.TensorDictModule",
    "tensordict.nn.common.TensorDictModuleBase": "tensordict.nn.TensorDictModuleBase",
    "tensordict.base.TensorDictBase": "tensordict.TensorDictBase",
    "tensordict._td.TensorDict": "tensordict.TensorDict",
    "tensordict.nn.params.TensorDictParams": "tensordict.TensorDictParams",
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.nn.modules.container.Sequential": "torch.nn.Sequential",
    "torch.nn.Parameter": "torch.nn.parameter.Parameter",
    "torch._C.Generator": "torch.Generator",
    "torchrl.data.datasets.common.BaseDatasetExperienceReplay": (
        "torchrl.data.datasets.BaseDatasetExperienceReplay"
    ),
    "torchrl.envs.common.EnvBase": "torchrl.envs.EnvBase",
    "torchrl.data.replay_buffers.replay_buffers.ReplayBuffer": "torchrl.data.ReplayBuffer",
    "torchrl.data.replay_buffers.samplers.Sampler": "torchrl.data.replay_buffers.Sampler",
    "LossModule": "torchrl.objectives.LossModule",
    "EnvBase": "torchrl.envs.EnvBase",
    "torchrl.envs.libs.gym.GymWrapper": "torchrl.envs.GymWrapper",
    "gymnasium.core.Wrapper": "gymnasium.Wrapper",
    "gymnasium.core.Env": "gymnasium.Env",
    "nn.Module": "torch.nn.Module",
    "nn.Parameter": "torch.nn.parameter.Parameter",
    "Tensor": "torch.Tensor",
    "TensorDictBase": "tensordict.TensorDictBase",
    "TensorDict": "tensordict.TensorDict",
    "TensorDictParams": "tensordict.TensorDictParams",
    "Sequence": "collections.abc.Sequence",
    "Iterable": "collections.abc.Iterable",
    "Callable": "collections.abc.Callable",
    "Literal": "typing.Literal",
    "Path": "pathlib.Path",
}


def write_inventories(out_dir: Path) -> dict[str, Path]:
    """Write one Sphinx v2 ``objects.inv`` per project into ``out_dir``.

    Returns:
        The written file of each project, by project name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for project, (_, entries) in PROJECTS.items():
        header = (
            "# Sphinx inventory version 2\n"
            f"# Project: {project}\n"
            "# Version: stable\n"
            "# The remainder of this file is compressed using zlib.\n"
        ).encode()
        body = "".join(f"{name} {role} 1 {path} -\n" for name, role, path in entries)
        path = out_dir / f"{project}.inv"
        data = header + zlib.compress(body.encode())
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written[project] = path
    return written
