"""The mysql driver against a real MariaDB: apply.yml through ansible-runner, then observe and parse again.

The tests share one module-wide setup: create (engine, instance, readwrite and readonly bindings); then
privileges checked for real, re-apply (no changes), drift and repair, rotation, client networks, and last
in file order delete (dump first).  Each test can also run alone (`-k`, `path::test`): the environment is
built from what the tests have done so far (`World.rw_rotation`), and what a test needs from an earlier
one (a table to dump) it makes itself.  The finalizer restores the host as it was, whatever state the
tests left.  Instances and bindings are made by one run of library/svcctl_mysql_objects.py per batch;
`Run.did()` is what it reports it did, step by step.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import pytest

from svcctl.apply import project
from svcctl.apply.contract import ChangeVars, PlaybookAction
from svcctl.apply.execute import change_vars, node_vars
from svcctl.apply.runner import write_host_programs
from svcctl.drivers.base import DesiredContext
from svcctl.drivers.hostprograms import observe_program
from svcctl.drivers.mysql.driver import DRIVER
from svcctl.model.spec import App, Binding, Environment, Instance, Node, Service, ServicePlan
from svcctl.secrets import Secret, derive_password
from svcctl.state import Kind, Resource, State
from tests.conftest import REPO, Lab

HOST = "lab-2"
KEY = secrets.token_bytes(32)
# apply.yml's one registry write, before any change
RECORD = "Record what this run creates or changes in the host registry, before any of it is touched"
ORDER = {Kind.ENGINE: 0, Kind.INSTANCE: 1, Kind.BINDING: 2}
SERVER_SETTINGS = "/etc/mysql/mariadb.conf.d/60-svcctl.cnf"


def password_for(purpose: str) -> Secret:
    return derive_password(KEY, purpose)


@dataclass
class Run:
    """One apply: its status, stats and every event ansible-runner emitted."""

    status: str
    stats: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    def changed_tasks(self) -> list[str]:
        """Tasks that changed something, in order; a no_log task's result is censored, so its line decides."""
        out: list[str] = []
        for e in self.events:
            if e.get("event") not in ("runner_on_ok", "runner_item_on_ok"):
                continue
            changed = e["event_data"].get("res", {}).get("changed") is True
            if changed or "changed: [" in str(e.get("stdout", "")):
                task = str(e["event_data"].get("task", ""))
                if task not in out:
                    out.append(task)
        return out

    def results(self, task: str) -> list[dict[str, Any]]:
        return [
            e["event_data"]["res"]
            for e in self.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed") and e["event_data"].get("task") == task
        ]

    def did(self) -> dict[str, list[str]]:
        """What the batched MySQL step changed: address -> the steps it took (names only, no secret)."""
        out: dict[str, list[str]] = {}
        for res in self.results("What MySQL did"):
            out.update({c["address"]: c["did"] for c in res["msg"]})
        return out

    def batches(self) -> list[str]:
        """The batched MySQL steps that ran (their task names), in order."""
        return [
            str(e["event_data"]["task"])
            for e in self.events
            if e.get("event") in ("runner_on_ok", "runner_on_failed")
            and str(e["event_data"].get("task", "")).startswith("MySQL: ")
        ]


