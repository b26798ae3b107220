"""A server svcctl did not set up, as a real one is: svcctl adds its own, adopts a database, and disturbs nothing.

lab-5 is prepared by hand the way an administrator sets up PostgreSQL: its own cluster, listen_addresses in
postgresql.conf, a pg_hba.conf rule for an existing app user from the lab's network, that user's database
with data. A client loop connects as that user during the whole test, with a new connection every few
tenths of a second and one session held open throughout. Then an environment that adds an instance of its
own and adopts the existing database is applied, planned again, and destroyed.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from svcctl.hostlib.marked import BEGIN, END
from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, credentials, destroy_all, plan_json
from tests.e2e.envs import Env, make_env

HOST = "lab-5"  # a host of its own, set up by hand; the shared lab-1 and lab-2 have svcctl's engines
CONF = "/etc/postgresql/15/main"
LEGACY_PASSWORD = "hand-made-password-of-legacy-app"
ROWS = 1000
HAND_RULE = "host    legacy_orders   legacy_app      10.211.37.0/24          scram-sha-256"


@pytest.fixture
def own_host(lab: Lab) -> Iterator[str]:
    """lab-5, running for this test, then put back as found: stopped again unless it was running before.

    The default lab has two hosts, so lab-5 may not exist yet: `up --hosts 5` makes it (and lab-3 and lab-4,
    which are stopped again if they did not run); labctl cannot remove a single host.
    """
    names = ("lab-3", "lab-4", HOST)
    before = {name: lab.host_state(name) for name in names}
    if before[HOST] is None:
        lab.labctl("up", "--hosts", "5")
    lab.labctl("start", HOST)
    yield HOST
    for name, state in before.items():
        if state != "running" and lab.host_state(name) == "running":
            lab.labctl("stop", name)


def psql_as_root(lab: Lab, sql: str, database: str = "postgres") -> str:
    """SQL as the postgres superuser on lab-5, from stdin (never on a command line)."""
    res = lab.ssh(HOST, f"sudo -n runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database}", stdin=sql)
    return res.stdout


def set_up_by_hand(lab: Lab) -> None:
    """A PostgreSQL server as an administrator sets it up, with nothing of svcctl's on the host."""
    lab.ssh(HOST, "sudo -n rm -rf /var/lib/svcctl /var/backups/svcctl; "
                  "sudo -n pg_dropcluster --stop 15 main 2>/dev/null; "
                  "sudo -n pg_createcluster 15 main >/dev/null", timeout=300)  # fmt: skip
    edit = (
        f"sudo -n sed -i \"s/^#listen_addresses = 'localhost'/listen_addresses = '*'/\" {CONF}/postgresql.conf; "
        f"printf '%s\\n' '# the legacy app, from the office network' '{HAND_RULE}' | sudo -n tee -a {CONF}/pg_hba.conf"
        " >/dev/null; sudo -n systemctl enable --now postgresql@15-main; sudo -n systemctl restart postgresql@15-main"
    )
    lab.ssh(HOST, edit, timeout=120)
    psql_as_root(lab, f"CREATE ROLE legacy_app LOGIN PASSWORD '{LEGACY_PASSWORD}';\n"
                      "CREATE DATABASE legacy_orders OWNER legacy_app;\n")  # fmt: skip
    psql_as_root(lab, "SET ROLE legacy_app;\n"
                      "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL);\n"
                      f"INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, {ROWS}) g;\n",
                 "legacy_orders")  # fmt: skip


def data_digest(lab: Lab) -> str:
    rows = psql_as_root(lab, "SELECT id, item FROM orders ORDER BY id;", "legacy_orders")
    return hashlib.sha256(rows.encode()).hexdigest()


