"""The redis driver without a host: parse() on recorded snippet output, desired(), ports and secrets.

Each observe_recordings/redis/*.json case holds what the snippet really printed (on a lab host, or on the
controller for "not installed"), the key its passwords derive from, and the exact resources parse() must
return.  Cases are data, as pyinfra keeps its fact tests.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.base import DesiredContext
from svcctl.drivers.redis.driver import DRIVER, READONLY_RULES, READWRITE_RULES, bind_of, major_of, memory_mb, role_of
from svcctl.model.loader import load_environment
from svcctl.model.spec import Environment
from svcctl.secrets import Secret, derive_password
from svcctl.state import Kind, Resource, State

RECORDINGS = Path(__file__).parent / "observe_recordings" / "redis"
CASES = sorted(RECORDINGS.glob("*.json"))
REPO = Path(__file__).resolve().parents[2]


def load(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(case.read_text())
    return data


def password_source(key: bytes) -> Any:
    return lambda purpose: derive_password(key, purpose)


def dumped(resources: list[Resource]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", include={"kind", "name", "node", "engine", "attrs"}) for r in resources]


def test_there_are_recordings_of_every_situation() -> None:
    assert [c.stem for c in CASES] == [
        "installed_no_instances",
        "instance_with_bindings",
        "not_installed",
        "rotation_drift_and_foreign_objects",
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_parse_gives_exactly_the_recorded_resources(case: Path) -> None:
    data = load(case)
    got = DRIVER.parse(data["node"], data["raw"], password_source(bytes.fromhex(data["key_hex"])))
    assert dumped(got) == data["expected"]
    assert all(r.managed and r.recorded is None for r in got)  # ownership is the caller's business
    State.of(got)  # addresses are unique


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_no_verifier_leaves_the_driver(case: Path) -> None:
    data = load(case)
    got = json.dumps(dumped(DRIVER.parse(data["node"], data["raw"], password_source(bytes.fromhex(data["key_hex"])))))
    hashes = [h for inst in data["raw"]["instances"].values() for u in inst["users"] for h in u["hashes"]]
    assert [h for h in hashes if h in got] == []


def test_the_snippet_prints_no_verifier_but_those_of_svcctl_users() -> None:
    for case in CASES:
        for inst in load(case)["raw"]["instances"].values():
            for user in inst["users"]:
                assert user["hashes"] == [] or user["name"].startswith("sv_"), (case.stem, user["name"])
    drift = load(RECORDINGS / "rotation_drift_and_foreign_objects.json")
    assert "legacy-secret-must-not-leak" not in json.dumps(drift)
    assert "requirepass" not in drift["raw"]["instances"]["legacy"]["config"]


def test_another_key_makes_every_binding_stale() -> None:
    data = load(RECORDINGS / "instance_with_bindings.json")
    got = DRIVER.parse(data["node"], data["raw"], password_source(bytes(32)))
    assert {r.name: r.attrs["credentials"] for r in got if r.kind is Kind.BINDING} == {
        "ro-app.rec-cache": "stale",
        "stale-app.rec-cache": "stale",
        "web.rec-cache": "stale",
    }


def test_parse_asks_only_for_the_passwords_of_svcctl_users() -> None:
    data = load(RECORDINGS / "rotation_drift_and_foreign_objects.json")
    asked: list[str] = []

    def password_for(purpose: str) -> Secret:
        asked.append(purpose)
        return derive_password(bytes.fromhex(data["key_hex"]), purpose)

    DRIVER.parse(data["node"], data["raw"], password_for)
    assert sorted(asked) == [
        "binding/ro-app/rec-cache/0",
        "binding/stale-app/rec-cache/0",
        "binding/web/rec-cache/0",
        "binding/web/rec-cache/1",
    ]


@pytest.mark.parametrize(
    ("value", "mb"),
    [(None, 0), ("0", 0), ("32mb", 32), ("1gb", 1024), ("1g", 953.674), ("67108864", 64), ("100000000", 95.367),
     ("512KB", 0.5)],
)  # fmt: skip
def test_memory_settings_in_mib(value: str | None, mb: float) -> None:
    assert memory_mb(value) == mb
    assert isinstance(memory_mb(value), int) == float(mb).is_integer()


@pytest.mark.parametrize(
    ("package", "major"), [("5:7.0.15-1~deb12u10", "7"), ("7.2.4-1", "7"), ("6:6.0.16-1", "6"), (None, None)]
)
def test_major_version_of_the_package(package: str | None, major: str | None) -> None:
    assert major_of(package) == major


def test_roles_are_svcctl_rules_exactly_or_else_the_rules_themselves() -> None:
    assert role_of(list(READWRITE_RULES)) == "readwrite"
    assert role_of(list(READONLY_RULES)) == "readonly"
    assert role_of(["~*", "&*", "+@all", "-@dangerous"]) == "~* &* +@all -@dangerous"  # what ACL SAVE writes back
    assert role_of([]) == ""


# --- desired ---------------------------------------------------------------------------------------------

LAB = load_environment(REPO / "examples" / "lab")


def env_with(instances: dict[str, str], bindings: list[dict[str, Any]]) -> Environment:
    """Two redis nodes, the lab's plans, and these instances (name -> plan)."""
    return Environment.model_validate(
        {
            "nodes": {n: {"host": n, "engines": ["redis", "postgres"]} for n in ("db-1", "db-2")},
            "services": {"redis": {"engine": "redis", "versions": ["7"]}, "pg": {"engine": "postgres",
                                                                               "versions": ["15"]}},
            "plans": {"cache-64": {"service": "redis", "memory_mb": 64, "eviction": "allkeys-lru", "connections": 50},
                      "cache-8": {"service": "redis", "memory_mb": 8}, "pg-small": {"service": "pg"}},
            "instances": {name: {"plan": plan} for name, plan in instances.items()},
            "apps": {"web": {"manifest": "m.yml"}, "jobs": {"manifest": "j.yml"}},
            "bindings": bindings,
        }
    )  # fmt: skip


