"""The objects modules hold a small, fixed number of connections whatever the number of objects (issue #15).

A first apply of 125 PostgreSQL instances, each bound, failed with `too many clients already`: the module
opened one connection per database and kept each open to the end. The modules are loaded as Ansible ships
them (the host library as `ansible.module_utils.svcctl_hostlib`), with the engine's client library faked:
pure logic, no server.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible.module_utils
import pytest

from svcctl.apply.runner import write_host_programs
from tests.conftest import REPO

LIBRARY = REPO / "svcctl" / "drivers"


@pytest.fixture(scope="module")
def module_utils(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`ansible.module_utils.svcctl_hostlib`, written as an apply run writes it."""
    programs = write_host_programs(tmp_path_factory.mktemp("run"))
    path: list[str] = ansible.module_utils.__path__
    path.append(str(programs / "module_utils"))
    yield
    path.remove(str(programs / "module_utils"))


def load(engine: str) -> Any:
    file = LIBRARY / engine / "ansible" / "library" / f"svcctl_{engine}_objects.py"
    spec = importlib.util.spec_from_file_location(f"svcctl_{engine}_objects_under_test", file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Server:
    """Counts the connections a client library opened and still holds."""

    def __init__(self) -> None:
        self.open: list[str] = []
        self.peak = 0
        self.opened = 0

    def connect(self, database: str) -> FakeConnection:
        self.open.append(database)
        self.opened += 1
        self.peak = max(self.peak, len(self.open))
        return FakeConnection(self, database)


class FakeConnection:
    def __init__(self, server: Server, database: str) -> None:
        self.server, self.database, self.autocommit, self.closed = server, database, False, False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True
        self.server.open.remove(self.database)

    def cursor(self) -> FakeCursor:
        assert not self.closed, f"a closed connection to {self.database} was used"
        return FakeCursor()


class FakeCursor:
    description = None

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, statement: object, args: object = None) -> None:
        return None


def test_postgres_connections_are_the_maintenance_one_and_the_database_worked_in(module_utils: None) -> None:
    mod = load("postgres")
    server = Server()
    conns = mod.Connections(server.connect)
    for i in range(30):
        conns.get("postgres")
        first = conns.get(f"db{i}")
        assert conns.get(f"db{i}") is first  # reused while it works in that database
        conns.get("postgres")
        assert sorted(server.open) == sorted({"postgres", f"db{i}"})
    assert (server.peak, conns.peak) == (2, 2)
    assert server.opened == 31  # the maintenance connection once, each database once
    conns.close("db29")  # before DROP DATABASE
    assert server.open == ["postgres"]
    conns.close_all()
    assert server.open == []


def test_postgres_objects_route_every_statement_through_the_bound(
    module_utils: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects' own queries on 30 databases (a binding's schema grants each) never hold more than two."""
    server = Server()
    fake = types.ModuleType("psycopg2")
    fake.connect = lambda **kw: server.connect(kw["dbname"])  # type: ignore[attr-defined]
    fake.sql = types.SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "psycopg2", fake)
    monkeypatch.setitem(sys.modules, "psycopg2.sql", fake.sql)
    mod = load("postgres")
    module = types.SimpleNamespace(check_mode=False, params={"login_unix_socket": "/run/postgresql", "port": 5432})
    objects = mod.Objects(module)
    for i in range(30):
        objects.query("SELECT 1")
        objects.query("SELECT 1", None, f"db{i}")
        objects.act("x", "SELECT 1", f"db{i}")
    assert server.peak == 2
    objects.close_all()
    assert server.open == []


def test_mysql_objects_hold_one_connection(module_utils: None, monkeypatch: pytest.MonkeyPatch) -> None:
    server = Server()
    fake = types.ModuleType("pymysql")
    fake.connect = lambda **kw: server.connect("server")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pymysql", fake)
    mod = load("mysql")
    objects = mod.Objects(types.SimpleNamespace(check_mode=False, params={"login_unix_socket": "/run/mysqld.sock"}))
    for _ in range(30):
        objects.query("SELECT 1")
        objects.act("x", "SELECT 1")
    assert (server.peak, server.opened) == (1, 1)
    objects.close()
    assert server.open == []


def test_the_library_is_found_where_ansible_ships_it(module_utils: None) -> None:
    assert Path(load("postgres").__file__).parent.name == "library"
