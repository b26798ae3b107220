"""Damage done behind svcctl's back on the lab: plan shows each case as drift, apply repairs it.

One environment (PostgreSQL and Redis on lab-1, MariaDB on lab-2) is applied once for the module; each
test damages it the way an operator or an accident would, checks the JSON plan names the damaged object
and attribute with cause "drift", applies, and checks the next plan is empty and the object works again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, password, plan_json
from tests.e2e.envs import Env, make_env


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    token = secrets.token_hex(3)
    e = make_env(tmp_path_factory.mktemp("damage"), token)
    (e.path / "apps").mkdir()
    e.write(
        f"instances:\n"
        f"  {e.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"  {e.my()}: {{plan: mysql-small, protect: false}}\n"
        f"  {e.rd()}: {{plan: cache-16, node: lab-1, protect: false}}\n"
        f"apps:\n  {e.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n"
        f"  - {{app: {e.app()}, instance: {e.pg()}}}\n"
        f"  - {{app: {e.app()}, instance: {e.my()}, role: readonly}}\n"
        f"  - {{app: {e.app()}, instance: {e.rd()}}}\n"
    )
    res = apply(e)
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        yield e
    finally:
        lab.ssh("lab-1", "sudo systemctl start postgresql@15-main", check=False)
        e.write(f"apps:\n  {e.app()}: {{manifest: apps/manifest.yml, format: cf}}\n")
        res = apply(e, "--allow-destroy")
        assert res.returncode == 0, res.stdout + res.stderr


def user(env: Env, instance: str) -> str:
    return f"sv_{env.app()}_{instance}_r0"


def drift_of(env: Env) -> dict[str, dict[str, Any]]:
    """The plan's changes by address; every one of them must be drift, and the plan must want an apply."""
    code, doc = plan_json(env)
    assert code == 2 and doc["errors"] == [], doc
    changes = {c["address"]: c for c in doc["changes"]}
    assert sorted(doc["drift"]) == sorted(changes), doc  # nothing but drift: the YAML did not change
    assert (doc["summary"]["drift"], doc["summary"]["config"]) == (len(changes), 0)
    assert env.run("plan", ".", "--drift-exitcode").returncode == 2  # a scheduled check: drift
    return changes


def attr(change: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in change["attributes"] if a["name"] == name)
    return found


def repair(env: Env) -> None:
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete!" in res.stdout
    assert_converged(env)


def psql_as_binding(lab: Lab, env: Env, sql: str) -> str:
    res = lab.ssh(
        "lab-1",
        f"read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -h 127.0.0.1 -U {user(env, env.pg())} -d {env.pg()} "
        f'-c "{sql}"',
        check=False,
        stdin=password(f"binding/{env.app()}/{env.pg()}/0") + "\n",
    )
    return (res.stdout + res.stderr).strip()


def mariadb_as_binding(lab: Lab, env: Env, sql: str) -> str:
    res = lab.ssh(
        "lab-2",
        f"read -r MYSQL_PWD; export MYSQL_PWD; mariadb -N -B -h 127.0.0.1 -u {user(env, env.my())} {env.my()} "
        f'-e "{sql}"',
        check=False,
        stdin=password(f"binding/{env.app()}/{env.my()}/0") + "\n",
    )
    return (res.stdout + res.stderr).strip()


def redis_as_binding(lab: Lab, env: Env, port: int, *command: str) -> str:
    res = lab.ssh(
        "lab-1",
        f"read -r REDISCLI_AUTH; export REDISCLI_AUTH; redis-cli --no-auth-warning -p {port} "
        f"--user {user(env, env.rd())} {' '.join(command)}",
        check=False,
        stdin=password(f"binding/{env.app()}/{env.rd()}/0") + "\n",
    )
    return (res.stdout + res.stderr).strip()


def test_a_yaml_change_not_applied_yet_is_no_drift(env: Env) -> None:
    yaml = env.path / "svcctl.yaml"
    applied = yaml.read_text()
    assert env.run("plan", ".", "--drift-exitcode").returncode == 0
    edited = f"  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
    assert edited in applied
    yaml.write_text(applied.replace(edited, edited.replace("protect: false", "protect: true")))
    try:
        code, doc = plan_json(env)
        assert code == 2 and doc["drift"] == [] and doc["summary"]["drift"] == 0, doc
        assert doc["summary"]["config"] == len(doc["changes"]) == 1, doc
        assert env.run("plan", ".", "--drift-exitcode").returncode == 3  # a change, but none of it drift
    finally:
        yaml.write_text(applied)
    assert env.run("plan", ".", "--drift-exitcode").returncode == 0


