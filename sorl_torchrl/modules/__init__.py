"""Networks as TensorDict modules: SORL's shortcut actor, the Q ensemble, the verifiers.

The baselines' policies (FQL's one-step policy, IQL's Gaussian actor, ReBRAC's tanh actor)
and IQL's state value live here too; :class:`BestOfNSampler` verifies any of them with a
critic as :class:`VerifierSampler` does the shortcut actor.
"""

from sorl_torchrl.modules.actor import (
    ShortcutActor,
    ShortcutModel,
    SplitVelocityNetwork,
    StepsBeyondTrainingWarning,
)
from sorl_torchrl.modules.baseline_actors import GaussianActor, TanhActor
from sorl_torchrl.modules.best_of_n import BestOfNSampler, best_of_n
from sorl_torchrl.modules.critic import QEnsemble, aggregate_q
from sorl_torchrl.modules.networks import (
    EnsembleLinear,
    EnsembleMLP,
    TanhGELU,
    VelocityMLP,
    make_velocity_mlp,
)
from sorl_torchrl.modules.one_step_policy import OneStepPolicy
from sorl_torchrl.modules.value import StateValue
from sorl_torchrl.modules.verifier import VerifierSampler, select_best

__all__ = [
    "BestOfNSampler",
    "EnsembleLinear",
    "EnsembleMLP",
    "GaussianActor",
    "OneStepPolicy",
    "QEnsemble",
    "ShortcutActor",
    "ShortcutModel",
    "SplitVelocityNetwork",
    "StateValue",
    "StepsBeyondTrainingWarning",
    "TanhActor",
    "TanhGELU",
    "VelocityMLP",
    "VerifierSampler",
    "aggregate_q",
    "best_of_n",
    "make_velocity_mlp",
    "select_best",
]
