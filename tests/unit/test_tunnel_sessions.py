"""Tunnel pieces without a host: client command lines and environments, session naming, lifting and desired state.

A node's registry is untrusted: hostile users, databases and ports it records are refused before any client,
option file, environment variable or helper request is built from them.
"""

from __future__ import annotations

import datetime
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import sessions
from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.secrets import Secret, binding_password
from svcctl.state import Kind, Resource, State
from svcctl.tunnel.access import Located, binding_login
from svcctl.tunnel.clients import Connection, option_file_text, option_value, prepare, run_client

REPO = Path(__file__).resolve().parents[2]
KEY = b"k" * 32

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
    assert f'password="{PASSWORD.reveal()}"' in text and "port=10000" in text and "protocol=tcp" in text
    assert '[mysql]\ndatabase="orders_db"' in text
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


# -- what the node's registry says is untrusted -------------------------------------------------------------

HOSTILE_IDENTIFIERS = [
    "svs_a\npager=/bin/sh -c id",
    "svs_a\r\n[client]",
    "orders_db\n[mysql]\npager=touch /tmp/x",
    "a b",
    'x"y',
    "x#y",
    "x;drop",
    "x`y",
    "Orders",
    "1abc",
    "",
    "a" * 64,
    "svs_a\x1b[2J",
    "svs_a\u202e",
    "{{ lookup('pipe', 'id') }}",
]


@pytest.mark.parametrize("bad", HOSTILE_IDENTIFIERS)
def test_a_connection_refuses_a_hostile_user_or_database(bad: str) -> None:
    with pytest.raises(SvcctlError, match="unsafe connection"):
        Connection("mysql", "127.0.0.1", 10000, bad, PASSWORD, "orders_db")
    with pytest.raises(SvcctlError, match="unsafe connection"):
        Connection("mysql", "127.0.0.1", 10000, "svs_a", PASSWORD, bad)


@pytest.mark.parametrize(
    ("host", "port", "engine"),
    [("127.0.0.1\nuser=root", 10000, "mysql"), ("a b", 10000, "mysql"), ("127.0.0.1", 0, "mysql"),
     ("127.0.0.1", 65536, "mysql"), ("127.0.0.1", True, "mysql"), ("127.0.0.1", "10000", "mysql"),
     ("127.0.0.1", 10000, "oracle")],
)  # fmt: skip
def test_a_connection_refuses_a_bad_host_port_or_engine(host: str, port: Any, engine: str) -> None:
    with pytest.raises(SvcctlError, match="unsafe connection"):
        Connection(engine, host, port, "svs_a", PASSWORD, None)


def test_a_connection_refuses_a_password_with_a_newline() -> None:
    with pytest.raises(SvcctlError, match="password holds a control character"):
        Connection("postgres", "::1", 10000, "svs_a", Secret("pw\npager=sh"), None)


def test_option_values_are_quoted_and_refuse_control_characters() -> None:
    assert option_value("plain") == '"plain"'
    assert option_value('a"b\\c') == '"a\\"b\\\\c"'
    for bad in ("a\nb", "a\rb", "a\x00b", "a\x1bb", "a\u2028b"):
        with pytest.raises(SvcctlError, match="control character"):
            option_value(bad)