def instance(name: str, node: str, port: int, **attrs: Any) -> Resource:
    return Resource(kind=Kind.INSTANCE, name=name, node=node, engine="redis", attrs={"port": port, **attrs})


def test_desired_for_the_lab_example() -> None:
    # The lab's ssh_config (HostName 10.211.37.12) exists only with a lab; say the address in the node instead.
    lab2 = LAB.nodes["lab-2"].model_copy(update={"host": "10.211.37.12", "ssh_config": None})
    env = LAB.model_copy(update={"nodes": {**LAB.nodes, "lab-2": lab2}})
    placement = {"orders-db": "lab-1", "catalog-db": "lab-2", "sessions": "lab-2"}
    got = DRIVER.desired(DesiredContext(env=env, placement=placement, observed=State()))
    assert dumped(got) == [
        {
            "kind": "instance",
            "name": "sessions",
            "node": "lab-2",
            "engine": "redis",
            "attrs": {"engine": "redis", "major_version": "7", "port": 6380, "memory_mb": 64,
                      "eviction": "allkeys-lru", "connections": 50, "bind": ["127.0.0.1", "-::1", "10.211.37.12"],
                      "running": True, "enabled": True},
        },
        {
            "kind": "binding",
            "name": "web.sessions",
            "node": "lab-2",
            "engine": "redis",
            "attrs": {"engine": "redis", "role": "readwrite", "rotation": 0, "user": "sv_web_sessions_r0",
                      "credentials": "current"},
        },
        {"kind": "engine", "name": "lab-2.redis", "node": "lab-2", "engine": "redis",
         "attrs": {"installed": True, "version": "7", "installed_by": "svcctl"}},
    ]  # fmt: skip


