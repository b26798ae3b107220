"""`svcctl tunnel` against the lab with the real clients: psql, mariadb and redis-cli through the tunnel."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcctl.secrets import binding_password, decode_key
from tests.conftest import Lab
from tests.e2e.applying import apply, destroy_all
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env

KEY = decode_key(TEST_KEY, "test key")


def body(env: Env) -> str:
    return (
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"  {env.my()}: {{plan: mysql-small, node: lab-2, protect: false}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: dotenv}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
        f"  - {{app: {env.app()}, instance: {env.my()}}}\n"
        f"  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )


@pytest.fixture(scope="module")
def applied(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One environment with a postgres, a mariadb and a redis instance and a readwrite binding to each."""
    env = make_env(tmp_path_factory.mktemp("tunnel"), secrets.token_hex(3))
    (env.path / "apps").mkdir()
    env.write(body(env))
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    yield env
    destroy_all(env)


def tunnel(env: Env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return env.run("tunnel", *args, timeout=timeout)


def session_users(lab: Lab, node: str, instance: str | None = None) -> str:
    """Every temporary user on a node's engines, and the sessions its registry records; only `instance`'s if given.

    Other tests share the lab and open tunnels of their own: a test asserts only about its own instance.
    """
    script = (
        "sudo -n runuser -u postgres -- psql -XAtc \"select rolname from pg_roles where rolname like 'svs%'\"; "
        "sudo -n mariadb -N -e \"select user from mysql.user where user like 'svs%'\" 2>/dev/null; "
        "sudo -n grep -ho '^user svs_[a-z0-9_]*' /etc/redis/*.acl 2>/dev/null; "
        'sudo -n grep -o \'"session\\.[^"]*"\' /var/lib/svcctl/registry.json; true'
    )
    found = lab.ssh(node, script).stdout
    if instance is None:
        return found
    mine = (f"svs_{instance}_", f'"session.{instance}.')
    return "".join(line for line in found.splitlines(keepends=True) if any(m in line for m in mine))


def test_psql_mariadb_and_redis_cli_round_trip_through_the_tunnel(applied: Env) -> None:
    env = applied
    app = ("--app", env.app())
    res = tunnel(env, env.pg(), *app, "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c",
                 "create table t (n int); insert into t values (41), (1); select sum(n) from t")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "42"
    res = tunnel(env, env.pg(), *app, "--", "psql", "-XAtc", "select session_user, current_database()")
    assert res.stdout.strip() == f"sv_{env.app()}_{env.pg()}_r0|{env.pg()}", res.stderr

    res = tunnel(env, env.my(), *app, "--", "mariadb", "-N", "-e",
                 "create table t (s varchar(9)); insert into t values ('via'), ('tunnel');"
                 " select group_concat(s order by s) from t")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "tunnel,via"

    res = tunnel(env, env.rd(), *app, "--", "redis-cli", "set", "greeting", "hello")
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stdout + res.stderr
    res = tunnel(env, env.rd(), *app, "--", "redis-cli", "get", "greeting")
    assert res.stdout.strip() == "hello", res.stderr

    # A temporary (readonly) user reads what the binding wrote, and may not write.
    res = tunnel(env, env.pg(), "--", "psql", "-XAtc", "select sum(n) from t")
    assert res.stdout.strip() == "42", res.stderr
    res = tunnel(env, env.pg(), "--", "psql", "-XAtc", "insert into t values (1)")
    assert res.returncode != 0 and "permission denied" in res.stderr
    res = tunnel(env, env.my(), "--", "mariadb", "-N", "-e", "select count(*) from t")
    assert res.stdout.strip() == "2", res.stderr
    res = tunnel(env, env.rd(), "--", "redis-cli", "get", "greeting")
    assert res.stdout.strip() == "hello", res.stderr
    res = tunnel(env, env.rd(), "--", "redis-cli", "set", "greeting", "bye")
    assert "NOPERM" in res.stdout + res.stderr
    # --write makes it readwrite.
    res = tunnel(env, env.rd(), "--write", "--", "redis-cli", "set", "greeting", "bye")
    assert res.stdout.strip() == "OK", res.stdout + res.stderr


def test_the_clients_exit_code_comes_back(applied: Env) -> None:
    res = tunnel(applied, applied.pg(), "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", "select nonsense")
    assert res.returncode == 1
    assert "nonsense" in res.stderr
    res = tunnel(applied, applied.pg(), "--", "sh", "-c", "exit 7")
    assert res.returncode == 7


def test_the_temporary_user_exists_during_the_session_and_is_gone_after(applied: Env, lab: Lab) -> None:
    env = applied
    for instance, node, query in (
        (env.pg(), "lab-1", ["psql", "-XAtc", "select current_user, rolvaliduntil is not null from pg_roles "
                                              "where rolname = current_user"]),
        (env.my(), "lab-2", ["mariadb", "-N", "-e", "select substring_index(current_user(), '@', 1)"]),
        (env.rd(), "lab-1", ["redis-cli", "client", "info"]),
    ):  # fmt: skip
        res = tunnel(env, instance, "--", *query)
        assert res.returncode == 0, res.stderr
        user = re.sub(r".* user=(\S+) .*", r"\1", res.stdout).split("|")[0].strip()
        assert re.fullmatch(rf"svs_{instance}_[0-9a-f]{{6}}", user), res.stdout
        if instance == env.pg():
            assert res.stdout.strip().endswith("|t")  # PostgreSQL enforces the expiry (VALID UNTIL)
        assert user not in session_users(lab, node)
    # While a session is open, the node (engine and registry) has it; `plan` keeps it (not expired).
    res = tunnel(env, env.pg(), "--", sys.executable, "-c", "import subprocess, sys;"
                 f"sys.stdout.write(subprocess.run(['ssh', '-F', '{lab.ssh_config}', 'lab-1', "
                 "\"sudo -n runuser -u postgres -- psql -XAtc \\\"select rolname from pg_roles where rolname "
                 "like 'svs%'\\\"; sudo -n grep -c session. /var/lib/svcctl/registry.json\"], "
                 "capture_output=True, text=True).stdout)")  # fmt: skip
    assert re.search(rf"svs_{env.pg()}_[0-9a-f]{{6}}", res.stdout), res.stdout + res.stderr
    assert session_users(lab, "lab-1", env.pg()) == ""  # that user, and any other of this instance, is gone


def test_ps_during_the_session_shows_no_password(applied: Env) -> None:
    env = applied
    for instance in (env.pg(), env.my(), env.rd()):
        password = binding_password(KEY, env.app(), instance, 0).reveal()
        res = tunnel(env, instance, "--app", env.app(), "--", "ps", "-eo", "args")
        assert res.returncode == 0, res.stderr
        assert "svcctl" in res.stdout and "tunnel" in res.stdout  # ps did see svcctl's own command line
        assert password not in res.stdout
        assert password not in res.stderr  # nor is it printed without --show-password
    res = tunnel(env, env.pg(), "--app", env.app(), "--show-password", "--", "true")
    assert binding_password(KEY, env.app(), env.pg(), 0).reveal() in res.stderr


# Run by svcctl as the tunnel's client: every process's command line (the password the client was given must be in
# none), and svcctl's (its parent's) children with theirs, as JSON.
SCAN = """
import json, os
password = os.environ.get("PGPASSWORD") or os.environ["REDISCLI_AUTH"]
svcctl, scanned, hits, children = os.getppid(), 0, [], []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\\0")
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    scanned += 1
    if any(password in a for a in args):
        hits.append(pid)
    if ppid == svcctl:
        children.append([int(pid), args])
print(json.dumps({"scanned": scanned, "hits": hits, "children": children, "password_length": len(password)}))
"""


def ssh_children(pid: int) -> list[int]:
    """The pids of `pid`'s ssh children."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        name, rest = stat.split("(", 1)[1].rsplit(")", 1)
        if name == "ssh" and int(rest.split()[1]) == pid:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """Whether `pid` has exited (waiting a bounded while: a process needs a moment to die, nothing is timed)."""
    for _ in range(100):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("via", ["auto", "paramiko"])
@pytest.mark.parametrize("login", ["binding", "temporary"])
def test_no_command_line_holds_the_password_while_the_tunnel_is_open(applied: Env, via: str, login: str) -> None:
    env = applied
    who = ("--app", env.app()) if login == "binding" else ()
    for instance in (env.pg(), env.rd()):
        res = tunnel(env, instance, *who, "--via", via, "--", sys.executable, "-c", SCAN)
        assert res.returncode == 0, res.stdout + res.stderr
        found = json.loads(res.stdout)
        assert found["scanned"] > 10 and found["password_length"] >= 20, found
        assert found["hits"] == [], found  # not svcctl's, not ssh's, not the client's own
        masters = [(pid, args) for pid, args in found["children"] if Path(args[0]).name == "ssh"]
        if via == "auto":  # the default is OpenSSH: one master, strict, svcctl's child, gone when svcctl is
            assert len(masters) == 1, found["children"]
            pid, args = masters[0]
            assert "ControlMaster=yes" in args and "StrictHostKeyChecking=yes" in args and "-N" in args, args
            assert gone(pid)
        else:
            assert masters == [], found["children"]


def _free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


class OpenTunnel:
    """`svcctl tunnel ARGS` with no command: it stays open until a signal. A thread reads its stderr, so
    waiting for the ready line has a timeout instead of blocking on a read that may never return."""

    def __init__(self, env: Env, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*SVCCTL, "tunnel", *args], cwd=env.path, env={**os.environ, "SVCCTL_KEY": TEST_KEY},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._ready_or_gone = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "ready" in line:
                self._ready_or_gone.set()
        self._ready_or_gone.set()  # svcctl exited without getting ready: wait_ready says so at once

    def wait_ready(self, timeout: float = 120) -> dict[str, str]:
        """The connection details printed before the ready line; the process is killed if none comes in time."""
        if not self._ready_or_gone.wait(timeout) or not any("ready" in line for line in self.lines):
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(
                f"svcctl tunnel printed no ready line within {timeout:g} s (exit {self.proc.returncode}):\n"
                + "".join(self.lines)
            )
        fields = (line.strip().partition(":") for line in self.lines if line.startswith("  "))
        return {key: value.strip() for key, _, value in fields}

    def close(self, sig: int = signal.SIGINT) -> int:
        """Send `sig` (SIGINT: Ctrl-C) and return the exit code."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        self._reader.join(10)
        return rc


def idle_sessions(lab: Lab, user: str) -> list[str]:
    """The backend pids of `user`'s sessions on lab-1's PostgreSQL that are connected and waiting for input."""
    assert re.fullmatch(r"svs_[a-z0-9]+_[0-9a-f]{6}", user), user  # safe to quote into the query
    sql = f"select pid from pg_stat_activity where usename = '{user}' and state = 'idle' order by pid"
    return lab.ssh("lab-1", f'sudo -n runuser -u postgres -- psql -XAtc "{sql}"').stdout.split()


def test_ctrl_c_closes_the_tunnel_frees_the_port_and_drops_the_user(
    applied: Env, lab: Lab, private_loopback: str
) -> None:
    env = applied
    opened = OpenTunnel(env, env.pg(), "--bind", private_loopback, "--show-password")
    try:
        details = opened.wait_ready()
    except BaseException:
        opened.close(signal.SIGKILL)
        raise
    # the first free port from 10000 on an address nothing else uses: known in advance
    assert (details["host"], details["port"]) == (private_loopback, "10000"), details
    user = details["user"]
    masters = ssh_children(opened.proc.pid)
    try:
        assert len(masters) == 1  # the default forwarder: OpenSSH, svcctl's child
        assert user in session_users(lab, "lab-1", env.pg())
        assert not _free(10000, private_loopback)
        # Two clients connected at once through the one tunnel: each runs a query and then waits for more
        # input, so both stay connected until the server has shown both sessions open at the same time.
        pg_env = {**os.environ, "PGHOST": private_loopback, "PGPORT": "10000", "PGUSER": user,
                  "PGDATABASE": env.pg(), "PGPASSWORD": details["password"], "PGCONNECT_TIMEOUT": "30"}  # fmt: skip
        clients = [
            subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"], env=pg_env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]  # fmt: skip
        try:
            for client in clients:
                assert client.stdin is not None
                client.stdin.write("select pg_backend_pid();\n")
                client.stdin.flush()
            seen: list[str] = []
            for _ in range(240):  # a bound for a wait, not a measurement: connecting takes well under a second
                seen = idle_sessions(lab, user)
                if len(seen) == 2 or any(c.poll() is not None for c in clients):
                    break
                time.sleep(0.25)
        finally:
            results = [c.communicate(timeout=60) for c in clients]  # closes stdin: each client ends
        assert [c.returncode for c in clients] == [0, 0], results
        assert len(seen) == 2, f"the server never had both sessions at once: {seen}, {results}"
        assert {out.strip() for out, _ in results} == set(seen)  # and they were these two clients'
    finally:
        rc = opened.close()
    assert rc == 0, "".join(opened.lines)
    assert _free(10000, private_loopback)
    assert all(gone(pid) for pid in masters)
    assert user not in session_users(lab, "lab-1", env.pg())


def test_a_busy_port_is_a_clear_error(applied: Env, lab: Lab) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = tunnel(applied, applied.pg(), "--port", str(port), "--", "true")
    assert res.returncode == 1
    assert f"local port {port}" in res.stderr and "--port" in res.stderr
    assert "Traceback" not in res.stderr
    assert session_users(lab, "lab-1", applied.pg()) == ""  # nothing was created on the node


def test_a_changed_host_key_is_refused(applied: Env, lab: Lab, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"lab-2,{lab.hosts['lab-2']} {kind} {blob}\n")
    env = applied
    original = (env.path / "svcctl.yaml").read_text()
    try:
        env.write(body(env), lab2_extra=f"\n    known_hosts: {wrong}")
        res = tunnel(env, env.my(), "--", "true")  # the OpenSSH master connects first, and refuses it
        own = tunnel(env, env.my(), "--via", "paramiko", "--", "true")  # svcctl's own session refuses it
    finally:
        (env.path / "svcctl.yaml").write_text(original)
    assert res.returncode == 1
    assert f"the host key of node lab-2 does not match the one pinned in {wrong}" in res.stderr, res.stderr
    assert own.returncode == 1
    assert "CHANGED" in own.stderr and "lab-2" in own.stderr, own.stderr
    assert "Traceback" not in res.stderr + own.stderr


def test_errors_are_one_paragraph_without_traceback(applied: Env, tmp_path: Path) -> None:
    env = applied
    fresh = make_env(tmp_path, secrets.token_hex(3))
    fresh.write(f"instances:\n  {fresh.pg()}: {{plan: pg-small, node: lab-1}}\n")
    results = {
        "no instance 'nosuch'": tunnel(env, "nosuch", "--", "true"),
        "not installed": tunnel(env, env.pg(), "--", "no-such-client-xyz"),
        "svcctl apply": tunnel(fresh, fresh.pg(), "--", "true"),
    }
    for expected, res in results.items():
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr and 'File "' not in res.stderr, res.stderr
        # one paragraph: the error is the last thing printed, on one line
        errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and res.stderr.endswith(errors[0] + "\n"), res.stderr
        assert expected in errors[0], res.stderr


def test_a_killed_tunnels_user_is_kept_while_unexpired_then_planned_and_applied_away(applied: Env, lab: Lab) -> None:
    env = applied
    opened = OpenTunnel(env, env.pg())
    masters: list[int] = []
    try:
        user = opened.wait_ready()["user"]
        masters = ssh_children(opened.proc.pid)
    finally:
        opened.close(signal.SIGKILL)  # as a crash would: no cleanup at all
    assert len(masters) == 1 and all(gone(pid) for pid in masters)  # no ssh outlives svcctl, even then
    assert user in session_users(lab, "lab-1", env.pg())
    session_id = user.rsplit("_", 1)[1]
    address = f"session.{env.pg()}.{session_id}"

    # Unexpired: a managed session the plan keeps (a live tunnel's user is never deleted under it).
    res = env.run("plan", ".", "--detailed-exitcode", "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert address not in res.stdout

    # Expired (its recorded expiry moved into the past): plan deletes it, apply drops the user.
    edit = (
        "import json; p = '/var/lib/svcctl/registry.json'; d = json.load(open(p)); "
        f"d['objects']['{address}']['attrs']['expires_at'] = '2000-01-01T00:00:00+00:00'; "
        "json.dump(d, open(p, 'w'))"
    )
    lab.ssh("lab-1", f'sudo -n python3 -c "{edit}"')
    res = env.run("plan", ".", "--detailed-exitcode", "--no-color")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{address} will be destroyed" in res.stdout or f"# {address}" in res.stdout, res.stdout
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert user not in session_users(lab, "lab-1")
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0


def test_clients_run_without_the_key_in_their_environment(applied: Env, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY)
    show = 'echo "key=${SVCCTL_KEY-unset} file=${SVCCTL_KEY_FILE-unset} user=${PGUSER-unset}"'
    res = applied.run("tunnel", applied.pg(), "--app", applied.app(), "--", "sh", "-c", show,
                      extra_env={"SVCCTL_KEY_FILE": str(key_file)})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"key=unset file=unset user=sv_{applied.app()}_{applied.pg()}_r0"


# Edits one record of a node's registry under its lock (other tests apply to the same nodes), printing the
# record's attrs as they were; argv[1] is JSON {"address": ..., "attrs": {...}} of the attrs to set.
_EDIT_RECORD = """
import fcntl, json, os, sys, tempfile
arg = json.loads(sys.argv[1])
path = "/var/lib/svcctl/registry.json"
with open("/var/lib/svcctl/.registry.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    doc = json.load(open(path))
    record = doc["objects"][arg["address"]]
    print(json.dumps(record["attrs"]))
    record["attrs"] = {**record["attrs"], **arg["attrs"]}
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
"""


def _edit_record(lab: Lab, node: str, address: str, attrs: dict[str, object]) -> dict[str, object]:
    arg = json.dumps({"address": address, "attrs": attrs})
    res = lab.ssh(node, f"sudo -n python3 - {shlex.quote(arg)}", stdin=_EDIT_RECORD)
    before: dict[str, object] = json.loads(res.stdout)
    return before


def test_a_hostile_registry_reaches_no_client_option_file_or_engine(applied: Env, lab: Lab, tmp_path: Path) -> None:
    """A node recording a user or database with a newline (option injection: `pager=`) gets a clear refusal."""
    env = applied
    marker = tmp_path / "pwned"
    inject = f"\n[mysql]\npager=touch {marker}\n"
    binding = f"binding.{env.app()}.{env.my()}"
    before = _edit_record(lab, "lab-2", binding, {"user": f"sv_{env.app()}_{env.my()}_r0{inject}"})
    try:
        res = tunnel(env, env.my(), "--app", env.app(), "--", "mariadb", "-N", "-e", "select 1")
    finally:
        _edit_record(lab, "lab-2", binding, before)
    assert res.returncode == 1, res.stdout + res.stderr
    # the registry passes observe's schema first (svcctl.drivers.reported), which names the record and field
    refused = f'node lab-2 reported the registry entry "{binding}" that svcctl refuses: attrs: attribute "user"'
    assert refused in res.stderr
    assert "Traceback" not in res.stderr and "\x1b" not in res.stderr

    instance = f"instance.{env.my()}"
    before = _edit_record(lab, "lab-2", instance, {"database": f"{env.my()}{inject}"})
    try:
        res = tunnel(env, env.my(), "--", "mariadb", "-N", "-e", "select 1")
    finally:
        _edit_record(lab, "lab-2", instance, before)
    assert res.returncode == 1, res.stdout + res.stderr
    refused = f'node lab-2 reported the registry entry "{instance}" that svcctl refuses: attrs: attribute "database"'
    assert refused in res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()  # no client ran a pager
    assert f"svs_{env.my()}_" not in session_users(lab, "lab-2")  # refused before any temporary user was made
    # and the restored registry works as before
    res = tunnel(env, env.my(), "--app", env.app(), "--", "mariadb", "-N", "-e", "select 1")
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr
