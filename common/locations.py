"""Locations: a local path or a pyarrow URI, whose query (``?endpoint_override=...``) stays at the end.

``s3://bucket/ray?endpoint_override=minio:9000`` names a directory *and* how to
reach it; a path appended after the query would be read as part of the query.
"""
from __future__ import annotations

import os


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """A URI as given; a local path made absolute (workers and later runs start elsewhere)."""
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def split_query(location: str) -> tuple:
    """(the location without its query, the query with its '?', or '')."""
    if not is_uri(location):
        return location, ""
    base, mark, query = location.partition("?")
    return base, mark + query


def join_location(location: str, *parts: str) -> str:
    """`location`/`parts`..., with a URI's query kept at the end."""
    base, query = split_query(location)
    joined = "/".join([base.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")])
    return joined + query


CHECKPOINTS_DIR = "checkpoints"  # under --storage-path: <trial_id>/state-*.pt, the project's own


def checkpoint_root(storage_path: str) -> str:
    """Where every trial's checkpoints live: <storage path>/checkpoints/<trial_id>/."""
    return join_location(absolute(storage_path), CHECKPOINTS_DIR)
