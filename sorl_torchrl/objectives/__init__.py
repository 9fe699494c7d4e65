"""Objectives: the SORL loss and update step, and the baselines' losses and joint update."""

from sorl_torchrl.objectives.flow_bc import FlowBCLoss
from sorl_torchrl.objectives.fql import FQLLoss
from sorl_torchrl.objectives.iql import IQLLoss
from sorl_torchrl.objectives.joint_update import JointUpdateStep
from sorl_torchrl.objectives.rebrac import ReBRACLoss
from sorl_torchrl.objectives.shortcut import ShortcutLoss
from sorl_torchrl.objectives.update import SORLUpdateStep

__all__ = [
    "FQLLoss",
    "FlowBCLoss",
    "IQLLoss",
    "JointUpdateStep",
    "ReBRACLoss",
    "SORLUpdateStep",
    "ShortcutLoss",
]
