"""`svcctl apply` against the lab: provision, bind, write manifests, verify, and refuse what is unsafe."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from svcctl.apply.lock import CHANGING_WAIT, Holder, locked
from svcctl.hostlib.registry import CHANGING_LOCK
from svcctl.model.loader import load_environment
from svcctl.secrets import binding_password, decode_key
from svcctl.ssh import SshTarget
from tests.conftest import Lab
from tests.e2e.applying import apply, destroy_all
from tests.e2e.envs import TEST_KEY, Env, make_env


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """This test's environment; whatever the test made (in whatever state it stopped) is destroyed afterwards."""
    made = make_env(tmp_path, unique)
    yield made
    destroy_all(made)


def body(env: Env, *, protect: bool = True, with_pg: bool = True, rotation: int = 0) -> str:
    instances = f"  {env.my()}: {{plan: mysql-small}}\n  {env.rd()}: {{plan: cache-16, node: lab-1}}\n"
    bindings = (
        f"  - {{app: {env.app()}, instance: {env.my()}, role: readonly}}\n"
        f"  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )
    if with_pg:
        instances = f"  {env.pg()}: {{plan: pg-small, node: lab-1, protect: {str(protect).lower()}}}\n" + instances
        bindings = f"  - {{app: {env.app()}, instance: {env.pg()}, rotation: {rotation}}}\n" + bindings
    return (
        f"instances:\n{instances}apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n{bindings}"
    )


def vcap(env: Env) -> dict[str, list[dict[str, object]]]:
    manifest = YAML(typ="safe").load((env.path / "apps" / "manifest.yml").read_text())
    return json.loads(manifest["applications"][0]["env"]["VCAP_SERVICES"])  # type: ignore[no-any-return]


def psql_on_node(lab: Lab, user: str, password: str, db: str, sql: str) -> str:
    """Run SQL as a binding user on lab-1, password on stdin (never in argv)."""
    res = lab.ssh(
        "lab-1",
        f'read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -h 127.0.0.1 -U {user} -d {db} -c "{sql}"',
        check=False,
        stdin=password + "\n",
    )
    return res.stdout.strip() + res.stderr.strip()


def test_apply_provisions_binds_writes_manifests_and_converges(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    (env.path / "apps" / "manifest.yml").write_text(
        f"# the app's own manifest\napplications:\n  - name: {env.app()}\n    memory: 256M  # keep\n"
    )
    env.write(body(env, protect=False))

    # No terminal and no --auto-approve: refused, nothing changed.
    res = env.run("apply", ".")
    assert res.returncode == 1
    assert "--auto-approve" in res.stderr
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 2

    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete!" in res.stdout
    key = decode_key(TEST_KEY, "test key")
    passwords = {i: binding_password(key, env.app(), i, 0).reveal() for i in (env.pg(), env.my(), env.rd())}
    for p in passwords.values():
        assert p not in res.stdout and p not in res.stderr

    # Converged: a new plan has nothing to do.
    again = env.run("plan", ".", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes." in again.stdout

    # The manifest: comments and keys kept, credentials for each binding, mode 0600.
    manifest = env.path / "apps" / "manifest.yml"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    text = manifest.read_text()
    assert "# the app's own manifest" in text and "memory: 256M  # keep" in text
    services = vcap(env)
    assert sorted(services) == ["mysql", "postgresql", "redis"]
    pg = services["postgresql"][0]["credentials"]
    assert isinstance(pg, dict)
    assert pg["username"] == f"sv_{env.app()}_{env.pg()}_r0" and pg["password"] == passwords[env.pg()]

    # The credentials work, with least privilege.
    user, db = str(pg["username"]), str(pg["name"])
    assert psql_on_node(lab, user, passwords[env.pg()], db, "create table t (x int); insert into t values (42)") == ""
    assert psql_on_node(lab, user, passwords[env.pg()], db, "select x from t") == "42"
    assert "permission denied" in psql_on_node(lab, user, passwords[env.pg()], "postgres", "create table z (x int)")


def test_a_concurrent_apply_fails_naming_the_lock_holder(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    env.write(body(env))
    loaded = load_environment(env.path)
    targets = [SshTarget.from_node(n, node) for n, node in sorted(loaded.nodes.items())]
    holder = Holder(token=f"test-{env.token}", who="someone@elsewhere", pid=4242)
    with locked(targets, holder=holder):
        res = env.run("apply", ".", "--auto-approve")  # not applying.apply: this lock must be met, not waited out
    assert res.returncode == 1
    assert "locked by someone@elsewhere (pid 4242)" in res.stderr
    assert "Traceback" not in res.stderr
    # The lock was released on the way out: a plan (which needs no lock) and the lock itself work again.
    with locked(targets, holder=Holder(token=f"again-{env.token}", who="me@here", pid=1)):
        pass


def test_an_apply_waits_for_a_module_an_earlier_apply_left_running(lab: Lab, env: Env) -> None:
    """A module whose apply was killed or cut off goes on running on its node: the next apply waits for it (each
    svcctl module holds the changing lock shared while it runs; here a process holds it the same way), and
    one that outlasts the wait refuses the apply, with nothing changed and no lock left behind."""
    (env.path / "apps").mkdir()
    env.write(body(env))
    lab.ssh("lab-1", "sudo mkdir -p -m 0700 /var/lib/svcctl")

    def hold(seconds: int) -> str:  # in the background, its output away from ssh's: ssh returns at once
        return f"sudo nohup flock -s {CHANGING_LOCK} sleep {seconds} </dev/null >/dev/null 2>&1 &"

    lab.ssh("lab-1", hold(CHANGING_WAIT + 20))
    try:
        res = env.run("apply", ".", "--auto-approve")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "lab-1: a change an earlier apply started is still being made there" in res.stderr, res.stderr
        assert "Nothing was changed" in res.stderr and "Traceback" not in res.stdout + res.stderr
        for node in ("lab-1", "lab-2"):  # ours is removed where it waited in vain, released where it was taken
            assert lab.ssh(node, "sudo test -e /var/lib/svcctl/apply.lock", check=False).returncode == 1, node
        assert env.run("plan", ".", "--detailed-exitcode").returncode == 2  # nothing was made
    finally:
        lab.ssh("lab-1", f"sudo pkill -f 'flock -s {CHANGING_LOCK} sleep'", check=False)
    lab.ssh("lab-1", hold(4))  # ends within the wait: the apply waits, then goes on
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0


def test_destroying_needs_protect_false_and_allow_destroy_and_dumps_first(lab: Lab, env: Env) -> None:
    env.write(body(env, protect=True))
    res = apply(env)  # the manifest's directory is missing: refused up front
    assert res.returncode == 1
    assert "does not exist" in res.stderr and "nothing was changed" in res.stderr
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 2
    (env.path / "apps").mkdir()
    assert apply(env).returncode == 0

    # Dropped from the YAML while protected: an error, not a delete.
    env.write(body(env, with_pg=False))
    res = env.run("plan", ".", "--detailed-exitcode")
    assert res.returncode == 1
    assert f"instance.{env.pg()} is protected" in res.stdout

    # protect: false is applied first (registry only), then the removal needs --allow-destroy.
    env.write(body(env, protect=False))
    assert apply(env).returncode == 0
    env.write(body(env, with_pg=False))
    res = apply(env)
    assert res.returncode == 1
    assert "--allow-destroy" in res.stderr
    assert (
        lab.ssh(
            "lab-1", f"sudo -u postgres psql -XAtc \"select 1 from pg_database where datname = '{env.pg()}'\""
        ).stdout.strip()
        == "1"
    )

    res = apply(env, "--allow-destroy")
    assert res.returncode == 0, res.stdout + res.stderr
    dumps = lab.ssh("lab-1", f"sudo ls /var/backups/svcctl/ | grep '^{env.pg()}-'").stdout.split()
    assert len(dumps) == 1
    assert f"lab-1: instance.{env.pg()} dumped to /var/backups/svcctl/{dumps[0]}" in res.stdout  # told where
    assert (
        lab.ssh(
            "lab-1", f"sudo -u postgres psql -XAtc \"select 1 from pg_database where datname = '{env.pg()}'\""
        ).stdout.strip()
        == ""
    )
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0


def pg_admin(lab: Lab, sql: str) -> str:
    """SQL as the postgres superuser on lab-1 (what an operator changing things by hand would do)."""
    return lab.ssh("lab-1", f'sudo -u postgres psql -XAtq -c "{sql}"').stdout.strip()


def test_drift_is_shown_apart_from_config_changes_and_repaired(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    env.write(body(env))
    assert apply(env).returncode == 0
    user = f"sv_{env.app()}_{env.pg()}_r0"

    # Changed behind svcctl's back: a connection limit and a password.
    pg_admin(lab, f"ALTER DATABASE {env.pg()} CONNECTION LIMIT 3")
    pg_admin(lab, f"ALTER ROLE {user} PASSWORD 'changed-by-hand'")
    res = env.run("plan", ".", "--detailed-exitcode", "-o", "json")
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    by_address = {c["address"]: c for c in doc["changes"]}
    assert set(doc["drift"]) == {f"instance.{env.pg()}", f"binding.{env.app()}.{env.pg()}"}
    limit = next(a for a in by_address[f"instance.{env.pg()}"]["attributes"] if a["name"] == "connections")
    assert (limit["old"], limit["new"], limit["cause"]) == (3, 20, "drift")
    cred = next(a for a in by_address[f"binding.{env.app()}.{env.pg()}"]["attributes"] if a["name"] == "credentials")
    assert cred["sensitive"] is True and cred["cause"] == "drift" and cred["old"] is None
    assert "changed-by-hand" not in res.stdout
    text = env.run("plan", ".", "--no-color").stdout
    assert "Objects changed outside svcctl (drift):" in text

    assert apply(env).returncode == 0
    assert pg_admin(lab, f"SELECT datconnlimit FROM pg_database WHERE datname = '{env.pg()}'") == "20"
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0


def test_rotation_keeps_the_old_user_until_the_next_apply(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    env.write(body(env))
    assert apply(env).returncode == 0
    old_user = f"sv_{env.app()}_{env.pg()}_r0"
    new_user = f"sv_{env.app()}_{env.pg()}_r1"

    env.write(body(env, rotation=1))
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    key = decode_key(TEST_KEY, "test key")
    pg = vcap(env)["postgresql"][0]["credentials"]
    assert isinstance(pg, dict)
    assert pg["username"] == new_user
    assert pg["password"] == binding_password(key, env.app(), env.pg(), 1).reveal()
    roles = pg_admin(lab, f"SELECT rolname FROM pg_roles WHERE rolname IN ('{old_user}', '{new_user}') ORDER BY 1")
    assert roles.split() == [old_user, new_user]  # apps still running with the old password keep working

    res = env.run("plan", ".", "--detailed-exitcode", "-o", "json")
    assert res.returncode == 2
    changes = json.loads(res.stdout)["changes"]
    assert [(c["action"], c["address"]) for c in changes] == [("delete", f"binding.{env.app()}.{env.pg()}~r0")]
    assert apply(env).returncode == 0
    assert pg_admin(lab, f"SELECT count(*) FROM pg_roles WHERE rolname = '{old_user}'") == "0"

    # Removing a binding revokes its user and its manifest entry.
    env.write(body(env, rotation=1).replace(f"  - {{app: {env.app()}, instance: {env.pg()}, rotation: 1}}\n", ""))
    assert apply(env).returncode == 0
    assert pg_admin(lab, f"SELECT count(*) FROM pg_roles WHERE rolname = '{new_user}'") == "0"
    assert "postgresql" not in vcap(env)


def test_a_failure_half_way_leaves_manifests_alone_and_the_next_apply_resumes(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    env.write(body(env))
    doc = json.loads(env.run("plan", ".", "-o", "json").stdout)
    redis = next(c for c in doc["changes"] if c["address"] == f"instance.{env.rd()}")
    port = next(a["new"] for a in redis["attributes"] if a["name"] == "port")
    # Something else already listens on the port the new Redis instance is given: its start fails.
    blocker = lab.ssh(
        "lab-1",
        f"nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 & echo $!",
    ).stdout.strip()
    try:
        res = apply(env)
        assert res.returncode == 1
        assert "Apply failed" in res.stdout and "lab-1" in res.stdout
        assert "Traceback" not in res.stdout + res.stderr
        assert not (env.path / "apps" / "manifest.yml").exists()
        assert env.run("plan", ".", "--detailed-exitcode").returncode == 2
    finally:
        lab.ssh("lab-1", f"kill {blocker}", check=False)
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(vcap(env)) == ["mysql", "postgresql", "redis"]
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0
