"""SORL objectives: the loss module and the shared update step."""

from sorl_torchrl.objectives.shortcut import ShortcutLoss
from sorl_torchrl.objectives.update import SORLUpdateStep

__all__ = ["SORLUpdateStep", "ShortcutLoss"]
