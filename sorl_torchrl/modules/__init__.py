"""SORL networks as TensorDict modules: the shortcut actor, the Q ensemble, the verifier."""

from sorl_torchrl.modules.actor import (
    ShortcutActor,
    ShortcutModel,
    SplitVelocityNetwork,
    StepsBeyondTrainingWarning,
)
from sorl_torchrl.modules.critic import QEnsemble, aggregate_q
from sorl_torchrl.modules.networks import (
    EnsembleLinear,
    EnsembleMLP,
    TanhGELU,
    VelocityMLP,
    make_velocity_mlp,
)
from sorl_torchrl.modules.verifier import VerifierSampler

__all__ = [
    "EnsembleLinear",
    "EnsembleMLP",
    "QEnsemble",
    "ShortcutActor",
    "ShortcutModel",
    "SplitVelocityNetwork",
    "StepsBeyondTrainingWarning",
    "TanhGELU",
    "VelocityMLP",
    "VerifierSampler",
    "aggregate_q",
    "make_velocity_mlp",
]
