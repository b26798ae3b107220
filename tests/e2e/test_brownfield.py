"""A server svcctl did not set up, as a real one is: svcctl adds its own, adopts databases, and disturbs nothing.

lab-5 is prepared by hand the way an administrator sets up PostgreSQL and MariaDB: PostgreSQL's own cluster,
listen_addresses in postgresql.conf, a pg_hba.conf rule for an existing app user from the lab's network, that
user's database with data; MariaDB bound to every address in its own 50-server.cnf, an app user from
anywhere, its database with data. Client loops connect as those users during the whole test, each with a new
connection every few tenths of a second and one session held open throughout. `svcctl import` offers both
databases; then an environment that adds an instance of its own per engine and adopts the existing
databases is applied, planned again, and destroyed.
"""

from __future__ import annotations

import hashlib
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from svcctl.hostlib.marked import BEGIN, END
from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, credentials, destroy_all, plan_json
from tests.e2e.envs import Env, make_env

HOST = "lab-5"  # a host of its own, set up by hand; the shared lab-1 and lab-2 have svcctl's engines
CONF = "/etc/postgresql/15/main"
LEGACY_PASSWORD = "hand-made-password-of-legacy-app"
ROWS = 1000
HAND_RULE = "host    legacy_orders   legacy_app      10.211.37.0/24          scram-sha-256"
MY_CONF = "/etc/mysql/mariadb.conf.d"


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


def mariadb_as_root(lab: Lab, sql: str) -> str:
    return lab.ssh(HOST, "sudo -n mariadb --batch --skip-column-names", stdin=sql).stdout


def set_up_mariadb_by_hand(lab: Lab) -> None:
    """MariaDB as an administrator opens it: bound to every address in Debian's own 50-server.cnf."""
    lab.ssh(HOST, f"sudo -n rm -f {MY_CONF}/60-svcctl.cnf; "
                  "sudo -n sed -i 's/^bind-address *= *127.0.0.1/bind-address            = 0.0.0.0/' "
                  f"{MY_CONF}/50-server.cnf; "
                  "sudo -n systemctl enable --now mariadb; sudo -n systemctl restart mariadb", timeout=120)  # fmt: skip
    mariadb_as_root(lab, "DROP DATABASE IF EXISTS legacy_shop; DROP USER IF EXISTS 'legacy_shop'@'%';\n"
                         "CREATE DATABASE legacy_shop;\n"
                         f"CREATE USER 'legacy_shop'@'%' IDENTIFIED BY '{LEGACY_PASSWORD}';\n"
                         "GRANT ALL ON legacy_shop.* TO 'legacy_shop'@'%';\n"
                         "CREATE TABLE legacy_shop.items (id int PRIMARY KEY, name text NOT NULL);\n"
                         "USE legacy_shop;\n"
                         "INSERT INTO legacy_shop.items SELECT seq, CONCAT('item ', seq) "
                         f"FROM seq_1_to_{ROWS};\n")  # fmt: skip


def data_digest(lab: Lab) -> str:
    rows = psql_as_root(lab, "SELECT id, item FROM orders ORDER BY id;", "legacy_orders")
    rows += mariadb_as_root(lab, "SELECT id, name FROM legacy_shop.items ORDER BY id;")
    return hashlib.sha256(rows.encode()).hexdigest()