def hand_made_files(lab: Lab) -> dict[str, list[str]]:
    """The lines of the hand-made configuration that are the user's: all of postgresql.conf, and pg_hba.conf
    without svcctl's block."""
    out = {}
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        lines = lab.ssh(HOST, f"sudo -n cat {CONF}/{name}").stdout.splitlines()
        if BEGIN in lines:
            begin, end = lines.index(BEGIN), lines.index(END)
            lines = lines[:begin] + lines[end + 1 :]
        out[name] = lines
    return out


@dataclass
class ClientLoop:
    """The existing app: a new connection as legacy_app every 0.2 s, and one session held open throughout."""

    address: str
    failures: list[str] = field(default_factory=list)
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def env(self) -> dict[str, str]:
        return {"PGHOST": self.address, "PGUSER": "legacy_app", "PGPASSWORD": LEGACY_PASSWORD,
                "PGDATABASE": "legacy_orders", "PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"}  # fmt: skip

    def run(self) -> None:
        while not self.stop.is_set():
            res = subprocess.run(["psql", "-XAtq", "-c", "SELECT count(*) FROM orders"], env=self.env(),
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
            self.connections += 1
            if res.returncode != 0 or res.stdout.strip() != str(ROWS):
                self.failures.append(f"{time.strftime('%H:%M:%S')}: rc {res.returncode}: {res.stderr.strip()}")
            self.stop.wait(0.2)


class HeldSession:
    """One psql session kept open: it answers `SELECT pg_backend_pid()` with the same pid as long as it lives."""

    def __init__(self, loop: ClientLoop) -> None:
        self.proc = subprocess.Popen(["psql", "-XAtq"], env=loop.env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def pid(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("SELECT pg_backend_pid();\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> str:
        _, err = self.proc.communicate("\\q\n", timeout=30)
        return err


def environment(env: Env, *, protect: bool = True) -> str:
    return f"""\
nodes:
  {HOST}:
    host: {HOST}
    ssh_config: /var/lib/svcctl-lab/ssh_config
    client_networks: ["10.211.37.0/24"]
    engines: [postgres]
    capacity: {{memory_mb: 1024, storage_mb: 4096}}
services:
  postgres: {{engine: postgres, versions: ["15"]}}
plans:
  pg-small: {{service: postgres, storage_mb: 512, connections: 20}}
instances:
  {env.pg()}: {{plan: pg-small, protect: {str(protect).lower()}}}
  legacy-orders:
    plan: pg-small
    node: {HOST}
    protect: {str(protect).lower()}
    adopt: {{database: legacy_orders}}
apps:
  {env.app()}: {{manifest: apps/web/manifest.yml, format: cf}}
bindings:
  - {{app: {env.app()}, instance: {env.pg()}}}
  - {{app: {env.app()}, instance: legacy-orders}}
"""


def query_as(creds: dict[str, object], sql: str) -> subprocess.CompletedProcess[str]:
    env = {"PGHOST": str(creds["host"]), "PGPORT": str(creds["port"]), "PGUSER": str(creds["username"]),
           "PGPASSWORD": str(creds["password"]), "PGDATABASE": str(creds["name"]), "PGCONNECT_TIMEOUT": "10",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_an_existing_server_keeps_its_config_clients_and_data_while_svcctl_adds_and_adopts(
    own_host: str, lab: Lab, tmp_path: Path, unique: str
) -> None:
    set_up_by_hand(lab)
    before = hand_made_files(lab)
    digest = data_digest(lab)
    loop = ClientLoop(address=lab.address_of(HOST))
    worker = threading.Thread(target=loop.run, daemon=True)
    worker.start()
    held = HeldSession(loop)
    held_pid = held.pid()
    assert held_pid.isdigit(), held.close()
    env = make_env(tmp_path, unique)
    (env.path / "apps" / "web").mkdir(parents=True)
    try:
        env.write_raw(environment(env))
        code, doc = plan_json(env)
        assert code == 2, doc
        actions = {c["address"]: c["action"] for c in doc["changes"]}
        assert actions["instance.legacy-orders"] == "adopt"
        assert actions[f"instance.{env.pg()}"] == "create"
        assert doc["summary"]["adopt"] == 1 and doc["summary"]["destroy"] == 0
        engine = next(c for c in doc["changes"] if c["address"] == f"engine.{HOST}.postgres")
        fields = {a["name"]: a for a in engine["attributes"]}
        assert "listen_addresses" not in fields  # it already listens on '*': nothing to widen, no restart
        assert (
            fields["pg_hba"]["old"] == []
            and "host all +svcctl_clients 10.211.37.0/24 scram-sha-256" in fields["pg_hba"]["new"]
        )
        assert not engine["restarts_service"]

        res = apply(env, timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        assert_converged(env)

        # Everything of the user's is as it was: the files outside svcctl's block, the rule, the settings.
        after = hand_made_files(lab)
        assert after == before
        hba = lab.ssh(HOST, f"sudo -n cat {CONF}/pg_hba.conf").stdout.splitlines()
        block = hba[hba.index(BEGIN) + 1 : hba.index(END)]
        assert block == [
            "local all postgres peer map=svcctl",
            "host all +svcctl_clients 127.0.0.1/32 scram-sha-256",
            "host all +svcctl_clients ::1/128 scram-sha-256",
            "host all +svcctl_clients 10.211.37.0/24 scram-sha-256",
        ]
        assert hba.index(BEGIN) < hba.index(HAND_RULE)  # before the first rule: svcctl's users match it first
        assert HAND_RULE in after["pg_hba.conf"]
        assert psql_as_root(lab, "SHOW listen_addresses;").strip() == "*"
        # The data is intact, and the held session is the same backend: the server never restarted.
        assert data_digest(lab) == digest
        assert held.pid() == held_pid
        # The bindings are svcctl's own users beside legacy_app: one on the new instance, one acting as the
        # adopted database's owner, so it reads and writes legacy_app's table over the network.
        manifest = env.path / "apps" / "web" / "manifest.yml"
        adopted = credentials(manifest, "postgresql", "legacy-orders")
        assert str(adopted["username"]).startswith("sv_")
        res = query_as(adopted, "INSERT INTO orders VALUES (1001, 'svcctl'); SELECT count(*) FROM orders;")
        assert res.returncode == 0 and res.stdout.strip() == str(ROWS + 1), res.stderr
        res = query_as(adopted, "DELETE FROM orders WHERE id = 1001;")
        assert res.returncode == 0, res.stderr
        own = credentials(manifest, "postgresql", env.pg())
        assert query_as(own, "SELECT 1").stdout.strip() == "1"

        # Destroying the environment's instances: its own database goes, the adopted one is released.
        env.write_raw(environment(env, protect=False))
        assert apply(env).returncode == 0
        env.write_raw(environment(env, protect=False).split("instances:")[0] + "instances: {}\n")
        code, doc = plan_json(env)
        releases = [c for c in doc["changes"] if c["address"] == "instance.legacy-orders"]
        assert [c["destroys_data"] for c in releases] == [False]
        res = apply(env, "--allow-destroy")
        assert res.returncode == 0, res.stdout + res.stderr
        names = psql_as_root(lab, "SELECT datname FROM pg_database ORDER BY 1;").split()
        assert "legacy_orders" in names and env.pg().replace("-", "_") not in names
        assert data_digest(lab) == digest
        assert hand_made_files(lab) == before
        assert held.pid() == held_pid
    finally:
        loop.stop.set()
        worker.join(timeout=60)
        err = held.close()
        destroy_all(env)
        lab.ssh(HOST, "sudo -n pg_dropcluster --stop 15 main 2>/dev/null; sudo -n rm -rf /var/lib/svcctl", check=False)
    assert loop.connections > 20, loop.connections  # the loop ran throughout
    assert loop.failures == [], loop.failures
    assert "terminat" not in err and "closed" not in err, err
