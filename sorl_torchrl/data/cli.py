"""The ``sorl-data`` command: download, generate, verify and list OGBench datasets.

Exit status: 0 on success; 1 when ``verify`` finds a file damaged; 2 on a user error (an
unknown dataset, generating a download-only one, an existing dataset without
``--overwrite``, a directory that cannot be written or is too small, a server that lacks
the file, a transfer that broke off, a download that is not a valid dataset, a bad
argument), with one message and no traceback (``--debug`` adds it).

Examples:
    >>> main(["list"])  # doctest: +ELLIPSIS
    antmaze-giant-navigate-v0 ...download
    ...
    cube-single-play-v0 ...generate, download
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
from sorl_torchrl.data.download import URL_ENV

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sorl-data``."""
    parser = argparse.ArgumentParser(
        prog="sorl-data",
        description=(
            "Download the official OGBench datasets, or regenerate them with the oracles "
            "shipped in ogbench, and verify them. Expert-data datasets (antmaze, "
            "humanoidmaze, antsoccer) can only be downloaded."
        ),
        epilog=EXIT_STATUS_HELP,
    )
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser(
        "download",
        help="download the official <name>.npz and <name>-val.npz, verified",
        description=(
            "Download official datasets with OGBench's own downloader, verify them and "
            "write a provenance record (source official, URL, date) beside each file. A file "
            "appears under its final name only once complete and verified; an interrupted "
            "download leaves none, and the rerun starts afresh. Files already present "
            "(official, or without a record) are kept."
        ),
        epilog=EXIT_STATUS_HELP,
    )
    download.add_argument("names", nargs="+", help="dataset names, e.g. antmaze-large-navigate-v0")
    download.add_argument(
        "--out-dir", default=None, help="output dir (default: ~/.ogbench/data, OGBench's own)"
    )
    download.add_argument(
        "--url",
        default=None,
        help=f"the server (default: ${URL_ENV}, else ogbench.utils.DATASET_URL, the official one)",
    )
    download.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without data before giving up"
    )
    download.add_argument("--overwrite", action="store_true", help="download existing files again")
    download.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_debug_option(download)

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
        "--out-dir",
        default=None,
        help="output dir (default: ~/.sorl_torchrl/regenerated or $SORL_REGENERATED_DIR; "
        "never OGBench's ~/.ogbench/data)",
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
        "list",
        help="list the datasets and how each can be obtained (generate, download)",
        epilog=EXIT_STATUS_HELP,
    )
    listing.add_argument(
        "--download-only",
        "--load-only",
        dest="download_only",
        action="store_true",
        help="only the expert-data datasets (official files only, cannot be generated)",
    )
    add_debug_option(listing)
    return parser


@console_command("sorl-data")
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sorl-data``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if args.command == "list":
        return _list(args)
    if args.command == "download":
        return _download(args)
    if args.command == "generate":
        return _generate(args)
    return _verify(args)


def _list(args: argparse.Namespace) -> int:
    from sorl_torchrl.data.specs import DATASETS

    names = sorted(n for n, spec in DATASETS.items() if spec.load_only or not args.download_only)
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {', '.join(DATASETS[name].obtain)}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from sorl_torchrl.data.download import download_dataset
    from sorl_torchrl.data.provenance import describe_provenance, read_provenance
    from sorl_torchrl.data.specs import get_dataset_spec
    from sorl_torchrl.data.verify import format_report

    specs = [get_dataset_spec(name) for name in args.names]  # every name known, or nothing done
    for spec in specs:
        result = download_dataset(
            spec.name,
            args.out_dir,
            url=args.url,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            timeout=args.timeout,
        )
        for path in result.files:
            if path not in result.downloaded:
                found = describe_provenance(read_provenance(path))
                print(f"{path}: already present ({found}); kept (--overwrite downloads it again)")
        for report in result.reports:
            print(format_report(report))
    return 0


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
