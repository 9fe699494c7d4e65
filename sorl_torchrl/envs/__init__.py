"""OGBench environments as TorchRL envs, and policy evaluation."""
