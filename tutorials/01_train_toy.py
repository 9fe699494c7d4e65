"""
Train SORL on a toy offline dataset
===================================

This tutorial builds the SORL pieces one by one in user code — the shortcut actor, the Q
ensemble, the loss, the update step — and trains them from a TorchRL replay buffer on a
small offline dataset where behaviour cloning is not enough.

**The problem.** A one-step bandit (``sorl_torchrl.toy``): the observation is constant,
the dataset's 2-D actions come from two Gaussian modes at :math:`\\pm(0.6, 0.6)` in equal
shares, and only the ``+`` mode is rewarded (reward 1, else 0). Every transition
terminates, so the true :math:`Q(s, a)` is the reward. A behaviour-cloning policy reproduces
both modes; an offline RL policy should put its actions on the ``+`` mode.

Run time: about 25 seconds on one CPU core.
"""

# %%
# Setup
# -----
# Small networks train fastest with one thread.
import time

import matplotlib.pyplot as plt
import torch
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep
from sorl_torchrl.toy import bimodal_bandit_batch, mode_fractions

torch.set_num_threads(1)
torch.manual_seed(0)

# %%
# An offline dataset in a replay buffer
# -------------------------------------
# :func:`~sorl_torchrl.toy.bimodal_bandit_batch` returns transitions in TorchRL's TED layout:
# ``observation``, ``action``, and under ``"next"`` the ``observation``, ``reward``,
# ``terminated`` and ``done`` entries. Any TED data works the same way — the OGBench
# replay buffer yields exactly this layout. Here we store 20,000 transitions once and
# sample batches of 256 from them.
dataset = bimodal_bandit_batch(20_000, generator=torch.Generator().manual_seed(0))
buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(len(dataset)), batch_size=256)
buffer.extend(dataset)
print(dataset)
print("share of dataset actions in the + / - mode:", mode_fractions(dataset["action"]))

# %%
# The modules
# -----------
# :class:`~sorl_torchrl.modules.ShortcutActor` is a TensorDict module
# ``observation -> action``: a velocity network :math:`f(s, x_t, t, d)` sampled with
# ``inference_steps`` Euler steps. :class:`~sorl_torchrl.modules.QEnsemble` holds two
# independent critics evaluated in one batched call. The paper uses 4 x 512 hidden
# units; a toy needs far less.
actor = ShortcutActor(observation_dim=1, action_dim=2, num_cells=(64, 64, 64))
critic = QEnsemble(observation_dim=1, action_dim=2, num_cells=(64, 64))
print(actor)
print(critic)

# %%
# Before training the policy is a random flow. The actor is a regular TensorDict module,
# so it can be called on a tensordict or, from tensors, through ``sample``:
with torch.no_grad():
    before = actor.sample(torch.zeros(1000, 1), inference_steps=8)
print("untrained policy, + / - share:", mode_fractions(before))

# %%
# The loss and the update step
# ----------------------------
# :class:`~sorl_torchrl.objectives.ShortcutLoss` is a TorchRL
# :class:`~torchrl.objectives.LossModule`: it keeps functional copies of both networks and
# their target (EMA) copies. ``q_loss_coef`` weighs policy improvement against the
# flow-matching and self-consistency (behaviour-cloning-like) terms; ``0`` is pure
# behaviour cloning.
#
# :class:`~sorl_torchrl.objectives.SORLUpdateStep` runs one training iteration the way the
# authors' code does: critic step, critic target update, actor step, actor target update,
# with one shared Adam optimizer (see :doc:`/algorithm` for every switch). A larger
# learning rate than the paper's ``1e-4`` keeps the tutorial short.
loss = ShortcutLoss(actor, critic, q_loss_coef=30.0)
update = SORLUpdateStep(loss, lr=3e-3)

# %%
# Calling the loss on a batch gives the two losses and detached diagnostics, like any
# TorchRL loss:
print(loss(buffer.sample()))

# %%
# Train
# -----
# Each iteration samples a batch and runs the update step, which returns the losses and
# diagnostics of that iteration.
num_updates = 1000
history = []
start = time.perf_counter()
for step in range(num_updates):
    info = update(buffer.sample())
    history.append(
        {key: info[key].item() for key in ("fm_loss", "sc_loss", "q_policy", "loss_qvalue")}
    )
    if step % 250 == 0 or step == num_updates - 1:
        print(
            f"step {step:4d}  FM {history[-1]['fm_loss']:.3f}  SC {history[-1]['sc_loss']:.4f}"
            f"  Q(policy) {history[-1]['q_policy']:.3f}  TD {history[-1]['loss_qvalue']:.4f}"
        )
elapsed = time.perf_counter() - start
print(f"{num_updates} updates in {elapsed:.1f} s ({num_updates / elapsed:.0f} updates/s)")

# %%
# The training curves: the flow-matching loss settles, the TD loss falls as the critic
# learns the reward, and the critic's value of the policy's own actions rises towards 1
# as the policy moves to the rewarded mode.
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, (key, title) in zip(
    axes,
    [
        ("fm_loss", "flow-matching loss"),
        ("loss_qvalue", "critic TD loss"),
        ("q_policy", "Q of the policy's actions"),
    ],
):
    ax.plot([row[key] for row in history], lw=0.8)
    ax.set_title(title)
    ax.set_xlabel("update")
axes[1].set_yscale("log")
fig.tight_layout()

# %%
# Evaluate
# --------
# Sample 1000 actions with ``k = 1`` and ``k = 8`` Euler steps and count how many land on
# each mode (within 0.25 of its centre).
with torch.no_grad():
    for k in (1, 8):
        action = actor.sample(torch.zeros(1000, 1), inference_steps=k)
        plus, minus = mode_fractions(action)
        print(f"k = {k}: {plus:.0%} of the actions in the rewarded mode, {minus:.0%} in the other")

# %%
# With eight steps most actions land on the rewarded mode. A single step is a much coarser
# approximation of the flow for this briefly trained model; :doc:`02_test_time_scaling`
# measures how success grows with the number of steps.
#
# The actions the policy takes, over the dataset's:
with torch.no_grad():
    after = actor.sample(torch.zeros(1000, 1), inference_steps=8)
fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(*dataset["action"][:2000].T, s=3, alpha=0.3, label="dataset")
ax.scatter(*after.T, s=3, alpha=0.5, label="SORL policy (k = 8)")
ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="action[0]", ylabel="action[1]")
ax.legend(loc="lower right")
ax.set_title("rewarded mode: top right")

# %%
# Use it as a policy
# ------------------
# The trained actor is a TorchRL policy: it reads ``observation`` from a tensordict and
# writes ``action``, so ``env.rollout(max_steps, policy=actor)`` works with any TorchRL
# environment. Per call, ``inference_steps`` picks the number of Euler steps.
from tensordict import TensorDict

td = TensorDict(observation=torch.zeros(4, 1), batch_size=[4])
with torch.no_grad():
    print(actor(td, inference_steps=4)["action"])

# %%
# Next: :doc:`02_test_time_scaling` spends more compute per action on a trained model, with
# more steps and with the critic as a verifier.
