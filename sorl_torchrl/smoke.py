"""A short end-to-end SORL run on the toy bimodal bandit (``sorl-smoke``).

Trains behaviour cloning (``q_loss_coef = 0``) and SORL one after the other for 1500
updates each on CPU, then reports, for each number of inference steps ``k`` and verifier size
``N``, the share of actions in the rewarded mode. About a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from tqdm import trange

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep, VerifierSampler
from sorl_torchrl.toy import bimodal_bandit_batch, mode_fractions

__all__ = ["main", "train_toy"]


def train_toy(
    q_loss_coef: float,
    num_updates: int,
    batch_size: int = 256,
    num_cells: tuple[int, ...] = (64, 64, 64),
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[ShortcutActor, QEnsemble, float]:
    """Train SORL (or BC with ``q_loss_coef=0``) on the toy bandit.

    Each update draws a fresh batch from
    :func:`~sorl_torchrl.toy.bimodal_bandit_batch` and runs one
    :class:`~sorl_torchrl.objectives.SORLUpdateStep`.

    Args:
        q_loss_coef: weight of the Q loss; ``0`` is behaviour cloning.
        num_updates: number of training iterations.
        batch_size: transitions per batch.
        num_cells: hidden sizes of the actor; the critic uses the first two.
        lr: Adam learning rate.
        seed: seeds the networks' initialisation and the data.
        progress: show a progress bar.

    Returns:
        ``(actor, critic, updates_per_second)``.

    Examples:
        >>> actor, critic, speed = train_toy(10.0, num_updates=2, num_cells=(8, 8),
        ...                                  progress=False)
        >>> actor.sample(torch.zeros(3, 1), inference_steps=2).shape
        torch.Size([3, 2])
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    actor = ShortcutActor(1, 2, num_cells=num_cells)
    critic = QEnsemble(1, 2, num_cells=num_cells[:2])
    loss = ShortcutLoss(actor, critic, q_loss_coef=q_loss_coef)
    update = SORLUpdateStep(loss, lr=lr)
    label = "SORL" if q_loss_coef else "BC"
    start = time.perf_counter()
    for _ in trange(num_updates, desc=label, disable=not progress, mininterval=1.0):
        update(bimodal_bandit_batch(batch_size, generator=generator))
    return actor, critic, num_updates / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``sorl-smoke``, ``python -m sorl_torchrl.smoke``).

    Args:
        argv: command-line arguments (``--updates``, ``--q-loss-coef``, ``--seed``,
            ``--threads``); ``sys.argv`` if ``None``.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--q-loss-coef", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (small networks run best on one)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    results = {}
    for name, coef in (("BC", 0.0), ("SORL", args.q_loss_coef)):
        actor, critic, speed = train_toy(coef, args.updates, seed=args.seed)
        console.print(f"{name}: {args.updates} updates at {speed:.1f} updates/s")
        torch.manual_seed(args.seed + 1)
        obs = torch.zeros(1000, 1)
        for k in (1, 2, 4, 8):
            for n in (1, 4, 16):
                action, _, _ = VerifierSampler(actor, critic, n, k).select(obs)
                results[name, k, n] = mode_fractions(action)
    table = Table(title="Share of actions in the rewarded (+) / unrewarded (-) mode")
    table.add_column("k")
    table.add_column("N")
    for name in ("BC", "SORL"):
        table.add_column(f"{name} +", justify="right")
        table.add_column(f"{name} -", justify="right")
    for k in (1, 2, 4, 8):
        for n in (1, 4, 16):
            cells = [f"{v:.2f}" for name in ("BC", "SORL") for v in results[name, k, n]]
            table.add_row(str(k), str(n), *cells)
    console.print(table)


if __name__ == "__main__":
    main()
