"""The ``sorl-data`` command: generate, verify and list OGBench datasets.

Exit status: 0 on success; 1 when ``verify`` finds a file damaged; 2 on a user error (an
unknown or load-only dataset, an existing dataset without ``--overwrite``, a directory that
cannot be written, a bad argument), with one message and no traceback (``--debug`` adds it).

Examples:
    >>> main(["list"])  # doctest: +ELLIPSIS
    cube-double-noisy-v0
    ...
    0
    >>> main(["generate", "antmaze-large-navigate-v0", "--out-dir", "/tmp"])
    2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sorl_torchrl._cli import EXIT_STATUS_HELP, add_debug_option, console_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-data``."""
    parser = argparse.ArgumentParser(
        prog="sorl-data",
        description=(
            "Generate and verify OGBench datasets with the oracles shipped in ogbench. "
            "Expert-data datasets (antmaze, humanoidmaze, antsoccer) are load only: copy the "
            "official files into the dataset dir, then verify and load them."
        ),
        epilog=EXIT_STATUS_HELP,
    )
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser(
        "generate",
        help="generate <name>.npz and <name>-val.npz in the official format",
        description=(
            "Generate a dataset with OGBench's scripted oracles. An interrupted run resumes "
            "from the episodes already collected when started again with the same arguments."
        ),
        epilog=EXIT_STATUS_HELP,
    )
    generate.add_argument("name", help="dataset name, e.g. cube-single-play-v0 (see `list`)")
    generate.add_argument(
        "--num-episodes", type=int, default=None, help="training episodes (default: official)"
    )
    generate.add_argument(
        "--num-val-episodes", type=int, default=None, help="validation episodes (default: N // 10)"
    )
    generate.add_argument(
        "--episode-length", type=int, default=None, help="rows per episode (default: official)"
    )
    generate.add_argument(
        "--out-dir", default=None, help="output dir (default: ~/.ogbench/data, OGBench's own)"
    )
    generate.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    generate.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    generate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_debug_option(generate)

    verify = commands.add_parser(
        "verify",
        help="check a dataset file and print summary statistics",
        description="Check dataset files; the exit status is 1 if any file has an error.",
        epilog=EXIT_STATUS_HELP,
    )
    verify.add_argument("files", nargs="+", help="dataset .npz files")
    verify.add_argument(
        "--dataset", default=None, help="dataset name (default: inferred from the file name)"
    )
    add_debug_option(verify)

    listing = commands.add_parser(
        "list", help="list the datasets that can be generated", epilog=EXIT_STATUS_HELP
    )
    listing.add_argument(
        "--load-only",
        action="store_true",
        help="list the expert-data datasets instead (official files only, cannot be generated)",
    )
    add_debug_option(listing)
    return parser


@console_command("sorl-data")
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sorl-data``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.command == "list":
        from sorl_torchrl.data.specs import list_datasets

        print("\n".join(list_datasets(load_only=args.load_only)))
        return 0
    if args.command == "generate":
        return _generate(args)
    return _verify(args)


def _generate(args: argparse.Namespace) -> int:
    from sorl_torchrl.data.generate import generate_dataset

    result = generate_dataset(
        args.name,
        out_dir=args.out_dir,
        num_episodes=args.num_episodes,
        num_val_episodes=args.num_val_episodes,
        episode_length=args.episode_length,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"wrote {result.train_path} ({result.num_train_rows} rows) and "
        f"{result.val_path} ({result.num_val_rows} rows); collected "
        f"{result.steps_collected} steps in {result.wall_time_s:.1f} s "
        f"({result.steps_per_second:.0f} steps/s)"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sorl_torchrl.data.verify import format_report, verify_dataset_file

    status = 0
    for file in args.files:
        report = verify_dataset_file(file, dataset_name=args.dataset)
        print(format_report(report))
        status = status or (0 if report.ok else 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