@dataclass
class World:
    """The module's setup: names, the first apply and the host's state before it, and what the tests changed."""

    lab: Lab
    tmp: Path
    instance: str
    rw_app: str
    ro_app: str
    first: Run
    was_active: bool
    runs: int = 0
    rw_rotation: int = 0  # the readwrite binding's rotation now (the rotation test moves it on)

    @property
    def first_env(self) -> Environment:
        """The environment the module's first apply made."""
        return make_env(self.instance, self.rw_app, self.ro_app)

    @property
    def env(self) -> Environment:
        """The environment as the host has it now."""
        return make_env(self.instance, self.rw_app, self.ro_app, rw_rotation=self.rw_rotation)

    @property
    def db(self) -> str:
        return self.instance.replace("-", "_")

    def apply(
        self,
        changes: list[ChangeVars],
        secrets_: Mapping[str, Mapping[str, str]],
        check: bool = False,
        expect: str = "successful",
    ) -> Run:
        self.runs += 1
        return run_apply(self.lab, self.tmp / f"run{self.runs}", changes, secrets_, check=check, expect=expect)

    def desired(self, env: Environment | None = None) -> list[Resource]:
        e = env or self.env
        return DRIVER.desired(DesiredContext(env=e, placement=dict.fromkeys(e.instances, HOST), observed=State()))

    def observe(self) -> dict[str, Resource]:
        raw = observe_raw(self.lab)
        return {r.address: r for r in DRIVER.parse(HOST, raw, password_for)}

    def sql(self, sql: str, user: str | None = None, password: Secret | None = None, check: bool = True) -> Any:
        if user is None:
            cmd = f"sudo mariadb --batch --skip-column-names -e {shlex.quote(sql)}"
        else:
            assert password is not None
            cmd = (
                f"MYSQL_PWD={shlex.quote(password.reveal())} mariadb -h 127.0.0.1 -u {user} --batch "
                f"--skip-column-names -e {shlex.quote(sql)}"
            )
        return self.lab.ssh(HOST, cmd, check=check)

    def ensure_table(self) -> None:
        """Table t1 with the row (1, 'one'), made by the readwrite user if no earlier test made it."""
        rw = by_address(self.desired())[f"binding.{self.rw_app}.{self.instance}"]
        self.sql(
            f"CREATE TABLE IF NOT EXISTS {self.db}.t1 (id INT PRIMARY KEY, v TEXT); "
            f"INSERT IGNORE INTO {self.db}.t1 VALUES (1, 'one')",
            rw.attrs["user"],
            DRIVER.secrets_for(rw, password_for)["password"],
        )


def observe_raw(lab: Lab) -> dict[str, Any]:
    script = observe_program([("observe_mysql.py", DRIVER.snippet())])
    import subprocess

    res = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), HOST, "sudo python3 -"],
        input=script, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(res.stdout)
    mysql: dict[str, Any] = doc["engines"]["mysql"]
    return mysql


def run_apply(
    lab: Lab,
    tmp: Path,
    changes: list[ChangeVars],
    secrets_: Mapping[str, Mapping[str, str]],
    check: bool = False,
    expect: str = "successful",
) -> Run:
    """Run playbooks/apply.yml on HOST with hand-built changes, the way svcctl's apply does (or in check mode)."""
    tmp.mkdir(parents=True)
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> bool:
        events.append(event)
        return True

    programs = write_host_programs(tmp)
    inventory = {
        "all": {
            "hosts": {
                HOST: {
                    "ansible_host": HOST,
                    "svcctl_programs": str(programs),
                    "svcctl_environment": "e2e-mysql",
                    **node_vars(changes, dict(secrets_)),
                }
            }
        }
    }
    runner = ansible_runner.run(
        private_data_dir=str(tmp),
        project_dir=str(project.assemble(tmp / "project")),
        playbook="apply.yml",
        inventory=inventory,
        quiet=True,
        cmdline="--check" if check else None,
        event_handler=on_event,
        envvars={
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": f"-F {lab.ssh_config} -o ControlMaster=auto -o ControlPersist=60s",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
            "ANSIBLE_MODULE_UTILS": str(programs / "module_utils"),
        },
    )
    run = Run(status=runner.status, stats=runner.stats or {}, events=events)
    assert run.status == expect, runner.stdout.read()[-6000:]
    return run


def change(action: PlaybookAction, res: Resource, old: Resource | None = None) -> ChangeVars:
    """One entry of svcctl_changes, as svcctl apply builds it (the playbooks' typed contract)."""
    return change_vars(action, res, dict(old.attrs) if old is not None else None)