def _parsed(text: str, tmp_path: Path) -> list[str]:
    """The options the MariaDB client itself reads from an option file (my_print_defaults)."""
    path = tmp_path / "my.cnf"
    path.write_text(text)
    res = subprocess.run(["my_print_defaults", f"--defaults-file={path}", "client", "mysql"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return res.stdout.splitlines()


@pytest.mark.skipif(shutil.which("my_print_defaults") is None, reason="needs the MariaDB client")
def test_the_mariadb_client_reads_back_exactly_the_quoted_values(tmp_path: Path) -> None:
    tricky = ["pa#ss \"wo\\rd' ", " lead", "trail ", "\\n not a newline", "x # not a comment", "\\"]
    for value in tricky:
        assert _parsed(f"[client]\nuser={option_value(value)}\n", tmp_path) == [f"--user={value}"]
    text = option_file_text(conn("mysql"), interactive=True)
    assert _parsed(text, tmp_path) == [
        "--host=127.0.0.1", "--port=10000", "--protocol=tcp", "--user=svs_orders_db_a1b2c3",
        f"--password={PASSWORD.reveal()}", "--database=orders_db",
    ]  # fmt: skip


def test_no_option_file_is_left_when_the_connection_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SvcctlError):
        prepare(Connection("mysql", "127.0.0.1", 10000, "svs_a\npager=sh", PASSWORD, None), ["mariadb"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_client_runs_without_the_key_in_its_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SVCCTL_KEY", "a" * 64)
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("SVCCTL_TEST_KEPT", "yes")
    out = tmp_path / "env.json"
    code = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"
    assert run_client(conn("postgres"), [sys.executable, "-c", code, str(out)]) == 0
    child = json.loads(out.read_text())
    assert "SVCCTL_KEY" not in child and "SVCCTL_KEY_FILE" not in child
    assert child["SVCCTL_TEST_KEPT"] == "yes" and child["PGUSER"] == "svs_orders_db_a1b2c3"  # the rest is kept


def _located(engine: str, instance: str, attrs: Any, binding: Any = None) -> Located:
    records: dict[str, Any] = {f"instance.{instance}": {"attrs": attrs, "environment": "lab"}}
    if binding is not None:
        records[f"binding.web.{instance}"] = {"attrs": binding, "environment": "lab"}
    return Located(instance=instance, engine=engine, node="lab-1", records=records)


def test_recorded_database_and_port_are_used_when_sound() -> None:
    assert _located("postgres", "orders-db", {"database": "orders_db"}).database == "orders_db"
    assert _located("postgres", "orders-db", {"database": "orders_db"}).remote_port == 5432
    assert _located("redis", "sessions", {"port": 6380}).remote_port == 6380
    assert _located("redis", "sessions", {"port": 6380}).database is None
    assert _located("postgres", "orders-db", "not a mapping").database is None


@pytest.mark.parametrize("bad", [*HOSTILE_IDENTIFIERS[:-3], 42, ["orders_db"]])
def test_a_hostile_recorded_database_is_refused_naming_the_node(bad: Any) -> None:
    located = _located("mysql", "catalog-db", {"database": bad})
    if bad == "":
        assert located.database is None
        return
    with pytest.raises(SvcctlError, match=r"^node lab-1: its registry records an unusable database"):
        _ = located.database


@pytest.mark.parametrize("bad", ["6380", "6380\n", True, 0, 70000, -1, 6380.0, None])
def test_a_hostile_recorded_redis_port_is_refused(bad: Any) -> None:
    with pytest.raises(SvcctlError, match="unusable port"):
        _ = _located("redis", "sessions", {"port": bad}).remote_port


LAB = load_environment(REPO / "examples" / "lab")


def test_a_binding_logs_in_as_the_user_svcctl_created() -> None:
    located = _located("postgres", "orders-db", {"database": "orders_db"},
                       {"user": "sv_web_orders_db_r2", "rotation": 2, "role": "readwrite"})  # fmt: skip
    user, password = binding_login(LAB, located, "web", KEY)
    assert user == "sv_web_orders_db_r2"
    assert password == binding_password(KEY, "web", "orders-db", 2)


@pytest.mark.parametrize(
    "record",
    [
        {"user": "sv_web_orders_db_r0\npager=/bin/sh", "rotation": 0},
        {"user": "root", "rotation": 0},
        {"user": "sv_web_orders_db_r1", "rotation": 0},
        {"user": "sv_web_orders_db_r0", "rotation": "0"},
        {"user": "sv_web_orders_db_r0", "rotation": True},
        {"user": "sv_web_orders_db_r0", "rotation": -1},
        {"user": "sv_web_orders_db_r0"},
        {"user": ["sv_web_orders_db_r0"], "rotation": 0},
        "not a mapping",
    ],
)
def test_a_hostile_recorded_binding_user_is_refused(record: Any) -> None:
    records = {"instance.orders-db": {"attrs": {}}, "binding.web.orders-db": {"attrs": record}}
    located = Located(instance="orders-db", engine="postgres", node="lab-1", records=records)
    with pytest.raises(SvcctlError, match=r"^node lab-1: its registry records an unusable (user|rotation)"):
        binding_login(LAB, located, "web", KEY)


@pytest.mark.parametrize(
    "change",
    [{"database": "orders_db\npager=sh"}, {"database": "x'; drop role postgres; --"}, {"instance": "../../etc"},
     {"session_id": "a1b2c3\n"}, {"role": "superuser"}, {"engine": "sqlite"}, {"environment": "a\nb"},
     {"expiry": "tomorrow"}, {"expiry": "2030-01-01T00:00:00'; drop"}],
)  # fmt: skip
def test_the_helper_request_refuses_hostile_fields(change: dict[str, str]) -> None:
    fields = {"engine": "postgres", "instance": "orders-db", "session_id": "a1b2c3", "database": "orders_db",
              "role": "readonly", "expiry": "2030-01-01T00:00:00+00:00", "environment": "staging"}  # fmt: skip
    sessions.request(**fields, password=PASSWORD)  # the sound request passes
    with pytest.raises(SvcctlError, match="refusing to ask for temporary user"):
        sessions.request(**{**fields, **change}, password=PASSWORD)


def test_a_session_user_with_a_trailing_newline_is_not_lifted() -> None:
    live = [Resource(kind=Kind.BINDING, name="lab-1.postgres:x", node="lab-1", engine="postgres",
                     attrs={"engine": "postgres", "user": "svs_orders_db_a1b2c3\n"})]  # fmt: skip
    assert sessions.lift(live) == live
