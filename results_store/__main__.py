"""Command line for the results store.

    python -m results_store compact STORE [--rows-per-part N]
    python -m results_store gc STORE --storage-path PATH [--older-than HOURS] [--dry-run]

`compact` merges the finished per-trial files of STORE into a few large
Parquet files per table, and prints what it did. `gc` frees the checkpoints
under PATH that no run will resume: trials already in STORE, and trials in no
grid recorded in STORE (a changed grid abandoned them) untouched for HOURS; it
also drops kept masks (STORE/masks/) of trials STORE does not hold, untouched
for HOURS, and keeps every stored trial's. Exit status 2 with a one-line error on bad
input (an absent store, a bad option) or a store that cannot be changed.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from common.cli import OneLineArgumentParser, positive_int, program
from results_store.compaction import DEFAULT_ROWS_PER_PART
from results_store.files import StoreError
from results_store.store import ResultsStore


def non_negative_hours(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"--older-than must be a number of hours >= 0, got {text!r}")
    return value


def main(argv: Optional[List[str]] = None) -> int:
    parser = OneLineArgumentParser(prog=program("python -m results_store", "prune-sweep-store"), description="Maintain a Parquet results store.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineArgumentParser)
    compact = commands.add_parser("compact", help="merge finished per-trial files into a few large parts per table")
    compact.add_argument("store", metavar="STORE", help="the store: a directory or a URI (s3://, gs://, file://)")
    compact.add_argument("--rows-per-part", type=positive_int, default=DEFAULT_ROWS_PER_PART, metavar="N",
                         help=f"at most N rows in any table's part (default {DEFAULT_ROWS_PER_PART:,})")
    gc = commands.add_parser("gc", help="free checkpoints no run will resume (trials stored, or in no recorded grid), "
                                          "and masks of trials the store does not hold")
    gc.add_argument("store", metavar="STORE", help="the store whose recorded grids say which trials are wanted")
    gc.add_argument("--storage-path", required=True, metavar="PATH",
                    help="the sweeps' --storage-path (checkpoints are under PATH/checkpoints)")
    gc.add_argument("--older-than", type=non_negative_hours, default=0.0, metavar="HOURS",
                    help="free a trial of no recorded grid only when untouched this long (default 0)")
    gc.add_argument("--dry-run", action="store_true", help="say what would be freed; free nothing")
    args = parser.parse_args(argv)
    try:
        store = ResultsStore(args.store)
        if not store.exists():
            raise StoreError(f"store {args.store} does not exist")
        if args.command == "gc":
            from results_store.collect import collect_checkpoints, collect_masks

            collected = collect_checkpoints(store, args.storage_path, args.older_than * 3600.0, args.dry_run)
            for line in collected.lines(args.dry_run):
                print(line)
            masks = collect_masks(store, args.older_than * 3600.0, args.dry_run)
            if masks.dropped or masks.kept_running or masks.kept_recent:
                print(masks.line(args.dry_run))
            return 0
        report = store.compact(args.rows_per_part)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in store.quarantined:
        print(line)
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
