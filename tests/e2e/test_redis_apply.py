"""The redis driver against the real lab: apply.yml through ansible-runner, the snippet, redis-cli on the host.

One scenario per test, each on names of its own, cleaned up afterwards whatever happens.  Changes are
built by hand from the driver's desired() (which also allocates the port from what the host has), the
way `svcctl apply` builds them from a plan.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator
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
from svcctl.drivers.redis.driver import DRIVER
from svcctl.model.spec import Environment
from svcctl.plan.diff import OBSERVED_ONLY
from svcctl.secrets import Secret, derive_password
from svcctl.state import Resource, State
from tests.conftest import Lab

HOST = "lab-1"
ENVIRONMENT = "redis-e2e"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CHANGED = re.compile(r"(?m)^changed: \[")


@dataclass
class Run:
    """One ansible-runner run of apply.yml: its status, every event, and per-task results."""

    status: str
    events: list[dict[str, Any]]

    def results(self, kind: str = "runner_on_ok") -> list[dict[str, Any]]:
        """event_data of every event of one kind."""
        return [e["event_data"] for e in self.events if e.get("event") == kind]

    @property
    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (from the display: no_log results hide `changed`)."""
        return [
            e["event_data"]["task"]
            for e in self.events
            if e.get("event") == "runner_on_ok" and CHANGED.search(ANSI.sub("", str(e.get("stdout", ""))))
        ]

    @property
    def changed_count(self) -> int:
        """The play recap's count of changed tasks on HOST."""
        [stats] = self.results("playbook_on_stats")
        return int(stats["changed"].get(HOST, 0))

    @property
    def reports(self) -> list[str]:
        """`svcctl: ...` messages of debug tasks (where a dump went), one or a list per task."""
        out = []
        for d in self.results():
            msg = d.get("res", {}).get("msg")
            for m in msg if isinstance(msg, list) else [msg]:
                if isinstance(m, str) and m.startswith("svcctl: "):
                    out.append(m)
        return out

    @property
    def did(self) -> dict[str, list[str]]:
        """What the objects module did, per address it changed (its `What Redis did` report)."""
        out: dict[str, list[str]] = {}
        for d in self.results():
            if d.get("task") == "What Redis did":
                out.update({r["address"]: r["did"] for r in d["res"]["msg"]})
        return out


