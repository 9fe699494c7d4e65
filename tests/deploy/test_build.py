"""One builder of a run config's networks, for the recipes and for load_policy."""

from __future__ import annotations

import pytest
import torch
from deploy_helpers import TINY_NETWORK, run_config
from omegaconf import OmegaConf

from sorl_torchrl import QEnsemble, ShortcutActor
from sorl_torchrl.deploy import build_networks, build_sorl_modules, model_sizes
from sorl_torchrl.recipes.common import build_modules


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_networks_are_the_modules_their_settings_name_with_the_datasets_sizes():
    config = run_config(network={**TINY_NETWORK, "step_feature": "log2", "num_critics": 3})
    torch.manual_seed(4)
    actor, critic = build_networks(config)
    torch.manual_seed(4)
    expected_actor = ShortcutActor(28, 5, num_cells=(16, 16))
    expected_critic = QEnsemble(28, 5, 3, num_cells=(16, 16), step_feature="log2")
    assert _same_weights(actor, expected_actor) and _same_weights(critic, expected_critic)
    assert critic.step_feature == "log2" and critic.condition_on_steps


def test_the_recipes_build_the_same_modules_as_load_policy():
    config = run_config()
    cfg = OmegaConf.create({**config, "device": "cpu", "compile": False})
    torch.manual_seed(2)
    _, _, recipe_loss, _ = build_modules(cfg)
    torch.manual_seed(2)
    _, _, loss = build_sorl_modules(config)
    assert _same_weights(recipe_loss, loss)
    assert (recipe_loss.q_agg, recipe_loss.q_loss_coef, recipe_loss.validate_inputs) == (
        "min",
        10.0,
        False,
    )
    assert loss.validate_inputs


def test_sizes_come_from_the_config_or_the_dataset_spec_with_clear_errors():
    assert model_sizes({"env": {"name": "puzzle-4x4-play"}}) == (83, 5)
    assert model_sizes({"sizes": {"observation_dim": 3, "action_dim": 1}, "env": {}}) == (3, 1)
    with pytest.raises(ValueError, match="names neither a dataset"):
        model_sizes({"env": {}})
    with pytest.raises(ValueError, match="Unknown dataset 'cube-singel-play-v0'"):
        model_sizes({"env": {"name": "cube-singel-play"}})
    with pytest.raises(ValueError, match="config.network lacks actor_cells, step_feature"):
        network = {
            k: v for k, v in TINY_NETWORK.items() if k not in ("actor_cells", "step_feature")
        }
        build_networks(run_config(network=network))
