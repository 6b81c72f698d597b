"""Filesystems, paths and one-line errors shared by the store's modules."""
from __future__ import annotations

import os
import uuid
from typing import Tuple, Union

import pyarrow as pa
import pyarrow.fs as pafs


class StoreError(Exception):
    """A store that cannot be used as asked (absent, empty, not writable); one-line message."""


def filesystem_for(location: Union[str, "os.PathLike[str]"]) -> Tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a pyarrow URI (s3://, gs://, file://) or a local path, made absolute."""
    location = os.fspath(location)
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def probe_directory(fs: pafs.FileSystem, directory: str) -> None:
    """Create `directory` if needed and write and remove a hidden probe file there; OSError etc. when that fails."""
    probe = join(directory, f".probe-{uuid.uuid4().hex}")
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(probe) as stream:
        stream.write(b"probe")
    fs.delete_file(probe)


def check_writable(location: str, what: str) -> None:
    """Create `location` (a directory or URI) if needed and write and remove a probe file there."""
    try:
        fs, root = filesystem_for(location)
        probe_directory(fs, root)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"{what} {location} is not writable: {one_line(exc)}") from None


def is_uri(location: str) -> bool:
    return "://" in location


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") if i == 0 else p.strip("/") for i, p in enumerate(parts))


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