def test_desired_keeps_ports_and_allocates_the_lowest_free_ones_by_name() -> None:
    env = env_with(
        {"alpha": "cache-8", "beta": "cache-8", "gamma": "cache-8", "delta": "cache-64", "pg-one": "pg-small"},
        [{"app": "web", "instance": "gamma", "role": "readonly", "rotation": 3}, {"app": "jobs", "instance": "beta"},
         {"app": "web", "instance": "pg-one"}],
    )  # fmt: skip
    placement = {"alpha": "db-1", "beta": "db-1", "gamma": "db-1", "delta": "db-2", "pg-one": "db-1"}
    observed = State.of(
        [
            instance("gamma", "db-1", 6381),  # exists: keeps its port
            instance("legacy", "db-1", 6380),  # not svcctl's, but its port is taken
            instance("delta", "db-1", 6385),  # seen on another node than it is placed on: not its port there
            Resource(kind=Kind.INSTANCE, name="pg-two", node="db-1", engine="postgres", attrs={"port": 6382}),
        ]
    )
    got = DRIVER.desired(DesiredContext(env=env, placement=placement, observed=observed))
    assert {r.name: (r.node, r.attrs["port"]) for r in got if r.kind is Kind.INSTANCE} == {
        "alpha": ("db-1", 6382),
        "beta": ("db-1", 6383),
        "gamma": ("db-1", 6381),
        "delta": ("db-2", 6380),
    }
    assert {r.address: r.attrs for r in got if r.kind is not Kind.INSTANCE} == {
        "binding.web.gamma": {"engine": "redis", "role": "readonly", "rotation": 3, "user": "sv_web_gamma_r3",
                              "credentials": "current"},
        "binding.jobs.beta": {"engine": "redis", "role": "readwrite", "rotation": 0, "user": "sv_jobs_beta_r0",
                              "credentials": "current"},
        "engine.db-1.redis": {"installed": True, "version": "7", "installed_by": "svcctl"},
        "engine.db-2.redis": {"installed": True, "version": "7", "installed_by": "svcctl"},
    }  # fmt: skip
    got_again = DRIVER.desired(DesiredContext(env=env, placement=placement, observed=observed))
    assert got_again == got


def test_an_instance_deleted_outside_svcctl_comes_back_on_its_recorded_port() -> None:
    env = env_with({"alpha": "cache-8", "beta": "cache-8"}, [])
    missing = Resource(kind=Kind.INSTANCE, name="beta", node="db-1", engine="redis", attrs={"missing": True},
                       recorded={"engine": "redis", "port": 6380})  # fmt: skip
    placement = {"alpha": "db-1", "beta": "db-1"}
    got = DRIVER.desired(DesiredContext(env=env, placement=placement, observed=State.of([missing])))
    assert {r.name: r.attrs["port"] for r in got if r.kind is Kind.INSTANCE} == {"alpha": 6381, "beta": 6380}


def test_a_plan_without_connections_leaves_maxclients_to_redis() -> None:
    env = env_with({"small": "cache-8"}, [])
    [inst, _engine] = DRIVER.desired(DesiredContext(env=env, placement={"small": "db-2"}, observed=State()))
    assert inst.attrs == {"engine": "redis", "major_version": "7", "port": 6380, "memory_mb": 8,
                          "eviction": "noeviction", "connections": None, "bind": ["127.0.0.1", "-::1"],
                          "running": True, "enabled": True}  # fmt: skip


def test_an_instance_on_a_node_with_client_networks_binds_the_nodes_address_too() -> None:
    env = env_with({"small": "cache-8"}, [])
    nodes = {"db-1": env.nodes["db-1"].model_copy(update={"host": "192.0.2.7", "client_networks": ["192.0.2.0/24"]}),
             "db-2": env.nodes["db-2"].model_copy(update={"client_networks": ["192.0.2.0/24"]})}  # fmt: skip
    env = env.model_copy(update={"nodes": nodes})
    for node, bind in (("db-1", ["127.0.0.1", "-::1", "192.0.2.7"]), ("db-2", ["127.0.0.1", "-::1", "0.0.0.0"])):
        [inst, _engine] = DRIVER.desired(DesiredContext(env=env, placement={"small": node}, observed=State()))
        assert inst.attrs["bind"] == bind  # db-2 is known by name only: every IPv4 address


