"""The host-side session helper's decisions without a host: request checks, identifier and literal quoting, SQL.

svcctl-session.py runs on the nodes (stdlib, Python 3.9+); it is built here exactly as it is shipped
(`session_program`: the host library, the shared header and footer, each engine's `session.py`) and run as a
module without its entry point, so what is tested is what is shipped.  The e2e tunnel tests run it against real engines.
"""

from __future__ import annotations

import io
import json
from types import ModuleType
from typing import Any

import pytest

from svcctl.drivers import sessions
from svcctl.drivers.hostprograms import session_program
from svcctl.secrets import Secret

PASSWORD = Secret("s3cr3t-derived-password_0123456789")
ADMIN = Secret("adm1n-derived-password_9876543210")


def _load() -> ModuleType:
    module = ModuleType("session_host")
    exec(compile(session_program(), "svcctl-session.py", "exec"), module.__dict__)  # main() runs only as __main__
    return module


host = _load()


def _request(kind: str = "postgres", **change: Any) -> dict[str, Any]:
    """A request exactly as `svcctl tunnel` sends it for engine `kind`, with fields replaced by `change`."""
    engine = kind
    body = sessions.request(engine=engine, instance="orders-db", session_id="a1b2c3",
                            database="" if engine == "redis" else "orders_db", role="readonly",
                            expiry="2030-01-01T00:00:00+00:00", environment="staging", password=PASSWORD,
                            admin_password=ADMIN if engine == "redis" else None)  # fmt: skip
    doc: dict[str, Any] = json.loads(body)
    for key, value in change.items():
        if key in ("role", "expires_at"):
            doc["attrs"] = {**doc["attrs"], key: value}
        else:
            doc[key] = value
    return doc


def _playbook_drop(engine: str) -> dict[str, Any]:
    """A drop request as tasks/session.yml sends it (no attrs, no password; admin password maybe empty)."""
    return {"engine": engine, "instance": "orders-db", "database": "orders_db", "user": "svs_orders_db_a1b2c3",
            "address": "session.orders-db.a1b2c3", "environment": "staging", "admin_password": ""}  # fmt: skip


# -- the request ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres", "mysql", "redis"])
def test_the_controllers_requests_pass(engine: str) -> None:
    req = host.checked_request(_request(engine), "create")
    assert req["user"] == "svs_orders_db_a1b2c3" and req["attrs"]["role"] == "readonly"
    assert req["password"] == PASSWORD.reveal()
    assert host.checked_request(_request(engine), "drop")["address"] == "session.orders-db.a1b2c3"
    assert host.checked_request(_playbook_drop(engine), "drop")["user"] == "svs_orders_db_a1b2c3"


@pytest.mark.parametrize(
    "change",
    [
        {"user": "svs_orders_db_a1b2c3\npager=sh"},
        {"user": "svs_orders_db_a1b2c3\n"},
        {"user": "svs_other_a1b2c3"},
        {"user": 'x"; DROP ROLE postgres; --'},
        {"database": "orders_db; DROP DATABASE orders_db"},
        {"database": 'orders_db"'},
        {"database": "orders_db\n"},
        {"database": "Orders_DB"},
        {"database": None},
        {"instance": "../../etc/passwd"},
        {"instance": "orders-db\n"},
        {"address": "session.orders-db.a1b2c3\n"},
        {"address": "session.other.a1b2c3"},
        {"address": "binding.web.orders-db"},
        {"engine": "sqlite"},
        {"role": "superuser"},
        {"expires_at": "2030-01-01T00:00:00+00:00' SUPERUSER --"},
        {"expires_at": "infinity"},
        {"environment": "staging\n"},
        {"password": None},
        {"password": "pw\npager=sh"},
    ],
)
def test_hostile_or_broken_requests_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(host.BadRequest) as refused:
        host.checked_request(_request("postgres", **change), "create")
    assert PASSWORD.reveal() not in str(refused.value)
    assert "pw\npager" not in str(refused.value)  # a password is never echoed back