def hand_made_files(lab: Lab) -> dict[str, list[str]]:
    """The lines of the hand-made configuration that are the user's: all of postgresql.conf, and pg_hba.conf
    without svcctl's block."""
    out = {}
    paths = [f"{CONF}/{name}" for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")]
    paths += [f"{MY_CONF}/50-server.cnf", "/etc/mysql/my.cnf"]
    for name in paths:
        lines = lab.ssh(HOST, f"sudo -n cat {name}").stdout.splitlines()
        if BEGIN in lines:
            begin, end = lines.index(BEGIN), lines.index(END)
            lines = lines[:begin] + lines[end + 1 :]
        out[name] = lines
    return out


@dataclass
class ClientLoop:
    """An existing app: a new connection every 0.2 s with the engine's own client, counting the rows."""

    argv: list[str]
    env: dict[str, str]
    failures: list[str] = field(default_factory=list)
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        # ROWS, or ROWS + 1 while the adopted binding's own row (written, counted and deleted below) exists
        expected = {str(ROWS), str(ROWS + 1)}
        while not self.stop.is_set():
            res = subprocess.run(self.argv, env=self.env, capture_output=True, text=True, timeout=30)
            self.connections += 1
            if res.returncode != 0 or res.stdout.strip() not in expected:
                self.failures.append(f"{time.strftime('%H:%M:%S')}: rc {res.returncode}: {res.stderr.strip()}")
            self.stop.wait(0.2)


class HeldSession:
    """One client session kept open: it answers `query` with its server-side id, the same as long as it lives."""

    def __init__(self, argv: list[str], env: dict[str, str], query: str) -> None:
        self.query = query
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip

    def id(self) -> str:
        """Its server-side id now; a session that does not answer in 30 s fails the test (never hangs it)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self.query + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        assert ready, f"the held session did not answer {self.query!r} in 30 s"
        return self.proc.stdout.readline().strip()

    def close(self) -> str:
        _, err = self.proc.communicate("", timeout=30)
        return err


def clients(address: str, tmp_path: Path) -> tuple[list[ClientLoop], list[HeldSession]]:
    """legacy_app on PostgreSQL and legacy_shop on MariaDB, over the network from this machine."""
    pg_env = {"PGHOST": address, "PGUSER": "legacy_app", "PGPASSWORD": LEGACY_PASSWORD,
              "PGDATABASE": "legacy_orders", "PGCONNECT_TIMEOUT": "5", "PATH": "/usr/bin:/bin"}  # fmt: skip
    options = tmp_path / "legacy_shop.cnf"  # the password in a 0600 file, never on a command line
    options.write_text(f"[client]\npassword={LEGACY_PASSWORD}\n")
    options.chmod(0o600)
    my = ["mariadb", f"--defaults-extra-file={options}", "-h", address, "-u", "legacy_shop", "--connect-timeout=5",
          "--batch", "--skip-column-names", "legacy_shop"]  # fmt: skip
    my_env = {"PATH": "/usr/bin:/bin"}
    loops = [ClientLoop(["psql", "-XAtq", "-c", "SELECT count(*) FROM orders"], pg_env),
             ClientLoop([*my, "-e", "SELECT count(*) FROM items"], my_env)]  # fmt: skip
    held = [HeldSession(["psql", "-XAtq"], pg_env, "SELECT pg_backend_pid();"),
            HeldSession([*my, "--unbuffered"], my_env, "SELECT CONNECTION_ID();")]  # fmt: skip
    return loops, held


CATALOG = f"""\
nodes:
  {HOST}:
    host: {HOST}
    ssh_config: /var/lib/svcctl-lab/ssh_config
    client_networks: ["10.211.37.0/24"]
    engines: [postgres, mysql]
    capacity: {{memory_mb: 1024, storage_mb: 4096}}
services:
  postgres: {{engine: postgres, versions: ["15"]}}
  mysql: {{engine: mysql, versions: ["10.11"]}}
plans:
  pg-small: {{service: postgres, storage_mb: 512, connections: 20}}
  my-small: {{service: mysql, storage_mb: 512, connections: 20}}
"""


def environment(env: Env, *, protect: bool = True) -> str:
    flag = str(protect).lower()
    return (
        CATALOG
        + f"""\
instances:
  {env.pg()}: {{plan: pg-small, protect: {flag}}}
  {env.my()}: {{plan: my-small, protect: {flag}}}
  legacy-orders: {{plan: pg-small, node: {HOST}, protect: {flag}, adopt: {{database: legacy_orders}}}}
  legacy-shop: {{plan: my-small, node: {HOST}, protect: {flag}, adopt: {{database: legacy_shop}}}}
apps:
  {env.app()}: {{manifest: apps/web/manifest.yml, format: cf}}
bindings:
  - {{app: {env.app()}, instance: {env.pg()}}}
  - {{app: {env.app()}, instance: {env.my()}}}
  - {{app: {env.app()}, instance: legacy-orders}}
  - {{app: {env.app()}, instance: legacy-shop}}
"""
    )


def mariadb_as(creds: dict[str, object], sql: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    options = tmp_path / f"{creds['username']}.cnf"
    options.write_text(f"[client]\npassword={creds['password']}\n")
    options.chmod(0o600)
    argv = ["mariadb", f"--defaults-extra-file={options}", "-h", str(creds["host"]), "-P", str(creds["port"]),
            "-u", str(creds["username"]), "--batch", "--skip-column-names", str(creds["name"]), "-e", sql]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


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
    set_up_mariadb_by_hand(lab)
    before = hand_made_files(lab)
    digest = data_digest(lab)
    loops, held = clients(lab.address_of(HOST), tmp_path)
    workers = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for worker in workers:
        worker.start()
    held_ids = [session.id() for session in held]
    assert all(i.isdigit() for i in held_ids), [s.close() for s in held]
    env = make_env(tmp_path, unique)
    (env.path / "apps" / "web").mkdir(parents=True)
    try:
        # svcctl import offers both hand-made databases; its YAML validates and plans adoptions only.
        env.write_raw(CATALOG + "instances: {}\n")
        res = env.run("import", ".", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        imported = YAML(typ="safe").load(res.stdout)["instances"]
        assert imported["legacy-orders"]["adopt"] == {"database": "legacy_orders"}
        assert imported["legacy-shop"]["adopt"] == {"database": "legacy_shop"}
        env.write_raw(CATALOG + res.stdout)
        assert env.run("validate", ".").returncode == 0
        code, doc = plan_json(env)
        on_instances = {c["address"]: c["action"] for c in doc["changes"] if c["kind"] == "instance"}
        assert on_instances == {"instance.legacy-orders": "adopt", "instance.legacy-shop": "adopt"}, doc
        assert not [c for c in doc["changes"] if c["destroys_data"]] and doc["errors"] == []

        env.write_raw(environment(env))
        code, doc = plan_json(env)
        assert code == 2, doc
        actions = {c["address"]: c["action"] for c in doc["changes"]}
        assert actions["instance.legacy-orders"] == "adopt" and actions["instance.legacy-shop"] == "adopt"
        assert actions[f"instance.{env.pg()}"] == "create" and actions[f"instance.{env.my()}"] == "create"
        assert doc["summary"]["adopt"] == 2 and doc["summary"]["destroy"] == 0
        engines = {c["address"]: c for c in doc["changes"] if c["kind"] == "engine"}
        pg = {a["name"]: a for a in engines[f"engine.{HOST}.postgres"]["attributes"]}
        assert "listen_addresses" not in pg  # it already listens on '*': nothing to widen, no restart
        assert pg["pg_hba"]["old"] == []
        assert "host all +svcctl_clients 10.211.37.0/24 scram-sha-256" in pg["pg_hba"]["new"]
        my = {a["name"]: a for a in engines.get(f"engine.{HOST}.mysql", {"attributes": []})["attributes"]}
        assert "bind_address" not in my  # bound to every address by its own file: never narrowed
        assert not any(c["restarts_service"] for c in engines.values())

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
        assert psql_as_root(lab, "SHOW listen_addresses;").strip() == "*"
        assert mariadb_as_root(lab, "SELECT @@bind_address;").strip() == "0.0.0.0"
        # The data is intact, and the held sessions are the same: neither server restarted.
        assert data_digest(lab) == digest
        assert [session.id() for session in held] == held_ids
        # The bindings are svcctl's own users beside the hand-made ones: on the adopted PostgreSQL database one
        # acting as its owner, so it reads and writes legacy_app's table; on MariaDB one with the database's grants.
        manifest = env.path / "apps" / "web" / "manifest.yml"
        adopted = credentials(manifest, "postgresql", "legacy-orders")
        assert str(adopted["username"]).startswith("sv_")
        res = query_as(adopted, "INSERT INTO orders VALUES (1001, 'svcctl'); SELECT count(*) FROM orders;")
        assert res.returncode == 0 and res.stdout.strip() == str(ROWS + 1), res.stderr
        assert query_as(adopted, "DELETE FROM orders WHERE id = 1001;").returncode == 0
        shop = credentials(manifest, "mysql", "legacy-shop")
        res = mariadb_as(shop, "SELECT count(*) FROM items", tmp_path)
        assert res.returncode == 0 and res.stdout.strip() == str(ROWS), res.stderr
        assert query_as(credentials(manifest, "postgresql", env.pg()), "SELECT 1").stdout.strip() == "1"
        assert mariadb_as(credentials(manifest, "mysql", env.my()), "SELECT 1", tmp_path).stdout.strip() == "1"

        # Destroying the environment's instances: its own databases go, the adopted ones are released.
        env.write_raw(environment(env, protect=False))
        assert apply(env).returncode == 0
        env.write_raw(CATALOG + "instances: {}\n")
        code, doc = plan_json(env)
        legacy = ("instance.legacy-orders", "instance.legacy-shop")
        released = {c["address"]: c["destroys_data"] for c in doc["changes"] if c["address"] in legacy}
        assert released == {"instance.legacy-orders": False, "instance.legacy-shop": False}, doc
        res = apply(env, "--allow-destroy")
        assert res.returncode == 0, res.stdout + res.stderr
        names = psql_as_root(lab, "SELECT datname FROM pg_database ORDER BY 1;").split()
        assert "legacy_orders" in names and env.pg().replace("-", "_") not in names
        schemas = mariadb_as_root(lab, "SHOW DATABASES;").split()
        assert "legacy_shop" in schemas and env.my().replace("-", "_") not in schemas
        assert data_digest(lab) == digest
        assert hand_made_files(lab) == before
        assert [session.id() for session in held] == held_ids
    finally:
        for loop in loops:
            loop.stop.set()
        for worker in workers:
            worker.join(timeout=60)
        errors = [session.close() for session in held]
        destroy_all(env)
        lab.ssh(HOST, "sudo -n pg_dropcluster --stop 15 main 2>/dev/null; sudo -n rm -rf /var/lib/svcctl; "
                      "sudo -n systemctl disable --now mariadb", check=False)  # fmt: skip
    for loop in loops:
        assert loop.connections > 20, loop.connections  # the loop ran throughout
        assert loop.failures == [], loop.failures
    assert not any("lost" in e or "closed" in e or "terminat" in e for e in errors), errors