@dataclass
class Redis:
    """A test's view of the lab: a key, apply runs, observation, and commands on the host."""

    lab: Lab
    tmp: Path
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    runs: list[Run] = field(default_factory=list)

    def password_for(self, purpose: str) -> Secret:
        return derive_password(self.key, purpose)

    def raw(self) -> dict[str, Any]:
        """The whole observe document of HOST (header, redis snippet, footer)."""
        script = observe_program([("observe_redis.py", DRIVER.snippet())])
        res = subprocess.run(
            ["ssh", "-F", str(self.lab.ssh_config), HOST, "sudo python3 -"],
            input=script, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(res.stdout)  # type: ignore[no-any-return]

    def observed(self) -> State:
        """What the driver parses, without the attributes the diff never compares (live counts)."""
        found = DRIVER.parse(HOST, self.raw()["engines"]["redis"], self.password_for)
        return State.of([r.model_copy(update={"attrs": {k: v for k, v in r.attrs.items() if k not in OBSERVED_ONLY}})
                         for r in found])  # fmt: skip

    def desired(self, env: Environment) -> State:
        """The driver's desired state; an engine's `installed_by` is left out: it is the registry's word, which
        the parse alone (this test's observation) does not read."""
        placement = dict.fromkeys(env.instances, HOST)
        wanted = DRIVER.desired(DesiredContext(env=env, placement=placement, observed=self.observed()))
        return State.of([r.model_copy(update={"attrs": {k: v for k, v in r.attrs.items() if k != "installed_by"}})
                         for r in wanted])  # fmt: skip

    def apply(self, changes: list[ChangeVars], secret_of: list[Resource]) -> Run:
        """Run apply.yml on HOST with these changes and the secrets of these resources."""
        events: list[dict[str, Any]] = []

        def collect(event: dict[str, Any]) -> bool:
            events.append(event)
            return True

        private = self.tmp / f"run{len(self.runs)}"
        private.mkdir(mode=0o700)
        hostvars = {
            "ansible_host": HOST,
            **node_vars(
                changes,
                {
                    r.address: {k: v.reveal() for k, v in DRIVER.secrets_for(r, self.password_for).items()}
                    for r in secret_of
                },
            ),
        }
        programs = write_host_programs(private)
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(project.assemble(private / "project")),
            playbook="apply.yml",
            inventory={"all": {"hosts": {HOST: hostvars}}},
            extravars={"svcctl_environment": ENVIRONMENT, "svcctl_programs": str(programs)},
            quiet=True,
            event_handler=collect,
            envvars={
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_SSH_ARGS": f"-F {self.lab.ssh_config} -o ControlMaster=auto -o ControlPersist=60s",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / "cp"),
                "ANSIBLE_MODULE_UTILS": str(programs / "module_utils"),
            },
        )
        run = Run(status=runner.status, events=events)
        self.runs.append(run)
        failures = [
            f"{d.get('task')}: {d.get('res', {}).get('msg')}" for d in run.results("runner_on_failed")
        ]  # fmt: skip
        assert runner.status == "successful", failures or runner.stdout.read()[-3000:]
        return run

    def sh(self, command: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        """A shell command on HOST (stdin passes secrets, so they never sit on a command line)."""
        res = subprocess.run(
            ["ssh", "-F", str(self.lab.ssh_config), HOST, command],
            input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check:
            assert res.returncode == 0, f"{command!r}: {res.stderr}"
        return res

    def cli(self, port: int, user: str, password: Secret, *args: str) -> str:
        """redis-cli on HOST as `user`, the password through REDISCLI_AUTH from stdin; its output."""
        words = " ".join(shlex.quote(a) for a in args)
        res = self.sh(
            f'read -r P; REDISCLI_AUTH="$P" redis-cli --no-auth-warning -p {port} --user {user} {words}',
            stdin=password.reveal() + "\n",
        )
        return res.stdout.strip()

    def registry(self) -> dict[str, Any]:
        res = self.sh("sudo cat /var/lib/svcctl/registry.json", check=False)
        if res.returncode != 0:
            return {}
        objects: dict[str, Any] = json.loads(res.stdout)["objects"]
        return objects

    def leaked(self, *passwords: Secret) -> list[str]:
        """Events (as JSON) of every run that contain any of these passwords: must be none."""
        clear = [p.reveal() for p in passwords]
        return [
            f"{e.get('event')} {e.get('event_data', {}).get('task')}"
            for run in self.runs
            for e in run.events
            if any(c in json.dumps(e) for c in clear)
        ]


def env_of(instance: str, app: str, *, memory_mb: int = 32, bindings: list[dict[str, Any]]) -> Environment:
    """A one-node environment with one redis instance and its bindings."""
    return Environment.model_validate(
        {
            "nodes": {HOST: {"host": HOST, "engines": ["redis"], "capacity": {"memory_mb": 1024}}},
            "services": {"redis": {"engine": "redis", "versions": ["7"]}},
            "plans": {"cache": {"service": "redis", "memory_mb": memory_mb, "eviction": "allkeys-lru",
                                "connections": 40}},
            "instances": {instance: {"plan": "cache", "node": HOST}},
            "apps": {app: {"manifest": "m.yml"}},
            "bindings": bindings,
        }
    )  # fmt: skip


def change(action: PlaybookAction, res: Resource, old: Resource | None = None) -> ChangeVars:
    """One entry of svcctl_changes, as svcctl apply builds it (the playbooks' typed contract)."""
    return change_vars(action, res, dict(old.attrs) if old is not None else None)


@pytest.fixture
def redis(lab: Lab, tmp_path: Path) -> Redis:
    return Redis(lab=lab, tmp=tmp_path)


CLEANUP = """
unit=redis-server@$1.service
systemctl disable --now "$unit" 2>/dev/null
rm -rf "/etc/redis/redis-$1.conf" "/etc/redis/users-$1.acl" "/var/lib/redis/$1" /var/backups/svcctl/"$1"-*.rdb
python3 - "$2" "$3" <<'PY'
import json, subprocess, sys
try:
    objects = json.load(open("/var/lib/svcctl/registry.json"))["objects"]
except FileNotFoundError:
    objects = {}
for address, record in objects.items():
    if sys.argv[1] in address or (address.endswith(".redis") and record.get("environment") == sys.argv[2]):
        subprocess.run(["/usr/local/lib/svcctl/svcctl-registry.py", "forget", address], check=True)
PY
"""


@pytest.fixture
def names(redis: Redis, unique: str) -> Iterator[tuple[str, str]]:
    """(instance, app) names of this test; whatever they left on the host is removed afterwards."""
    instance, app = f"t{unique}-cache", f"a{unique}-web"
    yield instance, app
    redis.sh(f"sudo bash -s {instance} {unique} {ENVIRONMENT}", stdin=CLEANUP)


def main_pid(redis: Redis, instance: str) -> int:
    return int(redis.sh(f"systemctl show -p MainPID --value redis-server@{instance}.service").stdout)


def test_create_observe_use_drift_rotate_and_delete_an_instance_with_two_bindings(
    redis: Redis, names: tuple[str, str]
) -> None:
    instance, app = names
    ro_app = "ro-" + app[1:]
    bindings = [{"app": app, "instance": instance, "role": "readwrite"},
                {"app": ro_app, "instance": instance, "role": "readonly"}]  # fmt: skip
    env = env_of(instance, app, bindings=bindings)
    desired = redis.desired(env)
    engine, inst = desired.get(f"engine.{HOST}.redis"), desired.get(f"instance.{instance}")
    rw, ro = desired.get(f"binding.{app}.{instance}"), desired.get(f"binding.{ro_app}.{instance}")
    assert engine and inst and rw and ro
    creates = [change("create", r) for r in (engine, inst, rw, ro)]
    run = redis.apply(creates, [engine, inst, rw, ro])
    assert f"start redis-server@{instance}.service" in run.did[inst.address]

    # What the snippet sees is exactly what was asked for.
    observed = redis.observed()
    for r in (engine, inst, rw, ro):
        assert observed.get(r.address) == r, r.address
    port = inst.attrs["port"]
    assert isinstance(port, int) and port >= 6380

    # The stock service stays off; the registry records every address, 0600 root.
    assert redis.sh("systemctl is-enabled redis-server.service", check=False).stdout.strip() == "disabled"
    assert redis.sh("sudo stat -c '%a %U' /var/lib/svcctl/registry.json").stdout.split() == ["600", "root"]
    recorded = redis.registry()
    for r in (inst, rw, ro):
        assert recorded[r.address]["attrs"] == r.attrs
        assert recorded[r.address]["environment"] == ENVIRONMENT
    files = f"/etc/redis/redis-{instance}.conf /etc/redis/users-{instance}.acl /var/lib/redis/{instance}"
    modes = redis.sh(f"sudo stat -c '%a %U:%G' {files}").stdout.split()
    assert modes == ["640", "redis:redis", "640", "redis:redis", "750", "redis:redis"]

    # Privileges, with the engine's own client on the host.
    rw_pw = redis.password_for(f"binding/{app}/{instance}/0")
    ro_pw = redis.password_for(f"binding/{ro_app}/{instance}/0")
    admin_pw = redis.password_for(f"instance/{instance}/admin")
    rw_user, ro_user = str(rw.attrs["user"]), str(ro.attrs["user"])
    assert redis.cli(port, rw_user, rw_pw, "SET", "k1", "v1") == "OK"
    assert redis.cli(port, ro_user, ro_pw, "GET", "k1") == "v1"
    assert redis.cli(port, ro_user, ro_pw, "SET", "k2", "v2").startswith("NOPERM")
    assert redis.cli(port, rw_user, rw_pw, "SET", "k3", "later") == "OK"
    assert redis.cli(port, ro_user, ro_pw, "GET", "k3") == "later"
    assert redis.cli(port, rw_user, rw_pw, "CONFIG", "GET", "maxmemory").startswith("NOPERM")
    assert redis.cli(port, rw_user, rw_pw, "FLUSHALL").startswith("NOPERM")
    assert redis.cli(port, ro_user, rw_pw, "GET", "k1") == "NOAUTH Authentication required."
    assert redis.cli(port, "default", admin_pw, "CONFIG", "GET", "maxmemory").split() == ["maxmemory", str(32 << 20)]

    # The same changes again change nothing at all.
    pid = main_pid(redis, instance)
    again = redis.apply(creates, [engine, inst, rw, ro])
    assert (again.changed_tasks, again.changed_count) == ([], 0)
    assert main_pid(redis, instance) == pid

    # A password changed behind svcctl's back is stale; applying the update makes it current again,
    # through ACL LOAD: the instance keeps running, with its data.
    assert redis.cli(port, "default", admin_pw, "ACL", "SETUSER", rw_user, "resetpass", ">not-derived") == "OK"
    assert redis.cli(port, "default", admin_pw, "ACL", "SAVE") == "OK"
    drifted = redis.observed().get(rw.address)
    assert drifted is not None and drifted.attrs["credentials"] == "stale"
    fix = redis.apply([change("update", rw, drifted)], [rw])
    assert fix.did == {rw.address: [f"user {rw_user} in /etc/redis/users-{instance}.acl", "ACL LOAD"]}
    assert redis.observed().get(rw.address) == rw
    assert main_pid(redis, instance) == pid
    assert redis.cli(port, rw_user, rw_pw, "GET", "k1") == "v1"

    # A config change restarts this instance only.
    bigger = env_of(instance, app, memory_mb=48, bindings=[{"app": app, "instance": instance}])
    inst48 = redis.desired(bigger).get(inst.address)
    assert inst48 is not None and inst48.attrs["port"] == port  # kept, not re-allocated
    redis.apply([change("update", inst48, inst)], [inst48])
    pid48 = main_pid(redis, instance)
    assert pid48 not in (pid, 0)
    assert redis.observed().get(inst.address) == inst48

    # Rotation adds the new user and keeps the old one, seen as `~r0` until a delete drops it.
    rotated: list[dict[str, Any]] = [{"app": app, "instance": instance, "rotation": 1}, bindings[1]]
    rw1 = redis.desired(env_of(instance, app, memory_mb=48, bindings=rotated)).get(rw.address)
    assert rw1 is not None and rw1.attrs["user"] == rw_user[:-1] + "1"
    redis.apply([change("update", rw1, rw)], [rw1])
    live = redis.observed()
    old = live.get(f"{rw.address}~r0")
    assert old is not None and old.attrs == rw.attrs
    assert live.get(rw.address) == rw1
    rw1_pw = redis.password_for(f"binding/{app}/{instance}/1")
    assert redis.cli(port, str(rw1.attrs["user"]), rw1_pw, "GET", "k1") == "v1"
    assert redis.cli(port, rw_user, rw_pw, "GET", "k1") == "v1"
    redis.apply([change("delete", old, old)], [old])
    live = redis.observed()
    assert live.get(old.address) is None and live.get(rw.address) == rw1
    assert redis.cli(port, rw_user, rw_pw, "GET", "k1") == "NOAUTH Authentication required."
    assert redis.cli(port, str(rw1.attrs["user"]), rw1_pw, "GET", "k1") == "v1"
    assert main_pid(redis, instance) == pid48

    # Deleting the bindings revokes them; deleting the instance dumps it first.
    live = redis.observed()
    deletes = [change("delete", r, r) for r in (live.get(rw.address), live.get(ro.address)) if r is not None]
    deletes.append(change("delete", inst48, inst48))
    gone = redis.apply(deletes, [rw, ro, inst48])
    [report] = gone.reports
    dump = rf"/var/backups/svcctl/{instance}-\d{{8}}T\d{{6}}Z\.rdb"
    match = re.fullmatch(rf"svcctl: instance\.{instance} dumped to ({dump})", report)
    assert match, report
    assert redis.sh(f"sudo stat -c '%a %U %s' {match.group(1)}").stdout.split()[:2] == ["600", "root"]
    assert redis.sh(f"sudo head -c 5 {match.group(1)}").stdout == "REDIS"
    after = redis.observed()
    assert [r.address for r in after if instance in r.name] == []
    assert redis.sh(f"systemctl is-active redis-server@{instance}.service", check=False).stdout.strip() == "inactive"
    assert redis.sh(f"sudo ls /etc/redis/redis-{instance}.conf /var/lib/redis/{instance}", check=False).returncode == 2
    recorded = redis.registry()
    assert [a for a in recorded if instance in a] == []

    assert redis.leaked(rw_pw, ro_pw, admin_pw, rw1_pw) == []
