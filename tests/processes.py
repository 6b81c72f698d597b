"""The processes below a driver, from /proc: Ray's daemons and workers that a test kills or checks are gone."""
import os
from typing import List, NamedTuple


class Process(NamedTuple):
    pid: int
    name: str  # /proc's comm: the executable's name, cut at 15 characters
    cmdline: str


def descendants(pid: int) -> List[Process]:
    """Every process below `pid`."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(int(rest.split()[1]), []).append(Process(int(entry), head.split("(", 1)[1], cmdline))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def alive(pid: int) -> bool:
    """Running, not merely a zombie awaiting its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
