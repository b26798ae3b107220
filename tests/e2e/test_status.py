"""`svcctl status` on the lab: real clients held open are counted, sizes are the server's, a stopped instance
makes the environment degraded (exit 3) and is named.

The environment is this test's own (a per-run token in every name), on lab-1 with the lab bridge as a client
network, as the lab example declares it (other environments claim that network there too, so declaring it
restarts nothing). Only its own Redis instance's unit is stopped, and started again whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, credentials, destroy_all
from tests.e2e.envs import NODES, Env, make_env

DEGRADED = 3
CLIENTS = 3  # psql sessions held open as the bound user


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """This test's environment; whatever it made is destroyed afterwards."""
    made = make_env(tmp_path, unique)
    yield made
    destroy_all(made)


def write(env: Env) -> None:
    nodes = NODES.format(lab2_extra="").replace(
        "    labels: {zone: a}\n", '    labels: {zone: a}\n    client_networks: ["10.211.37.0/24"]\n', 1
    )
    env.write_raw(
        nodes
        + f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n  {env.rd()}: {{plan: cache-16, node: lab-1}}\n"
        + f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        + f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )


def status(env: Env) -> tuple[int, dict[str, Any]]:
    res = env.run("status", ".", "-o", "json")
    assert res.returncode in (0, DEGRADED), res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, doc


def held_psql(pg: dict[str, Any]) -> subprocess.Popen[str]:
    """A psql session as the binding, over the network, kept open on its stdin; returns once it answered."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    pg_env = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGDATABASE": pg["name"],
              "PGUSER": pg["username"], "PGPASSWORD": pg["password"], "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
    proc = subprocess.Popen(
        ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"],
        env={**clean, **pg_env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("select 'connected as ' || session_user;\n")
    proc.stdin.flush()
    line = proc.stdout.readline().strip()
    assert line == f"connected as {pg['username']}", line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc


def test_status_counts_held_clients_reports_sizes_and_names_a_stopped_instance(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    write(env)
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    pg_name, rd_name = env.pg(), env.rd()
    pg = credentials(env.path / "apps" / "manifest.yml", "postgresql", pg_name)

    code, doc = status(env)
    assert code == 0, doc["problems"]
    assert (doc["health"], doc["exit_code"], doc["problems"]) == ("healthy", 0, [])
    assert {n["name"]: n["reachable"] for n in doc["nodes"]} == {"lab-1": True, "lab-2": True}
    lab1 = next(n for n in doc["nodes"] if n["name"] == "lab-1")
    assert lab1["release"]["id"] == "debian" and lab1["release"]["codename"] == "bookworm"
    assert {"engine": "postgres", "installed": True, "version": "15", "running": True} in lab1["engines"]
    by_name = {i["name"]: i for i in doc["instances"]}
    assert by_name[pg_name]["connections_in_use"] == 0
    assert by_name[rd_name]["connections_in_use"] == 0

    clients: list[subprocess.Popen[str]] = []
    stopped = False
    try:
        clients = [held_psql(pg) for _ in range(CLIENTS)]
        code, doc = status(env)
        assert code == 0, doc["problems"]
        by_name = {i["name"]: i for i in doc["instances"]}
        inst = by_name[pg_name]
        # Exactly the clients held open: observe's own psql connects to the `postgres` database, never to
        # an instance's, and only client backends are counted.
        assert (inst["connections_in_use"], inst["connections"]) == (CLIENTS, 20)
        assert (inst["state"], inst["running"], inst["answering"], inst["node"]) == ("up", True, True, "lab-1")
        assert (inst["engine"], inst["version"], inst["storage_mb"]) == ("postgres", "15", 512)
        size = lab.ssh(
            "lab-1", f"sudo -n runuser -u postgres -- psql -XAtc \"select pg_database_size('{pg['name']}')\""
        ).stdout.strip()
        assert inst["size_mb"] == math.ceil(int(size) / 1048576)
        assert inst["bindings"] == [
            {"app": env.app(), "role": "readwrite", "user": pg["username"], "credentials": "current"}
        ]
        assert inst["backup"] is None
        rd = by_name[rd_name]
        assert (rd["state"], rd["running"], rd["connections_in_use"], rd["memory_mb"]) == ("up", True, 0, 16)
        assert rd["bindings"][0]["credentials"] == "current"
        # A live count is never drift: the plan stays empty with the clients connected.
        assert_converged(env)

        lab.ssh("lab-1", f"sudo -n systemctl stop redis-server@{rd_name}.service")
        stopped = True
        code, doc = status(env)
        assert code == DEGRADED
        assert doc["health"] == "degraded" and doc["exit_code"] == DEGRADED
        rd = {i["name"]: i for i in doc["instances"]}[rd_name]
        assert (rd["state"], rd["running"]) == ("down", False)
        assert doc["problems"] == [f"instance.{rd_name}: redis-server@{rd_name} is not running on lab-1"]
        text = env.run("status", ".")
        assert text.returncode == DEGRADED
        assert f"instance.{rd_name}: redis-server@{rd_name} is not running on lab-1" in text.stdout
    finally:
        for proc in clients:
            proc.kill()
            proc.wait()
        if stopped:
            lab.ssh("lab-1", f"sudo -n systemctl start redis-server@{rd_name}.service")
    code, doc = status(env)
    assert code == 0, doc["problems"]
