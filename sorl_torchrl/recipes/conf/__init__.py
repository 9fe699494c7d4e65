"""Hydra configuration files of the recipes (a package, so installed entry points find them)."""
