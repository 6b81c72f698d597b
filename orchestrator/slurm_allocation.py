"""A Slurm allocation read from the job's environment only (`scontrol` may be absent on compute nodes): the
nodes (compressed node lists parsed here), GPUs and CPUs per node, the Ray auth token every node shares, and the
paths that look node-local. `orchestrator.slurm` starts Ray on what this reads.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/local", "/scratch/local")  # typical per-node mounts


class SlurmError(ValueError):
    """An allocation this launcher cannot read: one line, exit status 2."""


# ----------------------------------------------------------------- the allocation, from the environment

def _split_top_level(text: str) -> List[str]:
    """Split at commas outside brackets: `gpu[01-03,07],cpu5` -> [`gpu[01-03,07]`, `cpu5`]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SlurmError(f"bad Slurm node list {text!r}: unbalanced ']'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SlurmError(f"bad Slurm node list {text!r}: unbalanced '['")
    parts.append(text[start:])
    return parts


def _expand_ranges(ranges: str, whole: str) -> List[str]:
    """`01-03,07` -> 01, 02, 03, 07 (zero padding kept, as Slurm writes it)."""
    out = []
    for item in ranges.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise SlurmError(f"bad Slurm node list {whole!r}: range {item!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise SlurmError(f"bad Slurm node list {whole!r}: range {item!r} runs backwards")
        width = len(lo)
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def expand_nodelist(text: str) -> List[str]:
    """Slurm's compressed host list (`gpu[01-03,07],cpu5`, `rack[1-2]-n[1-2]`) as host names, in order."""
    if not text or not text.strip():
        raise SlurmError("empty Slurm node list ($SLURM_JOB_NODELIST); run this inside an allocation (sbatch, salloc)")
    hosts: List[str] = []
    for part in _split_top_level(text.strip()):
        if not part:
            raise SlurmError(f"bad Slurm node list {text!r}: an empty name")
        names = [""]
        for literal, ranges in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", part):
            expanded = _expand_ranges(ranges, text) if ranges else [""]
            names = [n + literal + e for n in names for e in expanded]
        hosts.extend(names)
    if len(set(hosts)) != len(hosts):
        raise SlurmError(f"bad Slurm node list {text!r}: a node is named twice")
    return hosts


def expand_counts(text: str) -> List[int]:
    """Slurm's per-node counts (`$SLURM_JOB_CPUS_PER_NODE`): `72(x2),36` -> [72, 72, 36]."""
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise SlurmError(f"bad Slurm per-node count {text!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _count(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise SlurmError(f"bad ${name} {value!r}: expected a count")
    return int(value)


def gpus_per_node(env: Mapping[str, str]) -> int:
    """GPUs on each node: what Slurm gave this node, else what the job asked per node or per task, else 0."""
    on_node = _count(env, "SLURM_GPUS_ON_NODE")
    if on_node is not None:
        return on_node
    per_node = env.get("SLURM_GPUS_PER_NODE", "").strip()
    if per_node:  # [type:]count, maybe several types: a100:2,v100:1
        total = 0
        for item in per_node.split(","):
            count = item.rsplit(":", 1)[-1].split("(")[0]
            if not count.isdigit():
                raise SlurmError(f"bad $SLURM_GPUS_PER_NODE {per_node!r}: expected [type:]count")
            total += int(count)
        return total
    per_task = env.get("SLURM_GPUS_PER_TASK", "").strip()
    if per_task:
        count = per_task.rsplit(":", 1)[-1]
        if not count.isdigit():
            raise SlurmError(f"bad $SLURM_GPUS_PER_TASK {per_task!r}: expected [type:]count")
        return int(count) * (_count(env, "SLURM_NTASKS_PER_NODE") or 1)
    job_gpus = env.get("SLURM_JOB_GPUS", "").strip()
    if job_gpus:  # the GPU indices on this node: 0,1,2,3 (or 0-3)
        return len(_expand_ranges(job_gpus, job_gpus))
    return 0


def cpus_per_node(env: Mapping[str, str], nodes: int) -> List[Optional[int]]:
    """CPUs each node's `ray start` may use: the step's share when tasks ask for CPUs, else the node's allocation
    ($SLURM_JOB_CPUS_PER_NODE, per node), else this node's; None (Ray counts them) when Slurm says nothing."""
    per_task = _count(env, "SLURM_CPUS_PER_TASK")
    if per_task is not None:
        return [per_task * (_count(env, "SLURM_NTASKS_PER_NODE") or 1)] * nodes
    per_node = env.get("SLURM_JOB_CPUS_PER_NODE", "").strip()
    if per_node:
        counts = expand_counts(per_node)
        if len(counts) == nodes:
            return counts
    return [_count(env, "SLURM_CPUS_ON_NODE")] * nodes


@dataclass
class Allocation:
    job_id: str
    nodes: List[str]
    gpus: int  # per node
    cpus: List[Optional[int]]  # per node, in the order of `nodes`
    restart_count: int

    def describe(self) -> str:
        cpus = sorted({c for c in self.cpus if c is not None})
        cpu_text = "/".join(map(str, cpus)) if cpus else "all"
        names = ", ".join(self.nodes[:8]) + (f" and {len(self.nodes) - 8} more" if len(self.nodes) > 8 else "")
        return (f"slurm job {self.job_id}: {len(self.nodes)} node(s) ({names}), {self.gpus} GPU(s) and "
                f"{cpu_text} CPU(s) per node")


def read_allocation(env: Mapping[str, str]) -> Allocation:
    nodes = expand_nodelist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
    return Allocation(job_id=env.get("SLURM_JOB_ID", "?"), nodes=nodes, gpus=gpus_per_node(env),
                      cpus=cpus_per_node(env, len(nodes)), restart_count=_count(env, "SLURM_RESTART_COUNT") or 0)


# ----------------------------------------------------------------- what the sweep is given

def _option(args: Sequence[str], name: str) -> Optional[str]:
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def node_local_warnings(sweep_args: Sequence[str], env: Mapping[str, str], cwd: Optional[str] = None) -> List[str]:
    """One line per store or storage path that looks node-local: other nodes' trials and a requeued job (maybe on
    other nodes) would not see it."""
    from orchestrator.sweep import DEFAULT_STORAGE, DEFAULT_STORE

    local = list(NODE_LOCAL) + [env[k] for k in ("TMPDIR", "SLURM_TMPDIR") if env.get(k)]
    lines = []
    for flag, default in (("--store", DEFAULT_STORE), ("--storage-path", DEFAULT_STORAGE)):
        value = _option(sweep_args, flag) or default
        if "://" in value:
            continue
        path = os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(value)))
        hit = next((p for p in local if path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/")), None)
        if hit:
            lines.append(f"warning: {flag} {path} looks node-local (under {hit}): the other nodes and a requeued "
                         f"job cannot see it; give a path on shared storage (or s3://)")
    return lines


def auth_env(env: Mapping[str, str]) -> Dict[str, str]:
    """Ray 2.60's token authentication, the same for every process of the allocation.

    `ray start --head` turns token auth on by itself whenever a token exists (~/.ray/auth_token, $RAY_AUTH_TOKEN,
    $RAY_AUTH_TOKEN_PATH), but `ray start --address` and `ray.init(address=...)` turn it on only when
    $RAY_AUTH_MODE=token: a driver or worker without it fails with InvalidAuthToken. So the mode is set
    explicitly for all of them, and the token travels in the environment srun passes to every node (a token file
    under a home that is not shared would exist on the first node only). An existing token is reused, so
    `ray status` with the usual token still works; else the job makes its own. Compute nodes are shared with other
    users of the cluster, who could otherwise run code on this cluster as you: auth stays on unless
    $RAY_AUTH_MODE=disabled is set explicitly.
    """
    if env.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {"RAY_AUTH_MODE": "disabled"}
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    for path in (env.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if token:
            break
        try:
            token = Path(path).read_text().strip() if path else ""
        except OSError:
            token = ""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or secrets.token_hex(32)}


# ----------------------------------------------------------------- the Ray cluster
