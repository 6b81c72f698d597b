"""cluster.yaml: valid for Ray's own cluster launcher, and safe to bring up.

Validation runs what `ray up` runs before it talks to the cloud
(`prepare_config`, then `validate_config` against Ray's JSON schema
`ray-schema.json` plus its cross-field checks), so no network or credentials
are needed.
"""
from __future__ import annotations

import copy
import ipaddress
import pathlib
import re

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"

RAY_UNAUTHENTICATED_PORTS = {6379: "GCS", 8265: "dashboard", 10001: "client server"}


def load_cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to a config before contacting the provider."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def onprem_example() -> dict:
    """The commented-out on-prem config between its BEGIN/END markers, uncommented."""
    text = CLUSTER_YAML.read_text()
    block = re.search(r"^# BEGIN on-prem example\n(.*?)^# END on-prem example", text, re.S | re.M)
    assert block, "the on-prem example markers are missing"
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in block.group(1).splitlines()]
    return yaml.safe_load("\n".join(lines))


def opens_to_internet(rule: dict) -> bool:
    ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
    ranges += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
    return any(ipaddress.ip_network(cidr).prefixlen == 0 for cidr in ranges if cidr)


def covered_ports(rule: dict) -> set:
    if str(rule.get("IpProtocol")) == "-1":  # all protocols, all ports
        return set(RAY_UNAUTHENTICATED_PORTS)
    low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
    return {port for port in RAY_UNAUTHENTICATED_PORTS if low <= port <= high}


def test_cluster_yaml_passes_rays_own_validation():
    prepared = ray_validate(load_cluster_config())
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize(
    "break_config, error",
    [
        (lambda c: c["available_node_types"]["worker.gpu"].update(min_worker=1), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["worker.gpu"]["resources"].update(GPU=0.5),
         jsonschema.ValidationError),
        (lambda c: c.update(max_worker=8), jsonschema.ValidationError),
        (lambda c: c["provider"]["security_group"].update(Ingress=[]), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="head.gpu"), ValueError),
        (lambda c: c["available_node_types"]["worker.gpu"].update(min_workers=99), ValueError),
    ],
)
def test_the_validator_rejects_a_broken_copy(break_config, error):
    config = load_cluster_config()
    break_config(config)
    with pytest.raises(error):
        ray_validate(config)


def test_no_ingress_rule_exposes_ray_ports_to_the_internet():
    provider = load_cluster_config()["provider"]
    rules = provider["security_group"]["IpPermissions"]
    exposed = [
        (RAY_UNAUTHENTICATED_PORTS[port], rule)
        for rule in rules
        if opens_to_internet(rule)
        for port in covered_ports(rule)
    ]
    assert exposed == []


def test_the_rule_checker_would_catch_an_exposed_port():
    dashboard_to_world = {"FromPort": 8000, "ToPort": 9000, "IpProtocol": "tcp",
                          "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    everything_v6 = {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    ssh_from_office = {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp",
                       "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}
    assert opens_to_internet(dashboard_to_world) and covered_ports(dashboard_to_world) == {8265}
    assert opens_to_internet(everything_v6) and covered_ports(everything_v6) == {6379, 8265, 10001}
    assert not opens_to_internet(ssh_from_office) and covered_ports(ssh_from_office) == set()


def test_both_node_types_use_the_ray_managed_security_group():
    """No node_config brings its own group, so the checked rules are the ones applied."""
    config = load_cluster_config()
    assert config["provider"]["security_group"]["GroupName"]
    for node_type in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"]


@pytest.mark.parametrize("config", [load_cluster_config(), onprem_example()], ids=["aws", "onprem"])
def test_dashboard_is_bound_to_loopback_on_the_head(config):
    starts = [cmd for cmd in config["head_start_ray_commands"] if "ray start" in cmd]
    assert len(starts) == 1
    assert "--dashboard-host=127.0.0.1" in starts[0]
    assert "0.0.0.0" not in " ".join(config["head_start_ray_commands"])


def test_gpu_worker_type_autoscales_with_gpus():
    prepared = ray_validate(load_cluster_config())
    head_type = prepared["head_node_type"]
    workers = {name: t for name, t in prepared["available_node_types"].items() if name != head_type}
    gpu_workers = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_workers, "no worker node type with GPUs"
    for node_type in gpu_workers.values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"]
        assert node_type["max_workers"] >= 1
        assert node_type["resources"]["CPU"] >= node_type["resources"]["GPU"]
    assert prepared["available_node_types"][head_type]["resources"].get("GPU", 0) == 0
    assert prepared["max_workers"] >= max(t["max_workers"] for t in gpu_workers.values())


@pytest.mark.parametrize("config", [load_cluster_config(), onprem_example()], ids=["aws", "onprem"])
def test_setup_installs_this_checkout(config):
    (remote, local), = config["file_mounts"].items()
    # `ray up` runs from the repository root, so "." is this project.
    assert (REPO_ROOT / local).resolve() == REPO_ROOT
    assert 'name = "prune-sweep"' in (REPO_ROOT / local / "pyproject.toml").read_text()
    installs = [cmd for cmd in config["setup_commands"] if "pip install" in cmd]
    assert any(re.search(rf"pip install .*-e {re.escape(remote)}\s*$", cmd) for cmd in installs)
    assert any('"ray[default' in cmd for cmd in installs)


def test_onprem_example_passes_rays_own_validation():
    prepared = ray_validate(onprem_example())
    assert prepared["provider"]["type"] == "local"
    # The local provider turns worker_ips into its single node type, of that size.
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(prepared["provider"]["worker_ips"]) == 2
