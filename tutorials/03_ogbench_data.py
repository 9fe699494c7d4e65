"""
Generate, verify and load an OGBench dataset
============================================

OGBench's datasets can be regenerated locally with the scripted oracles shipped in the
``ogbench`` package, in the official on-disk format (:doc:`/data`). This tutorial makes a
tiny ``cube-single-play`` dataset, checks it, loads it as a TorchRL replay buffer, runs a
few SORL updates on it and evaluates the policy in the matching environment.

The dataset here is deliberately tiny (4 episodes of 200 steps instead of 1000 episodes of
1000), so that the whole pipeline runs in seconds; the commands are the same at full size.

Run time: about 20 seconds on one CPU core.
"""

# %%
# Setup
# -----
import shutil
import tempfile
import warnings

import torch
from torchrl.data import SamplerWithoutReplacement
from torchrl.data.datasets import load_dataset

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.data import format_report, generate_dataset, verify_dataset_file
from sorl_torchrl.envs import CubeOraclePolicy, evaluate_policy, make_ogbench_env

torch.set_num_threads(1)
torch.manual_seed(0)
warnings.filterwarnings("ignore", message=".*precision lowered.*")
root = tempfile.mkdtemp(prefix="ogbench-")

# %%
# Generate
# --------
# :func:`~sorl_torchrl.data.generate_dataset` writes ``<name>.npz`` and ``<name>-val.npz``
# (plus a provenance record for each) into ``out_dir``. The same seed gives the same bytes,
# for any number of workers. From a shell this is
# ``sorl-data generate cube-single-play-v0 --num-episodes 4 --episode-length 201 --out-dir DIR``.
result = generate_dataset(
    "cube-single-play-v0",
    out_dir=root,
    num_episodes=4,
    num_val_episodes=1,
    episode_length=201,
    seed=0,
    progress=False,
)
print(result)

# %%
# Verify
# ------
# :func:`~sorl_torchrl.data.verify_dataset_file` checks keys, dtypes and shapes against the
# official format, whole episodes, finite values, actions in ``[-1, 1]`` and the provenance
# checksum (``sorl-data verify FILE`` prints the same report). Our short episodes are
# reported as a warning, not an error.
report = verify_dataset_file(result.train_path)
print(format_report(report))
assert not report.errors

# %%
# Load as a replay buffer
# -----------------------
# Importing :mod:`sorl_torchrl` registers the ``"ogbench"`` prefix of TorchRL's
# :func:`~torchrl.data.datasets.load_dataset`. The id is OGBench's singletask id: the
# rewards are relabelled for task 2 of ``cube-single``. The result is an
# :class:`~sorl_torchrl.data.OGBenchExperienceReplay`, memory-mapped on disk, that samples
# batches in TorchRL's TED layout — the layout :class:`~sorl_torchrl.objectives.ShortcutLoss`
# reads.
data = load_dataset(
    "ogbench:cube-single-play-singletask-task2-v0",
    root=root,
    batch_size=256,
    sampler=SamplerWithoutReplacement(drop_last=True),
)
print(f"{len(data)} transitions")
batch = data.sample()
print(batch)

# %%
# Rewards are OGBench's singletask relabelling (for ``cube-single``: ``0`` when the cube is
# at its goal, ``-1`` otherwise) and ``("next", "terminated")`` marks the transitions where
# the task is solved, which the TD target uses as its mask. In four short play episodes the
# cube rarely, if ever, rests at task 2's goal, so expect (almost) only ``-1`` here. The
# validation split loads the same way:
print("reward values in the batch:", batch["next", "reward"].unique().tolist())
print("share of solved transitions:", batch["next", "terminated"].float().mean().item())
print("validation transitions:", len(data.val_split()))

# %%
# A few SORL updates on it
# ------------------------
# Exactly the loop of :doc:`01_train_toy`, with the sizes read from the data and the
# ``q_loss_coef`` the paper uses for ``cube-single`` (10). A real run uses the default
# 4 x 512 networks and a million updates; here 100 updates of tiny networks only show that
# the pieces fit together.
observation_dim = batch["observation"].shape[-1]
action_dim = batch["action"].shape[-1]
actor = ShortcutActor(observation_dim, action_dim, num_cells=(64, 64))
critic = QEnsemble(observation_dim, action_dim, num_cells=(64, 64))
update = SORLUpdateStep(ShortcutLoss(actor, critic, q_loss_coef=10.0), lr=1e-3)
for _ in range(100):
    info = update(data.sample())
print({key: round(info[key].item(), 4) for key in ("loss_actor", "loss_qvalue", "q_mean")})

# %%
# Evaluate in the environment
# ---------------------------
# :func:`~sorl_torchrl.envs.make_ogbench_env` builds the matching TorchRL environment
# (OGBench's horizon, ``("next", "success")`` at every step) and
# :func:`~sorl_torchrl.envs.evaluate_policy` runs seeded episodes of any TorchRL policy.
# Our barely trained policy does not solve the task; the scripted oracle that generated
# the data does.
env = make_ogbench_env("cube-single-play-singletask-task2-v0", seed=0)
actor.inference_steps = 8
with torch.no_grad():
    ours = evaluate_policy(actor, env, num_episodes=2, seed=0)
oracle = evaluate_policy(CubeOraclePolicy(env), env, num_episodes=2, seed=0)
print(f"SORL (100 updates, k = 8): success {ours.success_rate:.0%}, return {ours.mean_return}")
print(f"scripted oracle:           success {oracle.success_rate:.0%}, return {oracle.mean_return}")
print(f"{ours.env_steps_per_second:.0f} env steps/s")

# %%
# Clean up the temporary directory.
env.close()
shutil.rmtree(root)