def test_a_dropped_binding_user_is_recreated(lab: Lab, env: Env) -> None:
    name = user(env, env.pg())
    lab.ssh("lab-1", f'sudo -u postgres psql -XAtq -d {env.pg()} -c "DROP OWNED BY {name}" -c "DROP ROLE {name}"')
    assert "authentication failed" in psql_as_binding(lab, env, "select 1")

    changes = drift_of(env)
    address = f"binding.{env.app()}.{env.pg()}"
    assert sorted(changes) == [address]
    change = changes[address]
    assert (change["action"], change["cause"], change["reason"]) == ("create", "drift", "deleted outside svcctl")
    assert (attr(change, "user")["new"], attr(change, "user")["cause"]) == (name, "drift")

    repair(env)
    assert psql_as_binding(lab, env, "create table t (x int); insert into t values (1); select count(*) from t") == "1"


def test_a_changed_password_is_put_back(lab: Lab, env: Env) -> None:
    name = user(env, env.my())
    for host in ("127.0.0.1", "localhost"):
        lab.ssh("lab-2", f"sudo mariadb -e \"ALTER USER '{name}'@'{host}' IDENTIFIED BY 'changed-by-hand'\"")
    assert "Access denied" in mariadb_as_binding(lab, env, "select 1")

    changes = drift_of(env)
    address = f"binding.{env.app()}.{env.my()}"
    assert sorted(changes) == [address]
    change = changes[address]
    assert (change["action"], change["cause"]) == ("update", "drift")
    assert [a["name"] for a in change["attributes"]] == ["credentials"]
    assert attr(change, "credentials") == {**attr(change, "credentials"), "cause": "drift", "sensitive": True}

    repair(env)
    assert mariadb_as_binding(lab, env, "select current_user()") == f"{name}@localhost"  # 127.0.0.1, resolved


def test_a_stopped_engine_is_started(lab: Lab, env: Env) -> None:
    try:
        lab.ssh("lab-1", "sudo systemctl stop postgresql@15-main")
        # Every change is drift (drift_of checks). With the cluster down its databases and roles cannot be
        # read: they are planned as created if missing once it runs, saying why; the engine change starts it.
        changes = drift_of(env)
        hidden = changes[f"instance.{env.pg()}"]
        assert (hidden["action"], hidden["reason"]) == (
            "create",
            "not visible while engine.lab-1.postgres is not running; apply starts it, then creates this only if "
            "missing",
        )
        address = "engine.lab-1.postgres"
        assert address in changes
        change = changes[address]
        assert (change["action"], change["cause"]) == ("update", "drift")
        assert {a["name"]: (a["old"], a["new"], a["cause"]) for a in change["attributes"]}["running"] == (
            False,
            True,
            "drift",
        )
        repair(env)
    finally:
        lab.ssh("lab-1", "sudo systemctl start postgresql@15-main", check=False)
    assert lab.ssh("lab-1", "systemctl is-active postgresql@15-main").stdout.strip() == "active"
    assert psql_as_binding(lab, env, "select session_user") == user(env, env.pg())


def test_a_dropped_database_is_recreated(lab: Lab, env: Env) -> None:
    lab.ssh("lab-2", f'sudo mariadb -e "DROP DATABASE {env.my()}"')

    changes = drift_of(env)
    address = f"instance.{env.my()}"
    assert address in changes
    change = changes[address]
    assert (change["action"], change["cause"], change["reason"]) == ("create", "drift", "deleted outside svcctl")
    assert (attr(change, "database")["new"], attr(change, "database")["cause"]) == (env.my(), "drift")

    repair(env)
    assert mariadb_as_binding(lab, env, "select database()") == env.my()


def test_an_edited_redis_config_is_rewritten(lab: Lab, env: Env) -> None:
    conf = f"/etc/redis/redis-{env.rd()}.conf"
    port = int(lab.ssh("lab-1", f"sudo sed -n 's/^port //p' {conf}").stdout)
    lab.ssh("lab-1", f"sudo sed -i 's/^maxmemory 16mb$/maxmemory 48mb/' {conf}")
    lab.ssh("lab-1", f"sudo systemctl restart redis-server@{env.rd()}")
    assert lab.ssh("lab-1", f"sudo grep -c '^maxmemory 48mb$' {conf}").stdout.strip() == "1"

    changes = drift_of(env)
    address = f"instance.{env.rd()}"
    assert sorted(changes) == [address]
    change = changes[address]
    assert (change["action"], change["cause"], change["restarts_service"]) == ("update", "drift", True)
    assert [(a["name"], a["old"], a["new"], a["cause"]) for a in change["attributes"]] == [
        ("memory_mb", 48, 16, "drift")
    ]

    repair(env)
    assert lab.ssh("lab-1", f"sudo grep -c '^maxmemory 16mb$' {conf}").stdout.strip() == "1"
    assert redis_as_binding(lab, env, port, "set", "k", "v") == "OK"
    assert redis_as_binding(lab, env, port, "get", "k") == "v"
