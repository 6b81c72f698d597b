"""Which Ray cluster a sweep runs on, and whether its trials' resource asks can ever be met there.

A sweep joins only a real, long-lived cluster: the one `--address` names, the
one `$RAY_ADDRESS` names, or the one `ray start`/`ray up` recorded on this
machine. Otherwise it starts a local Ray of its own, which lives and dies with
this driver; another sweep never joins it (Ray's `address="auto"` would join
any Ray process it can find, and die with it).
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Dict, List, Optional, Sequence

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # what `ray up` leaves on the head node: the autoscaler's node types


class ClusterError(ValueError):
    """A cluster that cannot run this sweep as asked: one line, exit code 2."""


def check_reachable(address: str, what: str, timeout: float = 5.0) -> None:
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad {what} {address!r}; give host:port of the Ray head, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"cannot reach a Ray cluster at {what} {address}: {exc.strerror or exc}") from None


def long_lived_address() -> Optional[str]:
    """The address `ray start --head` recorded on this machine, if that cluster still answers."""
    from ray._private.utils import read_ray_address

    try:
        address = read_ray_address()
    except OSError:
        return None
    if not address:
        return None
    try:
        check_reachable(address, "recorded address")
    except ClusterError:
        return None
    return address


def connect(address: Optional[str], num_cpus: Optional[int], runtime_env: Optional[Dict] = None) -> str:
    """ray.init on the cluster this sweep should use; a description of it for the plan.

    `runtime_env` (the plugins' `py_modules`) applies to every worker of this sweep's job.
    """
    import ray

    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    if runtime_env:
        quiet["runtime_env"] = runtime_env
    if address:
        check_reachable(address, "--address")
        ray.init(address=address, **quiet)
        return f"cluster at {address}"
    from_env = os.environ.get("RAY_ADDRESS", "")
    if from_env and from_env != "auto":
        check_reachable(from_env, "$RAY_ADDRESS")
        ray.init(address=from_env, **quiet)
        return f"cluster at $RAY_ADDRESS {from_env}"
    recorded = long_lived_address()
    if recorded:
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address=recorded, **quiet)
        return f"running cluster at {recorded} (started with ray start)"
    os.environ.pop("RAY_ADDRESS", None)  # "auto" would join another sweep's private Ray
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
    return f"local Ray of this sweep ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


def autoscaler_node_types(path: str = BOOTSTRAP_CONFIG) -> List[Dict[str, float]]:
    """Resources of the node types the autoscaler may still launch (on a `ray up` head node); [] elsewhere."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        return []
    import yaml

    with open(path) as f:
        config = yaml.safe_load(f) or {}
    return [{k: float(v) for k, v in (t.get("resources") or {}).items()}
            for t in (config.get("available_node_types") or {}).values() if (t.get("max_workers") or 0) > 0]


def node_capacities() -> List[Dict[str, float]]:
    """What each alive node, or each node type the autoscaler can add, offers in total."""
    import ray

    alive = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    return alive + autoscaler_node_types()


def _fits(ask: Dict[str, float], capacity: Dict[str, float]) -> bool:
    return all(capacity.get(k, 0.0) >= v for k, v in ask.items() if v > 0)


def _format(resources: Dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in ("CPU", "GPU"))


def check_feasible(asks: Sequence[Dict[str, float]], capacities: Sequence[Dict[str, float]]) -> None:
    """Stop at once if some trial's ask fits no node the cluster has or can add (Tune would wait forever)."""
    for ask in asks:
        if any(_fits(ask, c) for c in capacities):
            continue
        largest = max(capacities, key=lambda c: (c.get("GPU", 0.0), c.get("CPU", 0.0)), default={})
        raise ClusterError(
            f"each trial asks for {_format(ask)}, but no node of this cluster can ever offer that (largest node: "
            f"{_format(largest)}); lower --gpus-per-trial / --cpus-per-trial, or run on a cluster with such nodes"
        )

