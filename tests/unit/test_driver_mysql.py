"""The mysql driver without a host: parse() on recorded snippet output (cases as data), desired(), secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.base import DesiredContext
from svcctl.drivers.mysql.driver import DRIVER, major_minor, parse_comment, user_hosts
from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.spec import App, Binding, Environment, Instance, Node, Service, ServicePlan
from svcctl.secrets import Secret, derive_password
from svcctl.state import Kind, State

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).parent / "observe_recordings" / "mysql"


def _cases() -> list[Path]:
    return sorted(CASES.glob("*.json"))


def test_there_are_recordings_of_each_situation() -> None:
    assert [p.stem for p in _cases()] == [
        "client_networks",
        "not_installed",
        "open_to_all",
        "rotation_stale_unmanaged",
        "running_bindings",
        "running_empty",
        "stopped",
        "stopped_with_conf",
    ]


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_parse_gives_exactly_the_expected_resources(path: Path) -> None:
    case = json.loads(path.read_text())
    key = bytes.fromhex(case["key_hex"])
    asked: list[str] = []

    def password_for(purpose: str) -> Secret:
        asked.append(purpose)
        return derive_password(key, purpose)

    parsed = DRIVER.parse(case["node"], case["raw"], password_for)
    got = [r.model_dump(mode="json", exclude={"owner", "claims"}) for r in parsed]
    assert got == case["expected"]
    assert sorted(asked) == sorted(case["purposes_asked"])


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_recordings_carry_verifiers_only_for_svcctl_users(path: Path) -> None:
    raw: dict[str, Any] = json.loads(path.read_text())["raw"]
    for user in raw["users"]:
        assert (user["authentication_string"] is not None) is user["user"].startswith("sv_")
        for grant in user["grants"]:
            assert "PASSWORD" not in grant


def test_a_wrong_key_makes_every_binding_stale() -> None:
    case = json.loads((CASES / "running_bindings.json").read_text())
    other = bytes(32)
    found = DRIVER.parse("lab-2", case["raw"], lambda p: derive_password(other, p))
    bindings = {r.address: r.attrs["credentials"] for r in found if r.kind is Kind.BINDING}
    assert bindings == {"binding.reports.catalog-db": "stale", "binding.web.catalog-db": "stale"}


def _env(networks: list[str] | None = None) -> Environment:
    return Environment(
        nodes={
            "db-1": Node(host="h1", engines=["mysql"], client_networks=networks or []),
            "db-2": Node(host="h2", engines=["postgres"]),
        },
        services={
            "mysql": Service(engine="mysql", versions=["10.11"]),
            "pg": Service(engine="postgres", versions=["15"]),
        },
        plans={
            "m": ServicePlan(service="mysql", storage_mb=512, connections=20),
            "m-free": ServicePlan(service="mysql"),
            "p": ServicePlan(service="pg", storage_mb=512),
        },
        instances={
            "shop-db": Instance(plan="m"),
            "scratch": Instance(plan="m-free"),
            "orders": Instance(plan="p"),
        },
        apps={"web": App(manifest="m.yml"), "bi": App(manifest="m.yml")},
        bindings=[
            Binding(app="web", instance="shop-db", rotation=3),
            Binding(app="bi", instance="shop-db", role="readonly"),
            Binding(app="web", instance="orders"),
        ],
    )


def test_desired_places_engine_instances_and_bindings() -> None:
    ctx = DesiredContext(
        env=_env(), placement={"shop-db": "db-1", "scratch": "db-1", "orders": "db-2"}, observed=State()
    )
    got = [r.model_dump(mode="json", exclude={"owner", "claims"}) for r in DRIVER.desired(ctx)]
    base = {"node": "db-1", "engine": "mysql", "managed": True, "recorded": None}
    assert got == [
        {**base, "kind": "instance", "name": "scratch", "attrs": {
            "engine": "mysql", "major_version": "10.11", "database": "scratch", "connections": None,
            "storage_mb": None}},
        {**base, "kind": "instance", "name": "shop-db", "attrs": {
            "engine": "mysql", "major_version": "10.11", "database": "shop_db", "connections": 20, "storage_mb": 512}},
        {**base, "kind": "binding", "name": "web.shop-db", "attrs": {
            "engine": "mysql", "role": "readwrite", "rotation": 3, "user": "sv_web_shop_db_r3",
            "credentials": "current", "connections": 20, "hosts": ["127.0.0.1", "localhost"]}},
        {**base, "kind": "binding", "name": "bi.shop-db", "attrs": {
            "engine": "mysql", "role": "readonly", "rotation": 0, "user": "sv_bi_shop_db_r0",
            "credentials": "current", "connections": 20, "hosts": ["127.0.0.1", "localhost"]}},
        {**base, "kind": "engine", "name": "db-1.mysql", "attrs": {
            "installed": True, "version": "10.11", "running": True, "enabled": True, "client_networks": [],
            "claimed_networks": [], "bind_address": "127.0.0.1", "installed_by": "svcctl"}},
    ]  # fmt: skip


def test_desired_users_exist_at_each_client_network() -> None:
    env = _env(["10.1.0.0/16", "192.168.7.8/32"])
    ctx = DesiredContext(env=env, placement={"shop-db": "db-1", "scratch": "db-1", "orders": "db-2"}, observed=State())
    by = {r.address: r for r in DRIVER.desired(ctx)}
    assert by["engine.db-1.mysql"].attrs["client_networks"] == ["10.1.0.0/16", "192.168.7.8/32"]
    assert by["binding.web.shop-db"].attrs["hosts"] == [
        "10.1.0.0/255.255.0.0",
        "127.0.0.1",
        "192.168.7.8/255.255.255.255",
        "localhost",
    ]


def test_desired_refuses_ipv6_client_networks_for_mysql() -> None:
    with pytest.raises(SvcctlError, match="IPv4 netmask only"):
        user_hosts(["fd00::/64"])


def test_desired_skips_unplaced_instances_and_their_bindings() -> None:
    ctx = DesiredContext(env=_env(), placement={"orders": "db-2"}, observed=State())
    assert DRIVER.desired(ctx) == []


def test_desired_for_the_lab_example() -> None:
    env = load_environment(REPO / "examples" / "lab" / "svcctl.yaml")
    ctx = DesiredContext(env=env, placement={"orders-db": "lab-1", "catalog-db": "lab-2", "sessions": "lab-1"},
                         observed=State())  # fmt: skip
    got = {r.address: r.attrs for r in DRIVER.desired(ctx)}
    assert got == {
        "instance.catalog-db": {"engine": "mysql", "major_version": "10.11", "database": "catalog_db",
                                "connections": 20, "storage_mb": 512},
        "binding.web.catalog-db": {"engine": "mysql", "role": "readonly", "rotation": 0,
                                   "user": "sv_web_catalog_db_r0", "credentials": "current", "connections": 20,
                                   "hosts": ["10.211.37.0/255.255.255.0", "127.0.0.1", "localhost"]},
        "engine.lab-2.mysql": {"installed": True, "version": "10.11", "running": True, "enabled": True,
                               "client_networks": ["10.211.37.0/24"], "claimed_networks": ["10.211.37.0/24"],
                               "bind_address": "0.0.0.0", "installed_by": "svcctl"},
    }  # fmt: skip


def test_secrets_for_a_binding_is_its_current_rotations_password() -> None:
    key = bytes(range(32))
    ctx = DesiredContext(
        env=_env(), placement={"shop-db": "db-1", "scratch": "db-1", "orders": "db-2"}, observed=State()
    )
    by = {r.address: r for r in DRIVER.desired(ctx)}
    got = DRIVER.secrets_for(by["binding.web.shop-db"], lambda p: derive_password(key, p))
    assert got == {"password": derive_password(key, "binding/web/shop-db/3")}
    assert DRIVER.secrets_for(by["instance.shop-db"], lambda p: derive_password(key, p)) == {}
    assert DRIVER.secrets_for(by["engine.db-1.mysql"], lambda p: derive_password(key, p)) == {}
    old = by["binding.web.shop-db"].model_copy(update={"name": "web.shop-db~r2"})
    assert DRIVER.secrets_for(old, lambda p: derive_password(key, p)) == {}


@pytest.mark.parametrize(
    ("package", "series"), [("1:10.11.19-0+deb12u1", "10.11"), ("1:10.5.23-0+deb11u1", "10.5"), ("11.4.2-1", "11.4")]
)
def test_major_minor(package: str, series: str) -> None:
    assert major_minor(package) == series


@pytest.mark.parametrize(
    ("comment", "parsed"),
    [
        ("svcctl storage_mb=512 connections=20", {"storage_mb": 512, "connections": 20}),
        ("svcctl", {}),
        ("svcctl storage_mb=x other=3", {}),
        ("someone else's comment storage_mb=5", {}),
        (None, {}),
    ],
)
def test_parse_comment(comment: str | None, parsed: dict[str, int]) -> None:
    assert parse_comment(comment) == parsed
