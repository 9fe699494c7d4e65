"""
Test-time scaling with the verifier
===================================

A trained SORL model can spend more compute per action without retraining, in two ways
(:doc:`/test_time_scaling`):

* **sequential** — more Euler steps ``k`` per sample (paper: :math:`M_\\text{inf}`);
* **parallel** — ``N`` candidates per state, the one the learned critic scores highest is
  kept (:class:`~sorl_torchrl.modules.VerifierSampler`).

We train a model on the toy bimodal bandit of :doc:`01_train_toy` and measure both, with a
plot. To leave room for the verifier, the policy-improvement weight is kept small
(``q_loss_coef=3``): the policy improves on the data only a little by itself.

Run time: about 25 seconds on one CPU core.
"""

# %%
# Train a toy model
# -----------------
# :func:`~sorl_torchrl.smoke.train_toy` builds a
# :class:`~sorl_torchrl.modules.ShortcutActor` and a :class:`~sorl_torchrl.modules.QEnsemble`
# and trains them with :class:`~sorl_torchrl.objectives.SORLUpdateStep` on fresh bandit
# batches — the loop of the first tutorial in one call.
import matplotlib.pyplot as plt
import torch

from sorl_torchrl import VerifierSampler
from sorl_torchrl.smoke import train_toy
from sorl_torchrl.toy import mode_fractions

torch.set_num_threads(1)
actor, critic, speed = train_toy(q_loss_coef=3.0, num_updates=1000, progress=False, seed=0)
print(f"trained at {speed:.0f} updates/s")

# %%
# The metric
# ----------
# An action succeeds when it lands on the rewarded mode (within 0.25 of
# :math:`(0.6, 0.6)`); we also report how often it lands on the unrewarded one. Each
# setting is measured on 2000 states with a fixed seed.
observation = torch.zeros(2000, 1)


def success(num_candidates: int, inference_steps: int, seed: int = 1) -> tuple[float, float]:
    """Share of best-of-N actions in the rewarded and in the unrewarded mode."""
    torch.manual_seed(seed)
    policy = VerifierSampler(actor, critic, num_candidates, inference_steps, q_agg="mean")
    action, _, _ = policy.select(observation)
    return mode_fractions(action)


steps = [1, 2, 4, 8]
candidates = [1, 2, 4, 8, 16, 32]
results = {(k, n): success(n, k) for k in steps for n in candidates}
print("  k \\ N " + "".join(f"{n:>7d}" for n in candidates))
for k in steps:
    print(f"{k:>7d} " + "".join(f"{results[k, n][0]:7.2f}" for n in candidates))

# %%
# Plot both axes
# --------------
# Left: success against the number of Euler steps ``k``, one line per verifier size ``N``.
# Right: success against ``N``, one line per ``k``.
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
for n in (1, 4, 16):
    left.plot(steps, [results[k, n][0] for k in steps], marker="o", label=f"N = {n}")
left.set(xscale="log", xlabel="Euler steps k", ylabel="success (rewarded mode)")
left.set_xticks(steps, [str(k) for k in steps])
left.minorticks_off()
left.set_title("sequential scaling")
left.legend()
for k in steps:
    right.plot(candidates, [results[k, n][0] for n in candidates], marker="o", label=f"k = {k}")
right.set(xscale="log", xlabel="candidates N")
right.set_xticks(candidates, [str(n) for n in candidates])
right.minorticks_off()
right.set_title("parallel scaling (best-of-N)")
right.legend()
fig.tight_layout()

# %%
# Reading the plot: with ``N = 1`` success grows with ``k`` — a one-step sample of a
# bimodal flow often lands between the modes, eight steps follow the flow to one of them.
# A few candidates (``N = 2`` to ``4``) let the critic pick the rewarded mode more often at
# every ``k``, and with ``k >= 4`` success stays near 1 for larger ``N`` too. With many
# candidates from the cheapest sampler (``k = 1``) the critic is led astray: among many
# off-data actions it over-estimates some — the verifier is only as good as the critic is
# where the candidates fall.

# %%
# What the verifier sees
# ----------------------
# ``return_candidates=True`` writes every candidate and its score next to the chosen
# action, for any batch of states (each candidate stays paired with its own state).
from tensordict import TensorDict

policy = VerifierSampler(
    actor, critic, num_candidates=16, inference_steps=8, return_candidates=True
)
td = policy(TensorDict(observation=torch.zeros(3, 1), batch_size=[3]))
print(td)
chosen = td["candidate_scores"].argmax(-1)
print("scores of state 0:", td["candidate_scores"][0].round(decimals=2))
print("chosen candidate per state:", chosen.tolist())

# %%
# The candidates of one state and the one the verifier picked:
cands = td["candidate_actions"][0]
fig, ax = plt.subplots(figsize=(4.5, 4.5))
points = ax.scatter(*cands.T, c=td["candidate_scores"][0], cmap="viridis", s=30)
ax.scatter(*td["action"][0], marker="*", s=250, c="red", label="chosen")
ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="action[0]", ylabel="action[1]")
fig.colorbar(points, label="Q (mean over members)")
ax.legend(loc="lower right")
ax.set_title("16 candidates, k = 8")

# %%
# Cost
# ----
# Best-of-N costs ``N * k`` actor evaluations and ``N`` critic evaluations per state, all
# in one batched call. On this CPU, for 2000 states:
import time

for k, n in [(1, 1), (8, 1), (1, 16), (8, 16)]:
    policy = VerifierSampler(actor, critic, n, k)
    start = time.perf_counter()
    policy.select(observation)
    print(f"k = {k}, N = {n:2d}: {1e3 * (time.perf_counter() - start):6.1f} ms")