def creates(resources: list[Resource]) -> list[ChangeVars]:
    return [change("create", r) for r in sorted(resources, key=lambda r: (ORDER[r.kind], r.address))]


def secrets_of(resources: list[Resource]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in resources:
        found = DRIVER.secrets_for(r, password_for)
        if found:
            out[r.address] = {k: v.reveal() for k, v in found.items()}
    return out


def passwords(resources: list[Resource]) -> list[str]:
    return [p for s in secrets_of(resources).values() for p in s.values()]


def registry(lab: Lab) -> tuple[str, dict[str, Any]]:
    res = lab.ssh(HOST, "sudo stat -c %a /var/lib/svcctl/registry.json && sudo cat /var/lib/svcctl/registry.json")
    mode, _, body = res.stdout.partition("\n")
    objects: dict[str, Any] = json.loads(body)["objects"]
    return mode, objects


def make_env(
    instance: str, rw: str, ro: str, rw_rotation: int = 0, networks: list[str] | None = None, connections: int = 20
) -> Environment:
    return Environment(
        nodes={HOST: Node(host=HOST, engines=["mysql"], client_networks=networks or [])},
        services={"mysql": Service(engine="mysql", versions=["10.11"])},
        plans={"m-small": ServicePlan(service="mysql", storage_mb=512, connections=connections)},
        instances={instance: Instance(plan="m-small", node=HOST, protect=False)},
        apps={rw: App(manifest="m.yml"), ro: App(manifest="m.yml")},
        bindings=[
            Binding(app=rw, instance=instance, role="readwrite", rotation=rw_rotation),
            Binding(app=ro, instance=instance, role="readonly"),
        ],
    )


def assert_no_secret_in_events(run: Run, secret_values: list[str]) -> None:
    dumped = json.dumps(run.events)
    for value in secret_values:
        assert value not in dumped


@pytest.fixture(scope="module")
def world(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    token = secrets.token_hex(3)
    instance, rw, ro = f"t{token}-db", f"w{token}", f"r{token}"
    was_active = lab.ssh(HOST, "systemctl is-active mariadb", check=False).stdout.strip() == "active"
    settings = lab.ssh(HOST, f"sudo cat {SERVER_SETTINGS}", check=False)
    settings_before = settings.stdout if settings.returncode == 0 else None
    env = make_env(instance, rw, ro)
    desired = DRIVER.desired(DesiredContext(env=env, placement={instance: HOST}, observed=State()))
    tmp = tmp_path_factory.mktemp("mysql")
    try:
        first = run_apply(lab, tmp / "run0", creates(desired), secrets_of(desired))
        yield World(lab=lab, tmp=tmp, instance=instance, rw_app=rw, ro_app=ro, first=first, was_active=was_active)
    finally:
        _cleanup(lab, instance, was_active, settings_before)


def _cleanup(lab: Lab, instance: str, was_active: bool, settings_before: str | None) -> None:
    """Remove whatever this module's tests left, in any state (a test run alone, one that failed half-way, a
    first apply that failed): the database, every user named after it at any host (a client network's too),
    the instance's registry records, its dumps, a server left open to a client network; and stop the server
    again if it was stopped and nothing else is on it.

    Each step runs even when an earlier one failed; the first failure is raised at the end."""
    db = instance.replace("-", "_")
    errors: list[BaseException] = []

    def step(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # every step must run; the first failure is re-raised below
            errors.append(exc)

    def mariadb(sql: str) -> str:
        return lab.ssh(HOST, f"sudo mariadb --batch --skip-column-names -e {shlex.quote(sql)}").stdout

    def drop_objects() -> None:
        if lab.ssh(HOST, "systemctl is-active mariadb", check=False).stdout.strip() != "active":
            return
        mariadb(f"DROP DATABASE IF EXISTS {db}")
        found = mariadb(f"SELECT User, Host FROM mysql.user WHERE User LIKE 'sv\\_%' AND LOCATE('{db}', User) > 0")
        users = [line.split("\t") for line in found.splitlines() if line]
        if users:
            mariadb("; ".join(f"DROP USER IF EXISTS '{user}'@'{host}'" for user, host in users))

    def forget() -> None:
        if lab.ssh(HOST, "sudo test -e /var/lib/svcctl/registry.json", check=False).returncode != 0:
            return
        _, objects = registry(lab)
        mine = [a for a in objects if a.split(".", 1)[0] in ("instance", "binding") and instance in a]
        if mine:
            lab.ssh(HOST, " && ".join(f"sudo /usr/local/lib/svcctl/svcctl-registry.py forget {a}" for a in mine))

    def close_server() -> None:
        # the client networks test opens the server; if it stopped half-way, put its settings back as found
        now = lab.ssh(HOST, f"sudo cat {SERVER_SETTINGS}", check=False)
        if now.returncode != 0 or "bind-address = 0.0.0.0" not in now.stdout:
            return
        if settings_before is not None and "bind-address = 0.0.0.0" in settings_before:
            return
        if settings_before is None:
            lab.ssh(HOST, f"sudo rm -f {SERVER_SETTINGS}")
        else:
            lab.ssh(HOST, f"sudo tee {SERVER_SETTINGS} >/dev/null", stdin=settings_before)
        lab.ssh(HOST, "sudo systemctl try-restart mariadb")

    def stop_if_stopped_before() -> None:
        # Other suites (plan/apply CLI) may use this server meanwhile: stop it only if it was stopped before
        # and nothing but the system databases is left on it.
        count = (
            "SELECT COUNT(*) FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys')"
        )
        left = lab.ssh(HOST, f"sudo mariadb -N -e {shlex.quote(count)}", check=False)
        if not was_active and left.stdout.strip() == "0":
            lab.ssh(HOST, f"sudo /usr/local/lib/svcctl/svcctl-registry.py forget engine.{HOST}.mysql")
            lab.ssh(HOST, f"sudo systemctl disable --now mariadb && sudo rm -f {SERVER_SETTINGS}")

    for action in (drop_objects, forget, close_server, stop_if_stopped_before):
        step(action)
    # the glob must expand as root: the directory is root's, mode 0700
    step(lambda: lab.ssh(HOST, f"sudo sh -c 'rm -f /var/backups/svcctl/{instance}-*.sql.gz'"))
    if errors:
        raise errors[0]


def by_address(resources: list[Resource]) -> dict[str, Resource]:
    return {r.address: r for r in resources}


def live_attrs(r: Resource) -> dict[str, Any]:
    return {k: v for k, v in r.attrs.items() if k not in ("size_mb", "connections_in_use")}  # measured, observed only


def test_create_then_observe_gives_the_desired_attrs(world: World) -> None:
    desired = by_address(world.desired())
    assert sorted(desired) == sorted(
        [
            f"engine.{HOST}.mysql",
            f"instance.{world.instance}",
            f"binding.{world.rw_app}.{world.instance}",
            f"binding.{world.ro_app}.{world.instance}",
        ]
    )
    live = world.observe()
    for address, want in desired.items():
        # claimed_networks and installed_by are registry-only: ownership, not the engine, reports them
        registry_only = ("claimed_networks", "installed_by")
        assert live_attrs(live[address]) == {k: v for k, v in want.attrs.items() if k not in registry_only}, address
    assert live[f"instance.{world.instance}"].attrs["size_mb"] == 0
    assert world.lab.ssh(HOST, "systemctl is-active mariadb; systemctl is-enabled mariadb").stdout.split() == [
        "active",
        "enabled",
    ]


def test_the_first_apply_logged_no_password(world: World) -> None:
    values = passwords(world.desired(world.first_env))
    assert len(values) == 2
    assert_no_secret_in_events(world.first, values)
    assert world.first.changed_tasks()  # it did create things, so the check above saw real events


def test_the_first_apply_made_the_instance_and_bindings_in_one_module_run(world: World) -> None:
    desired = by_address(world.desired(world.first_env))
    db = world.instance.replace("-", "_")
    assert world.first.batches() == ["MySQL: 3 create (instances, bindings)"]
    did = world.first.did()
    assert did[f"instance.{world.instance}"] == [
        f"create database {db}",
        f"database {db}: comment 'svcctl storage_mb=512 connections=20'",
    ]
    for app, role in ((world.rw_app, "readwrite"), (world.ro_app, "readonly")):
        user = desired[f"binding.{app}.{world.instance}"].attrs["user"]
        assert did[f"binding.{app}.{world.instance}"] == [
            step for host in ("127.0.0.1", "localhost")
            for step in (f"create user {user}@{host}", f"{user}@{host}: grant {role} on {db}")
        ]  # fmt: skip
    assert sorted(did) == sorted(a for a in desired if not a.startswith("engine."))


def test_the_registry_records_every_address_with_mode_0600(world: World) -> None:
    mode, objects = registry(world.lab)
    assert mode == "600"
    for r in world.desired():
        assert objects[r.address]["attrs"] == r.attrs
        assert objects[r.address]["environment"] == "e2e-mysql"


def test_privileges_are_real(world: World) -> None:
    desired = by_address(world.desired())
    rw = desired[f"binding.{world.rw_app}.{world.instance}"]
    ro = desired[f"binding.{world.ro_app}.{world.instance}"]
    rw_pw, ro_pw = (DRIVER.secrets_for(b, password_for)["password"] for b in (rw, ro))
    db = world.instance.replace("-", "_")
    world.sql(f"CREATE TABLE {db}.t1 (id INT PRIMARY KEY, v TEXT); INSERT INTO {db}.t1 VALUES (1, 'one')",
              rw.attrs["user"], rw_pw)  # fmt: skip
    # the readonly user reads a table created after its grant
    assert world.sql(f"SELECT v FROM {db}.t1", ro.attrs["user"], ro_pw).stdout == "one\n"
    denied = world.sql(f"INSERT INTO {db}.t1 VALUES (2, 'two')", ro.attrs["user"], ro_pw, check=False)
    assert denied.returncode == 1
    assert "INSERT command denied" in denied.stderr
    denied = world.sql(f"CREATE TABLE {db}.t2 (id INT)", ro.attrs["user"], ro_pw, check=False)
    assert "CREATE command denied" in denied.stderr
    # neither user reaches another database
    other = world.sql("SELECT COUNT(*) FROM mysql.user", rw.attrs["user"], rw_pw, check=False)
    assert "SELECT command denied" in other.stderr
    wrong = world.sql("SELECT 1", rw.attrs["user"], ro_pw, check=False)
    assert "Access denied" in wrong.stderr


def test_a_second_identical_apply_changes_nothing(world: World) -> None:
    desired = world.desired()
    run = world.apply(creates(desired), secrets_of(desired))
    assert run.changed_tasks() == []
    assert run.stats["changed"] == {}
    assert run.stats.get("failures", {}) == {}
    # the module did run (and checked every object), it just found nothing to do
    assert run.batches() == ["MySQL: 3 create (instances, bindings)"]
    assert run.did() == {}
    assert_no_secret_in_events(run, passwords(desired))


def test_a_password_changed_behind_svcctls_back_is_stale_and_apply_fixes_it(world: World) -> None:
    desired = by_address(world.desired())
    rw = desired[f"binding.{world.rw_app}.{world.instance}"]
    user = rw.attrs["user"]
    world.sql(f"ALTER USER '{user}'@'localhost' IDENTIFIED BY 'not-the-derived-one'")
    live = world.observe()
    assert live[rw.address].attrs["credentials"] == "stale"
    assert live[f"binding.{world.ro_app}.{world.instance}"].attrs["credentials"] == "current"
    # check mode says what it would do and does nothing
    checked = world.apply([change("update", rw, live[rw.address])], secrets_of([rw]), check=True)
    assert checked.did() == {rw.address: [f"{user}@localhost: password"]}
    assert world.observe()[rw.address].attrs["credentials"] == "stale"
    run = world.apply([change("update", rw, live[rw.address])], secrets_of([rw]))
    assert run.changed_tasks() == ["MySQL: 1 update (instances, bindings)"]
    assert run.did() == {rw.address: [f"{user}@localhost: password"]}
    assert_no_secret_in_events(run, passwords([rw]))
    assert_no_secret_in_events(checked, passwords([rw]))
    assert world.observe()[rw.address].attrs["credentials"] == "current"
    # the module sent a mysql_native_password hash (IDENTIFIED BY PASSWORD), so that is the user's plugin
    plugin = world.sql(f"SELECT plugin FROM mysql.user WHERE User = '{user}' AND Host = 'localhost'").stdout
    assert plugin == "mysql_native_password\n"


def test_privileges_changed_behind_svcctls_back_are_put_back(world: World) -> None:
    desired = by_address(world.desired())
    ro = desired[f"binding.{world.ro_app}.{world.instance}"]
    user = ro.attrs["user"]
    db = world.instance.replace("-", "_")
    escaped = db.replace("_", "\\_")
    # one more privilege (and GRANT OPTION) on its own database at one host, a grant on another database at the other
    world.sql(
        f"GRANT INSERT ON `{escaped}`.* TO '{user}'@'localhost' WITH GRANT OPTION; "
        f"GRANT SELECT ON mysql.* TO '{user}'@'127.0.0.1'"
    )
    live = world.observe()
    assert live[ro.address].attrs["role"] == "custom"
    run = world.apply([change("update", ro, live[ro.address])], secrets_of([ro]))
    assert run.did() == {
        ro.address: [
            f"{user}@127.0.0.1: revoke every privilege",
            f"{user}@127.0.0.1: grant readonly on {db}",
            f"{user}@localhost: revoke its privileges on {db}",
            f"{user}@localhost: revoke GRANT OPTION on {db}",
            f"{user}@localhost: grant readonly on {db}",
        ]
    }
    assert live_attrs(world.observe()[ro.address]) == ro.attrs
    for host in ("127.0.0.1", "localhost"):
        # --batch prints a backslash doubled
        grants = world.sql(f"SHOW GRANTS FOR '{user}'@'{host}'").stdout.replace("\\\\", "\\").splitlines()
        assert [g.split(" TO ")[0] for g in grants] == [
            "GRANT USAGE ON *.*",
            f"GRANT SELECT, SHOW VIEW ON `{escaped}`.*",
        ]
    again = world.apply([change("update", ro, world.observe()[ro.address])], secrets_of([ro]))
    assert again.did() == {}
    assert again.stats["changed"] == {}


def test_a_change_the_module_cannot_make_fails_naming_the_address(world: World) -> None:
    desired = by_address(world.desired())
    ro = desired[f"binding.{world.ro_app}.{world.instance}"]
    live = world.observe()
    run = world.apply([change("update", ro, live[ro.address])], {}, expect="failed")
    failed = run.results("MySQL refused a change")
    assert len(failed) == 1
    assert ro.address in failed[0]["msg"]
    assert "no password was passed" in failed[0]["msg"]
    assert live_attrs(world.observe()[ro.address]) == ro.attrs


def test_rotation_creates_the_new_user_and_keeps_the_old_until_deleted(world: World) -> None:
    rotation = world.rw_rotation
    env = make_env(world.instance, world.rw_app, world.ro_app, rw_rotation=rotation + 1)
    desired = by_address(world.desired(env))
    address = f"binding.{world.rw_app}.{world.instance}"
    before = world.observe()[address]
    run = world.apply([change("update", desired[address], before)], secrets_of([desired[address]]))
    world.rw_rotation = rotation + 1  # the host has the new user now (and, until dropped below, the old one)
    assert run.changed_tasks() == ["MySQL: 1 update (instances, bindings)"]  # objects only: it records them itself
    new_user = desired[address].attrs["user"]
    assert new_user == before.attrs["user"].removesuffix(f"_r{rotation}") + f"_r{rotation + 1}"
    db = world.instance.replace("-", "_")
    assert run.did() == {
        address: [
            step for host in ("127.0.0.1", "localhost")
            for step in (f"create user {new_user}@{host}", f"{new_user}@{host}: grant readwrite on {db}")
        ]
    }  # fmt: skip
    live = world.observe()
    assert live_attrs(live[address]) == desired[address].attrs
    old = live[f"{address}~r{rotation}"]
    assert old.name == f"{world.rw_app}.{world.instance}~r{rotation}"
    assert old.attrs["user"] == before.attrs["user"]
    assert old.attrs["credentials"] == "current"
    assert DRIVER.secrets_for(old, password_for) == {}
    dropped = world.apply([change("delete", old, old)], {})
    assert dropped.did() == {old.address: [f"drop user {old.attrs['user']}@{h}" for h in ("127.0.0.1", "localhost")]}
    live = world.observe()
    assert f"{address}~r{rotation}" not in live
    assert live_attrs(live[address]) == desired[address].attrs


def test_an_instance_connections_change_reaches_its_users_and_comment(world: World) -> None:
    env = make_env(world.instance, world.rw_app, world.ro_app, rw_rotation=world.rw_rotation, connections=7)
    desired = by_address(world.desired(env))
    address = f"instance.{world.instance}"
    live = world.observe()
    run = world.apply([change("update", desired[address], live[address])], {})
    assert run.changed_tasks() == ["MySQL: 1 update (instances, bindings)"]  # objects only: it records them itself
    db = world.instance.replace("-", "_")
    did = run.did()
    assert list(did) == [address]
    assert did[address][0] == f"database {db}: comment 'svcctl storage_mb=512 connections=7'"
    users = [desired[f"binding.{a}.{world.instance}"].attrs["user"] for a in (world.rw_app, world.ro_app)]
    assert sorted(did[address][1:]) == sorted(
        f"{u}@{h}: MAX_USER_CONNECTIONS 7" for u in users for h in ("127.0.0.1", "localhost")
    )
    live = world.observe()
    assert live_attrs(live[address]) == desired[address].attrs
    for b in (f"binding.{world.rw_app}.{world.instance}", f"binding.{world.ro_app}.{world.instance}"):
        assert live[b].attrs["connections"] == 7
    db = world.instance.replace("-", "_")
    comment = world.sql(f"SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'")
    assert comment.stdout == "svcctl storage_mb=512 connections=7\n"
    back = by_address(world.desired())
    restored = world.apply([change("update", back[address], live[address])], {})
    assert len(restored.did()[address]) == 5  # the comment, and each user at each host
    live = world.observe()
    assert live_attrs(live[address]) == back[address].attrs
    assert live[f"binding.{world.ro_app}.{world.instance}"].attrs["connections"] == 20


def test_client_networks_open_the_server_and_the_users_to_them(world: World) -> None:
    lab1 = world.lab.hosts["lab-1"]
    network = lab1.rsplit(".", 1)[0] + ".0/24"
    env = make_env(world.instance, world.rw_app, world.ro_app, rw_rotation=world.rw_rotation, networks=[network])
    desired = by_address(world.desired(env))
    live = world.observe()
    engine = f"engine.{HOST}.mysql"
    rw = desired[f"binding.{world.rw_app}.{world.instance}"]
    assert rw.attrs["hosts"] == [f"{network.split('/')[0]}/255.255.255.0", "127.0.0.1", "localhost"]
    run = world.apply(
        [change("update", desired[engine], live[engine]), change("update", rw, live[rw.address])], secrets_of([rw])
    )
    assert run.changed_tasks() == [
        RECORD,
        "Write svcctl's server settings (bind-address)",
        "Restart mariadb for its new settings",
        "MySQL: 1 update (instances, bindings)",
    ]
    user, net_host, db = rw.attrs["user"], rw.attrs["hosts"][0], world.instance.replace("-", "_")
    assert run.did() == {rw.address: [f"create user {user}@{net_host}", f"{user}@{net_host}: grant readwrite on {db}"]}
    live = world.observe()
    assert live[engine].attrs["client_networks"] == [network]
    assert live_attrs(live[rw.address]) == rw.attrs
    # a client on lab-1 reaches lab-2's server directly
    pw = DRIVER.secrets_for(rw, password_for)["password"].reveal()
    res = world.lab.ssh(
        "lab-1", f"MYSQL_PWD={shlex.quote(pw)} mariadb -h {world.lab.hosts[HOST]} -u {rw.attrs['user']} "
        f"--batch --skip-column-names -e 'SELECT CURRENT_USER()'"
    )  # fmt: skip
    assert res.stdout.strip() == f"{rw.attrs['user']}@{network.split('/')[0]}/255.255.255.0"
    # and closing again drops the network host and listens on loopback only
    closed = by_address(world.desired(world.env))
    run = world.apply(
        [change("update", closed[engine], live[engine]), change("update", closed[rw.address], live[rw.address])],
        secrets_of([closed[rw.address]]),
    )
    assert "MySQL: 1 update (instances, bindings)" in run.changed_tasks()
    assert run.did() == {rw.address: [f"drop user {user}@{net_host}"]}
    live = world.observe()
    assert live[engine].attrs["client_networks"] == []
    assert live_attrs(live[rw.address]) == closed[rw.address].attrs


def test_delete_dumps_first_then_drops_and_forgets(world: World) -> None:
    # Last in file order.  The dump must hold a table, so make one if no earlier test did.
    world.ensure_table()
    desired = world.desired()
    live = world.observe()
    bindings = [r for r in desired if r.kind is Kind.BINDING]
    instance = f"instance.{world.instance}"
    deletes = [change("delete", live[b.address], live[b.address]) for b in bindings]
    deletes.append(change("delete", live[instance], live[instance]))
    run = world.apply(deletes, {})
    assert run.batches() == ["MySQL: 3 delete (instances, bindings)"]
    reports = run.results("Report the dumps")
    assert len(reports) == 1
    assert len(reports[0]["msg"]) == 1
    message = reports[0]["msg"][0]
    prefix = f"svcctl: {instance} dumped to /var/backups/svcctl/{world.instance}-"
    assert message.startswith(prefix)
    assert message.endswith(".sql.gz")
    path = message.removeprefix(f"svcctl: {instance} dumped to ")
    db = world.instance.replace("-", "_")
    did = run.did()
    assert did[instance] == [f"dump {db} to {path}", f"drop database {db}"]
    for b in bindings:
        user = live[b.address].attrs["user"]
        assert did[b.address] == [f"drop user {user}@{h}" for h in ("127.0.0.1", "localhost")]
    listing = world.lab.ssh(HOST, f"sudo stat -c '%a %U' /var/backups/svcctl {path}").stdout.split("\n")
    assert listing[:2] == ["700 root", "600 root"]
    dump = world.lab.ssh(HOST, f"sudo zcat {path}").stdout
    assert "CREATE TABLE `t1`" in dump
    assert "(1,'one')" in dump
    live = world.observe()
    for r in desired:
        if r.kind is not Kind.ENGINE:
            assert r.address not in live
    assert world.sql(f"SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'sv\\\\_%{world.instance.replace('-', '_')}%'"
                     ).stdout == "0\n"  # fmt: skip
    _, objects = registry(world.lab)
    for r in desired:
        assert (r.address in objects) is (r.kind is Kind.ENGINE)
