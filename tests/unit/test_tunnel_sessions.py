"""Tunnel pieces without a host: client command lines and environments, session naming, lifting and desired state."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

from svcctl.drivers import sessions
from svcctl.secrets import Secret
from svcctl.state import Kind, Resource, State
from svcctl.tunnel.clients import Connection, prepare

PASSWORD = Secret("s3cr3t-derived-password_0123456789")


def conn(engine: str, database: str | None = "orders_db") -> Connection:
    return Connection(engine, "127.0.0.1", 10000, "svs_orders_db_a1b2c3", PASSWORD, database)


def test_postgres_clients_get_pg_variables_and_no_password_in_argv() -> None:
    p = prepare(conn("postgres"), ["psql", "-c", "select 1"])
    assert p.argv == ["psql", "-c", "select 1"]
    assert p.env["PGHOST"] == "127.0.0.1" and p.env["PGPORT"] == "10000"
    assert p.env["PGUSER"] == "svs_orders_db_a1b2c3" and p.env["PGDATABASE"] == "orders_db"
    assert p.env["PGPASSWORD"] == PASSWORD.reveal()
    assert not p.cleanup


def test_mysql_clients_get_a_private_option_file_as_their_first_argument(tmp_path: Path) -> None:
    p = prepare(conn("mysql"), ["/usr/bin/mariadb", "-N", "-e", "select 1"], tmp_path)
    assert p.argv[0] == "/usr/bin/mariadb" and p.argv[2:] == ["-N", "-e", "select 1"]
    assert p.argv[1].startswith("--defaults-extra-file=")
    path = Path(p.argv[1].split("=", 1)[1])
    assert p.cleanup == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert f"password={PASSWORD.reveal()}" in text and "port=10000" in text and "protocol=tcp" in text
    assert "[mysql]\ndatabase=orders_db" in text
    assert all(PASSWORD.reveal() not in a for a in p.argv)
    dump = prepare(conn("mysql"), ["mysqldump", "orders_db"], tmp_path)
    assert "database=" not in Path(dump.argv[1].split("=", 1)[1]).read_text()  # mysqldump rejects it


def test_other_commands_on_mysql_get_the_option_file_path_in_the_environment(tmp_path: Path) -> None:
    p = prepare(conn("mysql"), ["sh", "-c", "exit 7"], tmp_path)
    assert p.argv == ["sh", "-c", "exit 7"]
    assert Path(p.env["SVCCTL_MYSQL_DEFAULTS_FILE"]) == p.cleanup[0]


def test_redis_cli_gets_host_port_user_and_the_password_in_rediscli_auth() -> None:
    p = prepare(conn("redis", None), ["redis-cli", "get", "k"])
    assert p.argv == ["redis-cli", "-h", "127.0.0.1", "-p", "10000", "--user", "svs_orders_db_a1b2c3", "get", "k"]
    assert p.env["REDISCLI_AUTH"] == PASSWORD.reveal()
    assert "SVCCTL_DATABASE" not in p.env


def test_the_connection_description_hides_the_password_unless_asked() -> None:
    assert PASSWORD.reveal() not in "\n".join(conn("postgres").describe())
    assert PASSWORD.reveal() in "\n".join(conn("postgres").describe(show_password=True))


def test_session_names_addresses_and_expiry() -> None:
    assert sessions.user_name("orders-db", "a1b2c3") == "svs_orders_db_a1b2c3"
    assert sessions.address("orders-db", "a1b2c3") == "session.orders-db.a1b2c3"
    assert len(sessions.new_id()) == 6
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    expiry = sessions.expires_at(datetime.timedelta(hours=1), now)
    assert expiry == "2030-01-01T01:00:00+00:00"
    assert not sessions.is_expired({"expires_at": expiry}, now)
    assert sessions.is_expired({"expires_at": expiry}, now + datetime.timedelta(hours=2))
    assert sessions.is_expired({}, now)


def test_the_helper_request_carries_secrets_only_in_its_body() -> None:
    body = sessions.request(engine="redis", instance="cache", session_id="a1b2c3", database="", role="readonly",
                            expiry="2030-01-01T00:00:00+00:00", environment="staging", password=PASSWORD,
                            admin_password=Secret("admin"))  # fmt: skip
    doc = json.loads(body)
    assert doc["address"] == "session.cache.a1b2c3" and doc["user"] == "svs_cache_a1b2c3"
    assert doc["password"] == PASSWORD.reveal() and doc["admin_password"] == "admin"
    assert doc["attrs"] == {"engine": "redis", "user": "svs_cache_a1b2c3", "role": "readonly",
                            "expires_at": "2030-01-01T00:00:00+00:00", "environment": "staging"}  # fmt: skip


def test_session_users_reported_as_unmanaged_bindings_become_sessions() -> None:
    live = [
        Resource(kind=Kind.BINDING, name="lab-1.postgres:svs_orders_db_a1b2c3", node="lab-1", engine="postgres",
                 attrs={"engine": "postgres", "user": "svs_orders_db_a1b2c3"}),
        Resource(kind=Kind.BINDING, name="cache:svs_cache_0f0f0f", node="lab-1", engine="redis",
                 attrs={"engine": "redis", "role": "-@all", "user": "svs_cache_0f0f0f"}),
        Resource(kind=Kind.BINDING, name="lab-1.postgres:alice", node="lab-1", engine="postgres",
                 attrs={"engine": "postgres", "user": "alice"}),
    ]  # fmt: skip
    out = sessions.lift(live)
    assert [r.address for r in out] == [
        "session.orders-db.a1b2c3",
        "session.cache.0f0f0f",
        "binding.lab-1.postgres:alice",
    ]
    assert out[0].attrs == {"engine": "postgres", "user": "svs_orders_db_a1b2c3"}


def _session(expires: str, missing: bool = False) -> Resource:
    recorded = {"engine": "postgres", "user": "svs_db_a1b2c3", "role": "readonly", "expires_at": expires,
                "environment": "e"}  # fmt: skip
    attrs = {"missing": True} if missing else {"engine": "postgres", "user": "svs_db_a1b2c3"}
    res = Resource(kind=Kind.SESSION, name="db.a1b2c3", node="n", engine="postgres", attrs=attrs, recorded=recorded)
    return sessions.with_records([res])[0]


def test_managed_sessions_take_their_recorded_attributes() -> None:
    res = _session("2030-01-01T00:00:00+00:00")
    assert res.attrs["expires_at"] == "2030-01-01T00:00:00+00:00" and res.attrs["role"] == "readonly"
    assert _session("2030-01-01T00:00:00+00:00", missing=True).attrs == {"missing": True}


def test_desired_keeps_live_unexpired_sessions_and_drops_expired_or_missing_ones() -> None:
    from svcctl.model.spec import Environment
    from svcctl.plan.desired import desired_state
    from svcctl.plan.diff import diff

    live, expired = _session("2999-01-01T00:00:00+00:00"), _session("2000-01-01T00:00:00+00:00")
    expired = expired.model_copy(update={"name": "db.0b0b0b"})
    gone = _session("2999-01-01T00:00:00+00:00", missing=True).model_copy(update={"name": "db.0c0c0c"})
    observed = State.of([live, expired, gone])
    desired = desired_state(Environment(), {}, observed)
    assert [r.address for r in desired] == ["session.db.a1b2c3"]
    plan = diff(desired, observed)
    assert sorted((c.action.value, c.address) for c in plan.changes) == [
        ("delete", "session.db.0b0b0b"),
        ("delete", "session.db.0c0c0c"),
    ]
