"""Command line for the results store.

    python -m results_store compact STORE [--rows-per-part N]

Merges the finished per-trial files of STORE into a few large Parquet files
per table, and prints what it did. Exit status 2 with a one-line error on bad
input (an absent store, a bad option) or a store that cannot be changed.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from common.cli import OneLineArgumentParser, positive_int, program
from results_store.compaction import DEFAULT_ROWS_PER_PART
from results_store.files import StoreError
from results_store.store import ResultsStore


def main(argv: Optional[List[str]] = None) -> int:
    parser = OneLineArgumentParser(prog=program("python -m results_store", "prune-sweep-store"), description="Maintain a Parquet results store.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineArgumentParser)
    compact = commands.add_parser("compact", help="merge finished per-trial files into a few large parts per table")
    compact.add_argument("store", metavar="STORE", help="the store: a directory or a URI (s3://, gs://, file://)")
    compact.add_argument("--rows-per-part", type=positive_int, default=DEFAULT_ROWS_PER_PART, metavar="N",
                         help=f"at most N rows in any table's part (default {DEFAULT_ROWS_PER_PART:,})")
    args = parser.parse_args(argv)
    try:
        store = ResultsStore(args.store)
        if not store.exists():
            raise StoreError(f"store {args.store} does not exist")
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