def test_redis_6_binds_loopback_without_the_optional_prefix_it_does_not_know() -> None:
    """Redis 6 (Debian 11) refuses `-::1` ("Name or service not known") and does not start."""
    node = env_with({"small": "cache-8"}, []).nodes["db-1"]
    assert bind_of("db-1", node, "6") == ["127.0.0.1", "::1"]
    assert bind_of("db-1", node, "7") == bind_of("db-1", node, "8") == ["127.0.0.1", "-::1"]
    assert bind_of("db-1", node) == ["127.0.0.1", "-::1"]


def test_desired_matches_what_parse_reports_for_the_recorded_instance() -> None:
    """The attrs desired() gives are the ones parse() reports once applied: same names, same types."""
    data = load(RECORDINGS / "instance_with_bindings.json")
    env = env_with({"rec-cache": "cache-8"}, [{"app": "web", "instance": "rec-cache"}])
    env = env.model_copy(update={"plans": {**env.plans, "cache-8": env.plans["cache-64"].model_copy(
        update={"memory_mb": 32, "connections": 40})}})  # fmt: skip
    observed = State.of(DRIVER.parse("db-2", data["raw"], password_source(bytes.fromhex(data["key_hex"]))))
    want = DRIVER.desired(DesiredContext(env=env, placement={"rec-cache": "db-2"}, observed=observed))
    for r in want:
        if r.kind is Kind.ENGINE:  # installed, and no record (a recording has no registry): not svcctl's doing
            assert r.attrs.pop("installed_by") == "existing"
        assert observed.get(r.address) == r, r.address


# --- secrets -----------------------------------------------------------------------------------------------

KEY = bytes(range(32))


def test_secrets_for_instances_and_bindings() -> None:
    pw = password_source(KEY)
    inst = instance("sessions", "db-1", 6380)
    binding = Resource(kind=Kind.BINDING, name="web.sessions", node="db-1", engine="redis", attrs={"rotation": 2})
    old = Resource(kind=Kind.BINDING, name="web.sessions~r1", node="db-1", engine="redis", attrs={"rotation": 1})
    foreign = Resource(kind=Kind.BINDING, name="sessions:alice", node="db-1", engine="redis", attrs={})
    missing = Resource(kind=Kind.BINDING, name="web.sessions", node="db-1", engine="redis", attrs={"missing": True})
    engine = Resource(kind=Kind.ENGINE, name="db-1.redis", node="db-1", engine="redis")
    admin = derive_password(KEY, "instance/sessions/admin")
    assert DRIVER.secrets_for(inst, pw) == {"admin_password": admin}
    assert DRIVER.secrets_for(binding, pw) == {
        "password": derive_password(KEY, "binding/web/sessions/2"),
        "admin_password": admin,
    }
    assert DRIVER.secrets_for(old, pw) == {
        "password": derive_password(KEY, "binding/web/sessions/1"),
        "admin_password": admin,
    }
    assert DRIVER.secrets_for(foreign, pw) == {"admin_password": admin}
    assert DRIVER.secrets_for(missing, pw) == {"admin_password": admin}
    assert DRIVER.secrets_for(engine, pw) == {}


def test_the_snippet_defines_only_observe_redis_units_redis_and_private_helpers() -> None:
    tree = ast.parse(DRIVER.snippet())
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assigned = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    assert [n for n in names if n.startswith("observe_")] == ["observe_redis"]
    assert [n for n in names if n.startswith("units_")] == ["units_redis"]
    assert all(n.startswith("_redis_") for n in names if n not in ("observe_redis", "units_redis"))
    assert all(n.startswith("_REDIS_") for n in assigned)