def test_a_request_that_is_not_an_object_is_refused() -> None:
    for doc in ([], "x", None, 1):
        with pytest.raises(host.BadRequest):
            host.checked_request(doc, "drop")


def test_a_redis_create_needs_the_admin_password() -> None:
    with pytest.raises(host.BadRequest, match="admin password"):
        host.checked_request(_request("redis", admin_password=""), "create")


# -- quoting -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "a b", 'a"b', "a`b", "a'b", "a\nb", "A", "1a", "a" * 64, "a-b", None, 1])
def test_identifiers_are_checked_before_they_are_quoted(bad: Any) -> None:
    for quote in (host.ident, host.pg_ident, host.my_ident):
        with pytest.raises(host.BadRequest):
            quote(bad)


def test_identifiers_are_quoted_the_engines_way() -> None:
    assert host.pg_ident("orders_db") == '"orders_db"'
    assert host.my_ident("orders_db") == "`orders_db`"
    assert host.ident("_" + "a" * 62) == "_" + "a" * 62


def test_postgres_literals_mean_their_value_under_either_string_setting() -> None:
    assert host.pg_literal("plain") == "'plain'"
    assert host.pg_literal("it's") == "'it''s'"
    assert host.pg_literal("a\\b'c") == "E'a\\\\b''c'"
    for bad in ("a\nb", "a\x00b", "a\x1bb", "a\x7fb", None):
        with pytest.raises(host.BadRequest):
            host.pg_literal(bad)


def test_mariadb_literals_double_quotes_and_refuse_backslashes() -> None:
    assert host.my_literal("it's") == "'it''s'"
    for bad in ("a\\b", "a\nb", "a\x00b", None):
        with pytest.raises(host.BadRequest):
            host.my_literal(bad)


# -- the SQL: the same statements as before, every value quoted ------------------------------------------------


def test_postgres_readonly_session_sql() -> None:
    steps = host.pg_create_sql("svs_orders_db_a1b2c3", "orders_db", "SCRAM-SHA-256$4096:c2FsdA==$a:b",
                               "2030-01-01T00:00:00+00:00", "readonly")  # fmt: skip
    assert steps == [  # one psql in the database (roles are the cluster's): each psql costs the node 50 ms
        ("orders_db",
         "DO $svcctl$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'svcctl_clients') "
         'THEN CREATE ROLE "svcctl_clients" NOLOGIN; END IF; END $svcctl$;\n'
         "CREATE ROLE \"svs_orders_db_a1b2c3\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b' "
         "VALID UNTIL '2030-01-01T00:00:00+00:00' CONNECTION LIMIT 16;\n"
         'GRANT CONNECT, TEMPORARY ON DATABASE "orders_db" TO "svs_orders_db_a1b2c3";\n'
         'GRANT "svcctl_clients" TO "svs_orders_db_a1b2c3";\n'  # pg_hba.conf: svcctl's rules name only its members
         'GRANT USAGE ON SCHEMA public TO "svs_orders_db_a1b2c3";\n'
         'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "svs_orders_db_a1b2c3";\n'
         'GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO "svs_orders_db_a1b2c3";\n'),
    ]  # fmt: skip


def test_postgres_readwrite_session_sql() -> None:
    [(database, sql)] = host.pg_create_sql("svs_db_a1b2c3", "db", "v", "2030-01-01T00:00:00+00:00", "readwrite")
    assert database == "postgres"
    assert sql.endswith('GRANT "db_owner" TO "svs_db_a1b2c3";\nALTER ROLE "svs_db_a1b2c3" SET role = \'db_owner\';\n')


