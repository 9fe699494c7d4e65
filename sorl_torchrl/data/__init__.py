"""OGBench datasets: local generation, verification and TorchRL replay buffers."""
