"""sorl-torchrl: SORL (Scalable Offline RL with shortcut models) as TorchRL components."""

from sorl_torchrl.modules import QEnsemble, ShortcutActor, VerifierSampler
from sorl_torchrl.objectives import ShortcutLoss, SORLUpdateStep

__version__ = "0.1.0"

__all__ = ["QEnsemble", "SORLUpdateStep", "ShortcutActor", "ShortcutLoss", "VerifierSampler"]
