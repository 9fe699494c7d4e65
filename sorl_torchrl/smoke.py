"""A short end-to-end SORL run on the toy bimodal bandit (``sorl-smoke``).

Trains behaviour cloning (``q_loss_coef = 0``) and SORL one after the other for 1500
updates each on CPU, then reports, for each number of inference steps ``k`` and verifier size
``N``, the share of actions in the rewarded and in the unrewarded mode. About a minute on one
CPU core. ``--inference-steps 1 2 4 8 16 32`` also samples beyond the trained
``discretization_steps = 8`` (each such ``k`` warns once per model).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table
from tqdm import trange

from sorl_torchrl import QEnsemble, ShortcutActor, ShortcutLoss, SORLUpdateStep, VerifierSampler
from sorl_torchrl._cli import EXIT_STATUS_HELP, add_debug_option, console_command
from sorl_torchrl._validation import SEED, Each, Number, Settings
from sorl_torchrl.modules.verifier import VERIFIER_SETTINGS
from sorl_torchrl.objectives.shortcut import LOSS_SETTINGS
from sorl_torchrl.toy import bimodal_bandit_batch, mode_fractions

__all__ = ["build_parser", "main", "train_toy"]

#: ``M_disc`` of the toy models: the table's ``k`` above it samples beyond training.
DISCRETIZATION_STEPS = 8
DEFAULT_STEPS = (1, 2, 4, 8)
DEFAULT_CANDIDATES = (1, 4, 16)


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
    loss = ShortcutLoss(
        actor, critic, q_loss_coef=q_loss_coef, discretization_steps=DISCRETIZATION_STEPS
    )
    update = SORLUpdateStep(loss, lr=lr)
    label = "SORL" if q_loss_coef else "BC"
    start = time.perf_counter()
    for _ in trange(num_updates, desc=label, disable=not progress, mininterval=1.0):
        update(bimodal_bandit_batch(batch_size, generator=generator))
    return actor, critic, num_updates / (time.perf_counter() - start)


#: The checks of ``sorl-smoke``'s options (the modules' own, so the messages match theirs).
SMOKE_SETTINGS = Settings(
    "sorl-smoke",
    {
        "updates": Number("[0, inf)", integer=True),
        "q_loss_coef": LOSS_SETTINGS["q_loss_coef"],
        "seed": SEED,
        "threads": Number("[1, inf)", integer=True),
        "inference_steps": Each(VERIFIER_SETTINGS["inference_steps"]),
        "num_candidates": Each(VERIFIER_SETTINGS["num_candidates"]),
    },
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-smoke``."""
    parser = argparse.ArgumentParser(
        prog="sorl-smoke", description=__doc__.split("\n\n")[0], epilog=EXIT_STATUS_HELP
    )
    parser.add_argument(
        "--updates", type=int, default=1500, help="training updates per method (default: 1500)"
    )
    parser.add_argument(
        "--q-loss-coef",
        type=float,
        default=10.0,
        help="SORL's Q-loss weight, finite and >= 0 (default: 10; BC always uses 0)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the networks, the data and the sampling"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (small networks run best on one)"
    )
    parser.add_argument(
        "--inference-steps",
        type=int,
        nargs="+",
        default=list(DEFAULT_STEPS),
        metavar="K",
        help="Euler steps k of the table's rows, powers of two (default: 1 2 4 8, the "
        f"trained discretization_steps is {DISCRETIZATION_STEPS}: more warns)",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        nargs="+",
        default=list(DEFAULT_CANDIDATES),
        metavar="N",
        help="verifier candidates N of the table's rows (default: 1 4 16)",
    )
    add_debug_option(parser)
    return parser


@console_command("sorl-smoke")
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``sorl-smoke``, ``python -m sorl_torchrl.smoke``).

    Args:
        argv: command-line arguments (see ``sorl-smoke --help``); ``sys.argv`` if ``None``.

    Returns:
        The exit status: 0, or 2 with one message for an option out of range.
    """
    args = build_parser().parse_args(argv)
    options = SMOKE_SETTINGS.check({key: getattr(args, key) for key in SMOKE_SETTINGS})
    steps, candidates = options["inference_steps"], options["num_candidates"]
    torch.set_num_threads(options["threads"])
    console = Console()
    results = {}
    for name, coef in (("BC", 0.0), ("SORL", options["q_loss_coef"])):
        actor, critic, speed = train_toy(coef, options["updates"], seed=options["seed"])
        console.print(f"{name}: {options['updates']} updates at {speed:.1f} updates/s")
        torch.manual_seed(options["seed"] + 1)
        obs = torch.zeros(1000, 1)
        for k in steps:
            for n in candidates:
                action, _, _ = VerifierSampler(actor, critic, n, k).select(obs)
                results[name, k, n] = mode_fractions(action)
    table = Table(title="Share of actions in the rewarded (+) / unrewarded (-) mode")
    table.add_column("k")
    table.add_column("N")
    for name in ("BC", "SORL"):
        table.add_column(f"{name} +", justify="right")
        table.add_column(f"{name} -", justify="right")
    for k in steps:
        for n in candidates:
            cells = [f"{v:.3f}" for name in ("BC", "SORL") for v in results[name, k, n]]
            table.add_row(str(k), str(n), *cells)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
