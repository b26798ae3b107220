"""examples/fleet on three Debian releases: each version lands where it is offered, converges, and serves.

lab-bullseye (PostgreSQL 13, MariaDB 10.5, Redis 6), lab-1 (15, 10.11, 7) and lab-trixie (17, 11.8, 8): a
copy of the example, its instances renamed with a per-run token, is applied from empty; the next plan is
empty; every bound user connects over the network with the real clients and the server reports the version
the YAML asked for; `svcctl tunnel` reaches the PostgreSQL instance on each release with a temporary user.
The finalizer destroys what the test made, through svcctl.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Lab
from tests.e2e.applying import apply, assert_converged, credentials, destroy_all, plan_json
from tests.e2e.envs import Env
from tests.e2e.test_lab_example import client

EXAMPLE = REPO / "examples" / "fleet"
NODES = {"13": "lab-bullseye", "15": "lab-1", "17": "lab-trixie"}
INSTANCES = {  # example name -> (manifest label, node, version)
    "ledger-13": ("postgresql", "lab-bullseye", "13"),
    "ledger-15": ("postgresql", "lab-1", "15"),
    "ledger-17": ("postgresql", "lab-trixie", "17"),
    "stock-105": ("mysql", "lab-bullseye", "10.5"),
    "stock-1011": ("mysql", "lab-1", "10.11"),
    "stock-118": ("mysql", "lab-trixie", "11.8"),
    "cache-6": ("redis", "lab-bullseye", "6"),
    "cache-7": ("redis", "lab-1", "7"),
    "cache-8": ("redis", "lab-trixie", "8"),
}


@pytest.fixture
def fleet(lab: Lab, tmp_path: Path, unique: str) -> Iterator[tuple[Env, dict[str, str]]]:
    """The example copied to `fleet<token>/` with its instances renamed; destroyed afterwards."""
    missing = {"lab-bullseye", "lab-trixie"} - set(lab.release_hosts.values())
    assert not missing, f"the lab has no {sorted(missing)}: LAB_RELEASES must name bullseye and trixie"
    path = tmp_path / f"fleet{unique}"
    shutil.copytree(EXAMPLE, path)
    names = {old: f"{old}-{unique}" for old in INSTANCES}
    yaml = path / "svcctl.yaml"
    text = yaml.read_text()
    for old, new in names.items():
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
    text, declared = re.subn(r"(?m)^environment: fleet$", f"environment: {path.name}", text)
    assert declared == 1
    yaml.write_text(text)
    env = Env(path=path, token=unique)
    try:
        yield env, names
    finally:
        destroy_all(env)


def server_version(label: str, creds: dict[str, object]) -> str:
    """Ask the server its version as the bound user, over the network, with the engine's own client."""
    host, port, user, secret = str(creds["host"]), str(creds["port"]), str(creds["username"]), str(creds["password"])
    if label == "postgresql":
        env = {"PGHOST": host, "PGPORT": port, "PGUSER": user, "PGPASSWORD": secret,
               "PGDATABASE": str(creds["name"]), "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
        res = client(["psql", "-XAtq", "-c", "show server_version"], env)
    elif label == "mysql":
        args = ["mariadb", "-h", host, "-P", port, "-u", user, "-N", "-B", str(creds["name"]), "-e", "select version()"]
        res = client(args, {"MYSQL_PWD": secret})
    else:
        # HELLO 2 (category @connection; Redis 6.0 needs the protocol version): INFO is @dangerous, which
        # svcctl's bindings do not get.
        args = ["redis-cli", "-h", host, "-p", port, "--no-auth-warning", "--user", user, "hello", "2"]
        res = client(args, {"REDISCLI_AUTH": secret})
    assert res.returncode == 0, res.stderr
    if label == "redis":
        words = res.stdout.split()
        assert "version" in words, res.stdout
        return words[words.index("version") + 1]
    return res.stdout.strip()


def test_the_fleet_example_places_by_version_converges_and_serves_each_release(
    lab: Lab, fleet: tuple[Env, dict[str, str]]
) -> None:
    env, names = fleet
    code, doc = plan_json(env)
    assert code == 2 and doc["errors"] == []
    placed = {c["address"]: c["node"] for c in doc["changes"] if c["address"].startswith("instance.")}
    assert placed == {f"instance.{names[old]}": node for old, (_, node, _) in INSTANCES.items()}

    res = apply(env, timeout=1500)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_converged(env)

    manifest = env.path / "apps" / "shop" / "manifest.yml"
    for old, (label, node, version) in INSTANCES.items():
        creds = credentials(manifest, label, names[old])
        assert creds["host"] == lab.address_of(node)
        got = server_version(label, creds)
        assert got == version or got.startswith(version + "."), (old, got)

    for version, node in NODES.items():
        res = env.run("tunnel", names[f"ledger-{version}"], "--", "psql", "-XAtc", "show server_version", timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.strip().startswith(version + "."), (node, res.stdout)
