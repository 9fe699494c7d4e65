"""sorl-torchrl: SORL (Scalable Offline RL with shortcut models) as TorchRL components."""

__version__ = "0.1.0"
