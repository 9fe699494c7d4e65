"""Hydra recipes that train and evaluate SORL on OGBench with the sorl_torchrl modules."""
