"""Versions on the lab's three Debian releases: `svcctl plan` places each instance on a node whose package
sources offer its version, and a pinned node that does not is a plan error saying what it offers and which
node does. Plans only: nothing is applied, so the shared hosts are left as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.envs import make_env

RELEASES = {"bullseye": "lab-bullseye", "bookworm": "lab-1", "trixie": "lab-trixie"}


def nodes(lab: Lab) -> str:
    out = "nodes:\n"
    for name in RELEASES.values():
        out += (
            f"  {name}:\n    host: {name}\n    ssh_config: {lab.ssh_config}\n"
            "    engines: [postgres, mysql, redis]\n    capacity: {memory_mb: 4096, storage_mb: 40960}\n"
        )
    return out + (
        "services:\n"
        '  pg: {engine: postgres, versions: ["13", "15", "17"]}\n'
        '  my: {engine: mysql, versions: ["10.5", "10.11", "11.8"]}\n'
        '  rd: {engine: redis, versions: ["6", "7", "8"]}\n'
        "plans:\n"
        "  pg-small: {service: pg, storage_mb: 64}\n"
        "  my-small: {service: my, storage_mb: 64}\n"
        "  cache-16: {service: rd, memory_mb: 16}\n"
    )


@pytest.fixture
def releases(lab: Lab) -> Lab:
    missing = [name for name in RELEASES.values() if name not in lab.hosts and name not in lab.release_hosts.values()]
    assert not missing, f"the lab has no {', '.join(missing)} (LAB_RELEASES must include bullseye and trixie)"
    return lab


def test_each_instance_goes_to_a_node_that_offers_its_version(releases: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    wanted = {
        f"pa{unique}": ("pg-small", "13", "lab-bullseye"),
        f"pb{unique}": ("pg-small", "15", "lab-1"),
        f"pc{unique}": ("pg-small", None, "lab-trixie"),  # no version: the service's highest, 17
        f"ma{unique}": ("my-small", "10.5", "lab-bullseye"),
        f"mb{unique}": ("my-small", "11.8", "lab-trixie"),
        f"ra{unique}": ("cache-16", "7", "lab-1"),
        f"rb{unique}": ("cache-16", "8", "lab-trixie"),
    }
    body = "instances:\n"
    for name, (plan, version, _node) in wanted.items():
        body += f"  {name}: {{plan: {plan}" + (f', version: "{version}"' if version else "") + "}\n"
    env.write_raw(nodes(releases) + body)
    res = env.run("plan", ".", "-o", "json")
    assert res.returncode == 0, res.stderr
    placed = {
        c["address"].split(".", 1)[1]: c["node"]
        for c in json.loads(res.stdout)["changes"]
        if c["action"] == "create" and c["address"].startswith("instance.")
    }
    assert placed == {name: node for name, (_p, _v, node) in wanted.items()}


def test_a_pinned_node_that_does_not_offer_the_version_is_a_plan_error(
    releases: Lab, tmp_path: Path, unique: str
) -> None:
    env = make_env(tmp_path, unique)
    name = f"pg{unique}"
    env.write_raw(nodes(releases) + f'instances:\n  {name}: {{plan: pg-small, version: "15", node: lab-trixie}}\n')
    assert env.run("validate", ".").returncode == 0  # SSH-free: validate knows nothing of what nodes offer
    res = env.run("plan", ".")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"lab-trixie (Debian 13 trixie) offers PostgreSQL 17; {name} wants 15" in res.stderr
    assert "Nodes that offer PostgreSQL 15: lab-1." in res.stderr
    assert "svcctl.yaml:" in res.stderr  # where the pin was declared
    assert "Traceback" not in res.stderr