def test_postgres_drop_sql() -> None:
    assert host.pg_find_sql("svs_db_a1b2c3", "db") == (
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'svs_db_a1b2c3') || ' ' || "
        "(SELECT count(*) FROM pg_database WHERE datname = 'db');"
    )
    assert host.pg_terminate_sql("svs_db_a1b2c3") == (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'svs_db_a1b2c3';"
    )
    assert host.pg_reassign_sql("svs_db_a1b2c3", "db") == (
        'REASSIGN OWNED BY "svs_db_a1b2c3" TO "db_owner";\nDROP OWNED BY "svs_db_a1b2c3";\n'
    )
    assert host.pg_drop_role_sql("svs_db_a1b2c3") == 'DROP ROLE IF EXISTS "svs_db_a1b2c3";'


def test_mariadb_session_sql() -> None:
    digest = host.mysql_native_hash("password")
    assert digest == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"  # MariaDB's PASSWORD('password')
    sql = host.my_create_sql("svs_db_a1b2c3", "db", digest, "readonly")
    assert sql == (
        f"CREATE USER 'svs_db_a1b2c3'@'127.0.0.1' IDENTIFIED BY PASSWORD '{digest}' WITH MAX_USER_CONNECTIONS 16;\n"
        "GRANT SELECT, SHOW VIEW ON `db`.* TO 'svs_db_a1b2c3'@'127.0.0.1';\n"
        f"CREATE USER 'svs_db_a1b2c3'@'localhost' IDENTIFIED BY PASSWORD '{digest}' WITH MAX_USER_CONNECTIONS 16;\n"
        "GRANT SELECT, SHOW VIEW ON `db`.* TO 'svs_db_a1b2c3'@'localhost';\n"
    )
    with pytest.raises(host.BadRequest):
        host.my_create_sql("svs_db_a1b2c3", "db", "*' OR 1 --", "readonly")
    assert host.my_find_sql("svs_db_a1b2c3") == "SELECT count(*) FROM mysql.user WHERE User = 'svs_db_a1b2c3';"
    assert host.my_drop_sql("svs_db_a1b2c3", ["12", "7; DROP USER root", "x"]) == (
        "KILL CONNECTION 12;\nDROP USER IF EXISTS 'svs_db_a1b2c3'@'127.0.0.1', 'svs_db_a1b2c3'@'localhost';\n"
    )


def test_redis_acl_line() -> None:
    line = host.acl_line("svs_cache_a1b2c3", "password", "readonly")
    assert line == (
        "user svs_cache_a1b2c3 on #5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8 "
        "~* &* -@all +@read +@connection -@admin -@dangerous"
    )
    with pytest.raises(host.BadRequest):
        host.acl_line("svs_x on nopass +@all", "password", "readonly")


# -- the script as it runs -----------------------------------------------------------------------------------


def test_a_hostile_request_changes_nothing_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(host, "change_one", lambda *a, **k: pytest.fail("the registry was changed"))
    monkeypatch.setattr(host, "run", lambda *a, **k: pytest.fail("an engine command ran"))
    req = _request("postgres", user="svs_orders_db_a1b2c3\npager=/bin/sh")
    monkeypatch.setattr("sys.argv", ["svcctl-session.py", "create"])
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(req)))
    with pytest.raises(SystemExit) as exit_:
        host.main()
    assert exit_.value.code == 1
    assert "refusing user" in capsys.readouterr().err


def test_the_postgres_port_is_the_newest_main_clusters_from_plain_pg_lsclusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recorded `pg_lsclusters --no-header` (Debian 11's has no JSON without libjson-perl)."""
    listing = (
        "13 main 5433 online postgres /var/lib/postgresql/13/main /var/log/postgresql/postgresql-13-main.log\n"
        "13 other 5434 down postgres /var/lib/postgresql/13/other /var/log/postgresql/postgresql-13-other.log\n"
        "17 main 5432 online postgres /var/lib/postgresql/17/main /var/log/postgresql/postgresql-17-main.log\n"
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(host, "_PG_PORT", [])
    monkeypatch.setattr(host, "run", lambda argv, **_: calls.append(argv) or listing)
    assert host.pg_port() == "5432" and host.pg_port() == "5432"
    assert calls == [["pg_lsclusters", "--no-header"]]  # asked once
