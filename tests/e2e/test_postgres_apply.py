"""The postgres playbook tasks on a real lab host, through playbooks/apply.yml and ansible-runner, checked with
the engine's own client and with the driver's snippet and parser.

The tests share one module fixture (an engine, an instance, a readwrite and a readonly binding, all with
this run's unique names).  Each test can run alone (`-k`, `path::test`): what a test needs from an earlier
step (the orders table, a rotation) it makes through the fixture's helpers, which keep a small record of
what has been done (`Pg.rotation`, `Pg.orders`).  The delete test is last in file order.  They use lab-2,
whose PostgreSQL no other test uses, and the finalizer leaves its cluster stopped and disabled again, as the
lab boots it, whatever state the tests left.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

from svcctl.apply import project
from svcctl.apply.contract import ChangeVars, PlaybookAction
from svcctl.apply.execute import change_vars, node_vars
from svcctl.apply.runner import write_host_programs
from svcctl.drivers.base import binding_user as user_name
from svcctl.drivers.hostprograms import observe_program
from svcctl.drivers.postgres.driver import DRIVER, hba_rules, owner_role
from svcctl.model.names import sql_ident
from svcctl.secrets import binding_password
from svcctl.state import Kind, Resource
from tests.conftest import Lab

HOST = "lab-2"
UNIT = "postgresql@15-main"
DUMP_DIR = "/var/backups/svcctl"
ENGINE_ATTRS = {"installed": True, "version": "15", "running": True, "enabled": True, "client_networks": [],
                "pg_hba": hba_rules([]), "listen_addresses": "localhost"}  # fmt: skip


@dataclass
class Run:
    """One ansible-runner run of apply.yml: its status, stats and every event."""

    status: str
    stats: dict[str, Any]
    events: list[dict[str, Any]]

    def ok_results(self) -> list[dict[str, Any]]:
        """Per-task results of the host (ok and failed; skipped tasks have none worth checking)."""
        return [e["event_data"] for e in self.events if e.get("event") in ("runner_on_ok", "runner_on_failed")]

    def did(self) -> dict[str, list[str]]:
        """What the batched PostgreSQL step changed: address -> the steps it took (names only, no secret)."""
        out: dict[str, list[str]] = {}
        for r in self.ok_results():
            if r["task"] == "What PostgreSQL did":
                out.update({c["address"]: c["did"] for c in r["res"]["msg"]})
        return out


@dataclass
class Pg:
    """This module's objects on the host, and ways to act on and look at them."""

    lab: Lab
    tmp: Path
    env: str
    key: bytes
    instance: str
    rw_app: str
    ro_app: str
    runs: list[Run] = field(default_factory=list)
    rotation: int = 0  # the readwrite binding's current rotation (the readonly one stays at 0)
    orders: int | None = None  # rows in the orders table the tests made; None: no table yet

    @property
    def database(self) -> str:
        return sql_ident(self.instance)

    def current(self, app: str) -> int:
        """The rotation an app's binding is at now."""
        return self.rotation if app == self.rw_app else 0

    def password(self, app: str, rotation: int | None = None) -> str:
        rotation = self.current(app) if rotation is None else rotation
        return binding_password(self.key, app, self.instance, rotation).reveal()

    def engine_change(self, action: PlaybookAction = "create") -> ChangeVars:
        res = Resource(kind=Kind.ENGINE, name=f"{HOST}.postgres", node=HOST, engine="postgres", attrs=ENGINE_ATTRS)
        return change_vars(action, res, None)

    def instance_attrs(self) -> dict[str, Any]:
        return {"engine": "postgres", "major_version": "15", "database": self.database,
                "owner": owner_role(self.instance), "connections": 7, "storage_mb": 64}  # fmt: skip

    def instance_change(self, action: PlaybookAction = "create") -> ChangeVars:
        attrs = self.instance_attrs()
        res = Resource(kind=Kind.INSTANCE, name=self.instance, node=HOST, engine="postgres", attrs=attrs)
        return change_vars(action, res, attrs if action == "delete" else None)

    def binding_attrs(self, app: str, rotation: int | None = None) -> dict[str, Any]:
        rotation = self.current(app) if rotation is None else rotation
        role = "readwrite" if app == self.rw_app else "readonly"
        user = user_name(app, self.instance, rotation)
        return {"engine": "postgres", "role": role, "rotation": rotation, "user": user, "credentials": "current",
                "connections": 7}  # fmt: skip

    def binding_change(
        self,
        app: str,
        action: PlaybookAction = "create",
        rotation: int | None = None,
        old: dict[str, Any] | None = None,
        suffix: str = "",
    ) -> ChangeVars:
        res = Resource(kind=Kind.BINDING, name=f"{app}.{self.instance}{suffix}", node=HOST, engine="postgres",
                       attrs=self.binding_attrs(app, rotation))  # fmt: skip
        return change_vars(action, res, old)

    def secrets(self, *apps_rotations: tuple[str, int]) -> dict[str, Any]:
        return {f"binding.{app}.{self.instance}": {"password": self.password(app, rot)} for app, rot in apps_rotations}

    def everything(self) -> tuple[list[ChangeVars], dict[str, Any]]:
        """Changes creating the engine, the instance and both bindings as they are now, and their passwords."""
        changes = [self.engine_change(), self.instance_change(), self.binding_change(self.rw_app),
                   self.binding_change(self.ro_app)]  # fmt: skip
        return changes, self.secrets((self.rw_app, self.current(self.rw_app)), (self.ro_app, 0))

    def ensure_orders(self) -> int:
        """The orders table, made by the readwrite user if no test made it yet; returns how many rows it has."""
        if self.orders is None:
            made = self.psql_as(self.rw_app, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (41), (42)")
            assert made.returncode == 0, made.stderr
            self.orders = 2
        return self.orders

    def rotate(self) -> Run:
        """Rotate the readwrite binding to its next rotation; the old user stays until `drop_old_user`."""
        old = self.binding_attrs(self.rw_app)
        new = self.rotation + 1
        run = self.apply(
            [self.binding_change(self.rw_app, action="update", rotation=new, old=old)], self.secrets((self.rw_app, new))
        )
        self.rotation = new
        return run

    def drop_old_user(self) -> Run:
        """Delete the readwrite binding's previous rotation (`~r<n-1>`), as the plan after a rotation does."""
        old = self.rotation - 1
        change = self.binding_change(
            self.rw_app, action="delete", old=self.binding_attrs(self.rw_app, old), suffix=f"~r{old}"
        )
        return self.apply([change], {})

    def apply(self, changes: list[ChangeVars], secrets_: dict[str, Any]) -> Run:
        """Run apply.yml on HOST with these changes, in the project svcctl apply assembles."""
        data = self.tmp / f"run{len(self.runs)}"
        project.assemble(data / "project")
        events: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> bool:
            events.append(event)
            return True

        programs = write_host_programs(data)
        runner = ansible_runner.run(
            private_data_dir=str(data),
            playbook="apply.yml",
            inventory={"all": {"hosts": {HOST: {"ansible_host": HOST}}}},
            extravars={
                "svcctl_programs": str(programs),
                "svcctl_environment": self.env,
                **node_vars(changes, secrets_),
            },
            quiet=True,
            event_handler=on_event,
            envvars={
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_SSH_ARGS": f"-F {self.lab.ssh_config} -o ControlMaster=auto -o ControlPersist=60s",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / "cp"),
                "ANSIBLE_MODULE_UTILS": str(programs / "module_utils"),
            },
        )
        run = Run(status=runner.status, stats=runner.stats or {}, events=events)
        self.runs.append(run)
        assert run.status == "successful", "\n".join(e.get("stdout", "") for e in events)[-4000:]
        return run

    def observe(self) -> dict[str, Resource]:
        """The snippet run on the host inside the shared frame, parsed by the driver, by address."""
        script = observe_program([("observe_postgres.py", DRIVER.snippet())])
        res = subprocess.run(["ssh", "-F", str(self.lab.ssh_config), HOST, "sudo python3 -"],
                             input=script, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        raw = json.loads(res.stdout)["engines"]["postgres"]
        assert "error" not in raw, raw

        def password_for(purpose: str) -> Any:
            _, app, instance, rotation = purpose.split("/")
            return binding_password(self.key, app, instance, int(rotation))

        return {r.address: r for r in DRIVER.parse(HOST, raw, password_for)}

    def psql_as(
        self, app: str, sql: str, rotation: int | None = None, password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run SQL over TCP on the host as a binding's user (the password travels on stdin, not argv)."""
        rotation = self.current(app) if rotation is None else rotation
        user = user_name(app, self.instance, rotation)
        command = (
            "read -r PGPASSWORD; export PGPASSWORD; psql -h 127.0.0.1 -XAtq -v ON_ERROR_STOP=1 "
            f"-U {user} -d {self.database} -c {shlex.quote(sql)}"
        )
        secret = password if password is not None else self.password(app, rotation)
        return subprocess.run(["ssh", "-F", str(self.lab.ssh_config), HOST, command], input=secret + "\n",
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    def superuser(self, sql: str, database: str = "postgres") -> str:
        """SQL as the postgres superuser on the host (for checks and cleanup only)."""
        cmd = f"sudo runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database} -c {shlex.quote(sql)}"
        return self.lab.ssh(HOST, cmd).stdout

    def registry(self) -> dict[str, Any]:
        objects: dict[str, Any] = json.loads(self.lab.ssh(HOST, "sudo cat /var/lib/svcctl/registry.json").stdout)[
            "objects"
        ]
        return {a: r for a, r in objects.items() if r.get("environment") == self.env}


@pytest.fixture(scope="module")
def pg(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pg]:
    """Engine, instance, a readwrite and a readonly binding created on a cluster that was stopped and disabled."""
    token = secrets.token_hex(3)
    pg = Pg(lab=lab, tmp=tmp_path_factory.mktemp("pg"), env=f"pg-e2e-{token}", key=secrets.token_bytes(32),
            instance=f"t{token}-db", rw_app=f"w{token}", ro_app=f"r{token}")  # fmt: skip
    lab.ssh(HOST, f"sudo systemctl disable --now {UNIT} 2>&1")
    try:
        pg.apply(*pg.everything())
        yield pg
    finally:
        _cleanup(pg)


def _cleanup(pg: Pg) -> None:
    """Remove whatever this module's tests left, in any state (a test run alone, one that failed half-way, a
    first apply that failed): the database, every role named after it, this environment's registry records,
    the dumps; then stop and disable the cluster and remove svcctl's settings, as the lab boots it.

    Each step runs even when an earlier one failed; the first failure is raised at the end."""
    errors: list[BaseException] = []

    def step(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # every step must run; the first failure is re-raised below
            errors.append(exc)

    def drop_objects() -> None:
        # The cluster may be stopped (a first apply that failed half-way): start it to drop what it holds.
        pg.lab.ssh(HOST, f"sudo systemctl start {UNIT} 2>&1", check=False)
        if pg.lab.ssh(HOST, f"systemctl is-active {UNIT}", check=False).stdout.strip() != "active":
            return
        pg.superuser(f"DROP DATABASE IF EXISTS {pg.database} WITH (FORCE)")
        # every user of every rotation and the owner: all are named after the database
        roles = pg.superuser(f"SELECT rolname FROM pg_roles WHERE strpos(rolname, '{pg.database}') > 0").split()
        for role in roles:
            pg.superuser(f"DROP ROLE IF EXISTS {role}")

    def forget() -> None:
        found = pg.lab.ssh(HOST, "sudo test -e /var/lib/svcctl/registry.json", check=False).returncode == 0
        addresses = pg.registry() if found else {}
        command = " && ".join(
            f"sudo /usr/local/lib/svcctl/svcctl-registry.py forget {shlex.quote(a)} >/dev/null" for a in addresses
        )
        if command:
            pg.lab.ssh(HOST, command)

    step(drop_objects)
    step(forget)
    step(lambda: pg.lab.ssh(HOST, f"sudo sh -c 'rm -f {DUMP_DIR}/{pg.instance}-*.pgc'"))
    step(
        lambda: pg.lab.ssh(
            HOST, f"sudo systemctl disable --now {UNIT} 2>&1; sudo rm -f /etc/postgresql/15/main/conf.d/svcctl.conf"
        )
    )
    if errors:
        raise errors[0]


def test_engine_create_starts_and_enables_the_cluster(pg: Pg) -> None:
    observed = dict(pg.observe()[f"engine.{HOST}.postgres"].attrs)
    assert observed.pop("listen_base") == "localhost"  # Debian's default: svcctl's drop-in sets nothing
    assert observed == ENGINE_ATTRS
    res = pg.lab.ssh(HOST, f"systemctl is-active {UNIT}; systemctl is-enabled {UNIT}")
    assert res.stdout.split() == ["active", "enabled"]


def test_what_the_snippet_observes_equals_what_was_applied(pg: Pg) -> None:
    observed = pg.observe()
    instance = observed[f"instance.{pg.instance}"]
    measured = ("size_mb", "connections_in_use")  # observed only
    assert {k: v for k, v in instance.attrs.items() if k not in measured} == pg.instance_attrs()
    assert isinstance(instance.attrs["size_mb"], int)
    for app in (pg.rw_app, pg.ro_app):
        assert observed[f"binding.{app}.{pg.instance}"].attrs == pg.binding_attrs(app)  # at its current rotation


def test_privileges_are_least_privilege_and_tables_belong_to_the_owner(pg: Pg) -> None:
    assert pg.orders is None  # no earlier test made the table: this one makes it, as the readwrite user
    created = pg.psql_as(pg.rw_app, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (41), (42)")
    assert created.returncode == 0, created.stderr
    pg.orders = 2
    owner = pg.superuser("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", pg.database)
    assert owner.strip() == owner_role(pg.instance)
    # The readonly user was created before the table: it reads it through the default privileges.
    assert pg.psql_as(pg.ro_app, "SELECT sum(id) FROM orders").stdout.strip() == "83"
    refused_write = pg.psql_as(pg.ro_app, "INSERT INTO orders VALUES (1)")
    assert refused_write.returncode != 0
    assert "permission denied for table orders" in refused_write.stderr
    refused_create = pg.psql_as(pg.ro_app, "CREATE TABLE mine (id int)")
    assert refused_create.returncode != 0
    assert "permission denied for schema public" in refused_create.stderr
    wrong = pg.psql_as(pg.rw_app, "SELECT 1", password="not-the-password")
    assert "password authentication failed" in wrong.stderr


def test_a_second_identical_apply_changes_nothing(pg: Pg) -> None:
    run = pg.apply(*pg.everything())
    changed = [r["task"] for r in run.ok_results() if r["res"].get("changed")]
    assert changed == []
    assert run.stats["changed"] == {}  # counts the no_log tasks too, whose events hide `changed`
    assert run.did() == {}
    ran = [r["task"] for r in run.ok_results()]
    assert "PostgreSQL: 3 create (instances, bindings)" in ran  # the batched step did run, and found all done


def test_the_registry_records_every_address_root_only(pg: Pg) -> None:
    assert sorted(pg.registry()) == sorted(
        [f"engine.{HOST}.postgres", f"instance.{pg.instance}", f"binding.{pg.rw_app}.{pg.instance}",
         f"binding.{pg.ro_app}.{pg.instance}"]
    )  # fmt: skip
    assert pg.registry()[f"instance.{pg.instance}"]["attrs"] == pg.instance_attrs()
    mode = pg.lab.ssh(HOST, "sudo stat -c '%a %U' /var/lib/svcctl/registry.json").stdout.split()
    assert mode == ["600", "root"]


def test_a_password_changed_behind_svcctls_back_is_stale_until_reapplied(pg: Pg) -> None:
    rows = pg.ensure_orders()
    pg.superuser(f"ALTER ROLE {user_name(pg.ro_app, pg.instance, 0)} PASSWORD 'changed-by-hand'")
    assert pg.observe()[f"binding.{pg.ro_app}.{pg.instance}"].attrs["credentials"] == "stale"
    old = {**pg.binding_attrs(pg.ro_app), "credentials": "stale"}
    run = pg.apply([pg.binding_change(pg.ro_app, action="update", old=old)], pg.secrets((pg.ro_app, 0)))
    # ansible-runner hides a no_log task's whole result, `changed` included: the stats still count it.
    assert run.stats["changed"] == {HOST: 1}
    assert run.did() == {
        f"binding.{pg.ro_app}.{pg.instance}": [f"role {user_name(pg.ro_app, pg.instance, 0)}: password"]
    }
    assert pg.observe()[f"binding.{pg.ro_app}.{pg.instance}"].attrs["credentials"] == "current"
    assert pg.psql_as(pg.ro_app, "SELECT count(*) FROM orders").stdout.strip() == str(rows)


def test_rotation_creates_the_new_user_keeps_the_old_then_deletes_it(pg: Pg) -> None:
    rows = pg.ensure_orders()
    old = pg.rotation
    new = old + 1
    pg.rotate()
    observed = pg.observe()
    assert observed[f"binding.{pg.rw_app}.{pg.instance}"].attrs == pg.binding_attrs(pg.rw_app, new)
    assert observed[f"binding.{pg.rw_app}.{pg.instance}~r{old}"].attrs == pg.binding_attrs(pg.rw_app, old)
    # Both users work during the switch-over; the new one writes as the owner too.
    assert pg.psql_as(pg.rw_app, "INSERT INTO orders VALUES (1)", rotation=new).returncode == 0
    pg.orders = rows + 1
    assert pg.psql_as(pg.rw_app, "SELECT count(*) FROM orders", rotation=old).stdout.strip() == str(rows + 1)

    pg.drop_old_user()
    observed = pg.observe()
    assert f"binding.{pg.rw_app}.{pg.instance}~r{old}" not in observed
    assert observed[f"binding.{pg.rw_app}.{pg.instance}"].attrs == pg.binding_attrs(pg.rw_app, new)
    assert "password authentication failed" in pg.psql_as(pg.rw_app, "SELECT 1", rotation=old).stderr


def test_no_event_ever_contains_a_password(pg: Pg) -> None:
    # Run alone, the module has made one run: make the ones that carry other passwords here.
    if pg.rotation == 0:
        pg.rotate()  # sends the readwrite binding's rotation-1 password
        pg.drop_old_user()
    if len(pg.runs) < 4:
        pg.apply(*pg.everything())  # sends every current password again
    passwords = [pg.password(app, r) for app in (pg.rw_app, pg.ro_app) for r in range(pg.rotation + 1)]
    assert len(passwords) >= 4
    assert len(pg.runs) >= 4
    for run in pg.runs:
        assert run.events
        for event in run.events:
            text = json.dumps(event)
            for password in passwords:
                assert password not in text, event.get("event_data", {}).get("task")


def test_deleting_bindings_and_the_instance_dumps_it_first_then_drops_everything(pg: Pg) -> None:
    # Last in file order.  The dump must hold a table, so make one if no earlier test did.
    pg.ensure_orders()
    rw_old = pg.binding_attrs(pg.rw_app)
    ro_old = pg.binding_attrs(pg.ro_app)
    run = pg.apply(
        [
            pg.binding_change(pg.rw_app, action="delete", old=rw_old),
            pg.binding_change(pg.ro_app, action="delete", old=ro_old),
            pg.instance_change(action="delete"),
        ],
        {},
    )
    reports = [m for r in run.ok_results() if r["task"] == "Report the dumps" for m in r["res"]["msg"]]
    assert len(reports) == 1
    prefix = f"svcctl: instance.{pg.instance} dumped to {DUMP_DIR}/{pg.instance}-"
    assert reports[0].startswith(prefix) and reports[0].endswith("Z.pgc"), reports[0]
    path = reports[0].rsplit(" ", 1)[1]
    did = run.did()
    assert did[f"instance.{pg.instance}"][0] == f"dump {pg.database} to {path}"  # dumped before dropped
    assert did[f"instance.{pg.instance}"][1:] == [f"drop database {pg.database}", f"drop role {pg.database}_owner"]
    stat = pg.lab.ssh(HOST, f"sudo stat -c '%a %U %s' {path} {DUMP_DIR}").stdout.split()
    assert stat[:2] == ["600", "root"] and int(stat[2]) > 0
    assert stat[3:5] == ["700", "root"]
    listing = pg.lab.ssh(HOST, f"sudo pg_restore -l {shlex.quote(path)}").stdout
    assert "TABLE public orders" in listing

    assert pg.superuser(f"SELECT count(*) FROM pg_database WHERE datname = '{pg.database}'").strip() == "0"
    roles = pg.superuser(f"SELECT count(*) FROM pg_roles WHERE rolname LIKE '%{pg.database}%'")
    assert roles.strip() == "0"
    observed = pg.observe()
    assert [a for a in observed if pg.instance in a] == []
    assert sorted(pg.registry()) == [f"engine.{HOST}.postgres"]
