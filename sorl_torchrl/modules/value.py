"""IQL's state-value network ``V(s)``: the critic's MLP on the observation alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from sorl_torchrl._tensor_checks import as_model_dtype, check_feature_dim
from sorl_torchrl._validation import FLAG, Number, Settings
from sorl_torchrl.modules.networks import DEFAULT_NUM_CELLS, LAYER_SIZES, SIZE, EnsembleMLP

__all__ = ["VALUE_SETTINGS", "StateValue"]

#: The checks of :class:`StateValue`'s settings.
VALUE_SETTINGS = Settings(
    "StateValue",
    {
        "observation_dim": SIZE,
        "num_cells": LAYER_SIZES,
        "layer_norm": FLAG,
        "layer_norm_eps": Number("(0, inf)"),
    },
)


class StateValue(TensorDictModuleBase):
    """``V(s)``: ``[Linear -> GELU -> LayerNorm] x len(num_cells) -> Linear(1)`` on ``s``.

    The FQL repository's ``Value(num_ensembles=1)`` on observations: the same MLP as each
    :class:`~sorl_torchrl.QEnsemble` member (an :class:`~sorl_torchrl.EnsembleMLP` with one
    member), fed ``s`` instead of ``[s, a]``.

    Args:
        observation_dim: size of ``s`` (an integer >= 1).
        num_cells: hidden sizes (released default 4 x 512).
        layer_norm: LayerNorm after each hidden activation (released: yes).
        layer_norm_eps: LayerNorm epsilon (flax default 1e-6).
        in_keys: the observation key.
        out_keys: the value key.

    Examples:
        >>> from tensordict import TensorDict
        >>> value = StateValue(3, num_cells=(16, 16))
        >>> value.values(torch.randn(4, 5, 3)).shape
        torch.Size([4, 5, 1])
        >>> value(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))["state_value"].shape
        torch.Size([4, 1])
    """

    SETTINGS: ClassVar[Settings] = VALUE_SETTINGS

    def __init__(
        self,
        observation_dim: int,
        *,
        num_cells: Sequence[int] = DEFAULT_NUM_CELLS,
        layer_norm: bool = True,
        layer_norm_eps: float = 1e-6,
        in_keys: Sequence[NestedKey] = ("observation",),
        out_keys: Sequence[NestedKey] = ("state_value",),
    ) -> None:
        super().__init__()
        settings = self.SETTINGS.check(
            {
                "observation_dim": observation_dim,
                "num_cells": num_cells,
                "layer_norm": layer_norm,
                "layer_norm_eps": layer_norm_eps,
            }
        )
        if len(in_keys) != 1 or len(out_keys) != 1:
            raise ValueError(
                "StateValue reads one observation key and writes one value key, got "
                f"in_keys={list(in_keys)}, out_keys={list(out_keys)}."
            )
        self.observation_dim = settings["observation_dim"]
        self.network = EnsembleMLP(
            1,
            self.observation_dim,
            1,
            settings["num_cells"],
            settings["layer_norm"],
            settings["layer_norm_eps"],
        )
        self.in_keys = list(in_keys)
        self.out_keys = list(out_keys)

    def values(self, observation: torch.Tensor) -> torch.Tensor:
        """``V(s)``, ``[*B, obs] -> [*B, 1]`` (float inputs converted to the network's dtype)."""
        check_feature_dim(observation, self.observation_dim, "observation")
        if not torch.compiler.is_compiling():
            dtype = self.network.layers[0].weight.dtype
            observation = as_model_dtype(observation, dtype, "observation")
        flat = observation.reshape(-1, self.observation_dim)
        return self.network(flat)[0].reshape(*observation.shape[:-1], 1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``V(s)`` under the value key, in place."""
        observation = tensordict.get(self.in_keys[0], None)
        if observation is None:
            raise KeyError(
                f"StateValue needs the key {self.in_keys[0]!r} in the input tensordict; "
                f"found {list(tensordict.keys(True))}."
            )
        tensordict.set(self.out_keys[0], self.values(observation))
        return tensordict
