"""The postgres driver without a host: parse() on recorded snippet output (cases as data), desired(), secrets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.base import DesiredContext
from svcctl.drivers.postgres.driver import DRIVER, hba_rules, listen_addresses, observed_client_networks
from svcctl.model.loader import load_environment
from svcctl.model.spec import Environment
from svcctl.secrets import Secret, derive_password
from svcctl.state import Kind, Resource, State

REPO = Path(__file__).resolve().parents[2]
RECORDINGS = Path(__file__).parent / "observe_recordings" / "postgres"
CASES = sorted(RECORDINGS.glob("*.json"))


def _case(name: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())  # type: ignore[no-any-return]


def _password_for(key: str) -> Any:
    return lambda purpose: derive_password(key.encode(), purpose)


def _dump(resources: list[Resource]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", include={"kind", "name", "node", "engine", "attrs"}) for r in resources]


def test_there_are_recordings_for_every_state_of_the_engine() -> None:
    assert [c.stem for c in CASES] == [
        "installed_stopped",
        "managed_and_foreign",
        "not_installed",
        "running_no_objects",
    ]


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_parse_gives_exactly_the_recorded_expectation(path: Path) -> None:
    case = json.loads(path.read_text())
    assert _dump(DRIVER.parse(case["node"], case["raw"], _password_for(case["key"]))) == case["expected"]


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_no_verifier_leaves_the_driver(path: Path) -> None:
    case = json.loads(path.read_text())
    parsed = json.dumps(_dump(DRIVER.parse(case["node"], case["raw"], _password_for(case["key"]))))
    assert "SCRAM-SHA-256" not in parsed
    assert "verifier" not in parsed


def test_managed_and_foreign_tells_roles_rotations_and_stale_credentials_apart() -> None:
    case = _case("managed_and_foreign")
    by_address = {r.address: r for r in DRIVER.parse(case["node"], case["raw"], _password_for(case["key"]))}
    assert sorted(by_address) == [
        "binding.lab-2.postgres:alice",
        "binding.ops.rec-cat",
        "binding.report.rec-orders",
        "binding.web.rec-orders",
        "binding.web.rec-orders~r0",
        "engine.lab-2.postgres",
        "instance.lab-2.postgres:LegacyShop",
        "instance.legacy-app",
        "instance.rec-cat",
        "instance.rec-orders",
    ]
    assert by_address["binding.web.rec-orders"].attrs == {
        "engine": "postgres",
        "role": "readwrite",
        "rotation": 1,
        "user": "sv_web_rec_orders_r1",
        "credentials": "current",
        "connections": 20,
    }
    assert by_address["binding.web.rec-orders~r0"].attrs["user"] == "sv_web_rec_orders_r0"
    assert by_address["binding.report.rec-orders"].attrs["role"] == "readonly"
    assert by_address["binding.report.rec-orders"].attrs["credentials"] == "stale"  # changed by hand
    assert by_address["binding.ops.rec-cat"].attrs["role"] == "custom"  # CREATE on public granted by hand
    assert by_address["instance.rec-cat"].attrs["connections"] is None  # CONNECTION LIMIT -1
    assert by_address["instance.legacy-app"].attrs["owner"] == "postgres"


def test_with_another_key_every_svcctl_user_is_stale_and_nothing_else_changes() -> None:
    case = _case("managed_and_foreign")
    parsed = _dump(DRIVER.parse(case["node"], case["raw"], _password_for("another-key-of-thirty-two-bytes!")))
    expected = copy.deepcopy(case["expected"])
    for res in expected:
        if "credentials" in res["attrs"]:
            res["attrs"]["credentials"] = "stale"
    assert parsed == expected
    assert sum(1 for r in expected if r["attrs"].get("credentials") == "stale") == 4


def test_a_sv_role_that_cannot_log_in_is_no_binding_user() -> None:
    case = _case("managed_and_foreign")
    raw = copy.deepcopy(case["raw"])
    for role in raw["clusters"][0]["roles"]:
        if role["name"] == "sv_web_rec_orders_r1":
            role["login"] = False
    parsed = {r.address: r for r in DRIVER.parse(case["node"], raw, _password_for(case["key"]))}
    # The newest usable user is then rotation 0, so the diff updates the binding and apply restores LOGIN.
    assert "binding.web.rec-orders~r0" not in parsed
    assert parsed["binding.web.rec-orders"].attrs["user"] == "sv_web_rec_orders_r0"


def test_a_database_whose_owner_lost_the_grants_reads_custom() -> None:
    case = _case("managed_and_foreign")
    raw = copy.deepcopy(case["raw"])
    for db in raw["clusters"][0]["databases"]:
        if db["name"] == "rec_orders":
            db["default_acl"] = []
    parsed = {r.address: r for r in DRIVER.parse(case["node"], raw, _password_for(case["key"]))}
    assert parsed["binding.report.rec-orders"].attrs["role"] == "custom"
    assert parsed["binding.web.rec-orders"].attrs["role"] == "readwrite"


@pytest.mark.parametrize(
    ("listen", "hba", "expected"),
    [
        ("localhost", [["host", "all", "all", "10.0.0.0/8", "scram-sha-256"]], []),
        ("127.0.0.1,::1", [["host", "all", "all", "10.0.0.0/8", "scram-sha-256"]], []),
        ("*", [["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]], ["0.0.0.0/0"]),
        ("*", [["host", "all", "all", "10.1.2.0", "255.255.255.0", "scram-sha-256"]], ["10.1.2.0/24"]),
        ("*", [["hostssl", "all", "all", "samenet", "scram-sha-256"], ["local", "all", "all", "peer"]], ["0.0.0.0/0"]),
        ("10.0.0.5", [["host", "all", "all", "10.0.0.0/24", "trust"]], ["10.0.0.0/24"]),
    ],
)
def test_client_networks_are_what_the_server_admits(listen: str, hba: list[list[str]], expected: list[str]) -> None:
    """Of a whole pg_hba.conf svcctl wrote before it had markers (legacy), every line is svcctl's."""
    legacy = {"settings": {"listen_addresses": listen}, "hba": hba, "hba_block": hba, "hba_legacy": True}
    assert observed_client_networks(legacy) == expected


def test_client_networks_come_from_svcctls_block_only_never_from_the_users_lines() -> None:
    users = [["host", "legacy_orders", "legacy_app", "10.50.0.0/16", "scram-sha-256"]]
    ours = [["local", "all", "postgres", "peer", "map=svcctl"],
            ["host", "all", "+svcctl_clients", "127.0.0.1/32", "scram-sha-256"],
            ["host", "all", "+svcctl_clients", "10.211.37.0/24", "scram-sha-256"]]  # fmt: skip
    listening = {"listen_addresses": "*"}
    assert observed_client_networks({"settings": listening, "hba": users + ours, "hba_block": ours}) == [
        "10.211.37.0/24"
    ]
    # a server the user opened, svcctl's block without networks: svcctl opened nothing
    assert observed_client_networks({"settings": listening, "hba": users + ours[:2], "hba_block": ours[:2]}) == []
    assert observed_client_networks({"settings": listening, "hba": users, "hba_block": None}) == []


@pytest.mark.parametrize(
    ("base", "networks", "expected"),
    [
        ("localhost", [], "localhost"),
        ("localhost", ["10.0.0.0/24"], "*"),
        ("127.0.0.1,::1", ["10.0.0.0/24"], "*"),
        ("*", [], "*"),  # never narrowed: the server's own setting
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["10.0.0.0/24"], "10.0.0.5"),  # it already listens beyond loopback, as its owner chose
    ],
)
def test_listen_addresses_are_widened_never_narrowed(base: str, networks: list[str], expected: str) -> None:
    assert listen_addresses(base, networks) == expected


def test_svcctls_rules_name_only_svcctls_users() -> None:
    assert hba_rules(["10.211.37.0/24"]) == [
        "local all postgres peer map=svcctl",
        "host all +svcctl_clients 127.0.0.1/32 scram-sha-256",
        "host all +svcctl_clients ::1/128 scram-sha-256",
        "host all +svcctl_clients 10.211.37.0/24 scram-sha-256",
    ]


def _lab_env() -> Environment:
    return load_environment(REPO / "examples" / "lab" / "svcctl.yaml")


def test_desired_for_the_lab_example() -> None:
    env = _lab_env()
    ctx = DesiredContext(
        env=env, placement={"orders-db": "lab-1", "catalog-db": "lab-2", "sessions": "lab-1"}, observed=State()
    )
    assert _dump(DRIVER.desired(ctx)) == [
        {
            "kind": "instance",
            "name": "orders-db",
            "node": "lab-1",
            "engine": "postgres",
            "attrs": {
                "engine": "postgres",
                "major_version": "15",
                "database": "orders_db",
                "owner": "orders_db_owner",
                "connections": 20,
                "storage_mb": 512,
            },
        },
        {
            "kind": "binding",
            "name": "web.orders-db",
            "node": "lab-1",
            "engine": "postgres",
            "attrs": {
                "engine": "postgres",
                "role": "readwrite",
                "rotation": 0,
                "user": "sv_web_orders_db_r0",
                "credentials": "current",
                "connections": 20,
            },
        },
        {
            "kind": "engine",
            "name": "lab-1.postgres",
            "node": "lab-1",
            "engine": "postgres",
            "attrs": {
                "installed": True,
                "version": "15",
                "running": True,
                "enabled": True,
                "client_networks": ["10.211.37.0/24"],
                "claimed_networks": ["10.211.37.0/24"],
                "pg_hba": [
                    "local all postgres peer map=svcctl",
                    "host all +svcctl_clients 127.0.0.1/32 scram-sha-256",
                    "host all +svcctl_clients ::1/128 scram-sha-256",
                    "host all +svcctl_clients 10.211.37.0/24 scram-sha-256",
                ],
                "listen_addresses": "*",  # nothing observed: Debian's default, localhost, widened
                "installed_by": "svcctl",  # nothing observed: this apply installs it
            },
        },
    ]


def test_desired_with_rotation_readonly_and_client_networks_matches_what_parse_reads_back() -> None:
    env = _lab_env()
    env = env.model_copy(
        update={
            "nodes": {
                **env.nodes,
                "lab-2": env.nodes["lab-2"].model_copy(update={"client_networks": ["10.211.37.0/24", "fd00:5c::/64"]}),
            },
            "instances": {"rec-orders": env.instances["orders-db"].model_copy(update={"placement": None})},
            "bindings": [
                env.bindings[0].model_copy(update={"instance": "rec-orders", "rotation": 1}),
                env.bindings[0].model_copy(update={"app": "report", "instance": "rec-orders", "role": "readonly"}),
            ],
        }
    )
    desired = DRIVER.desired(DesiredContext(env=env, placement={"rec-orders": "lab-2"}, observed=State()))
    case = _case("managed_and_foreign")
    observed = {r.address: r for r in DRIVER.parse(case["node"], case["raw"], _password_for(case["key"]))}
    for want in desired:
        have = observed[want.address]
        live = {k: v for k, v in have.attrs.items() if k != "size_mb"}
        if want.address == "binding.report.rec-orders":
            assert live == {**want.attrs, "credentials": "stale"}
        elif want.kind is Kind.ENGINE:  # claimed_networks is registry-only: ownership adds it to the engine's report
            # recorded when svcctl wrote pg_hba.conf whole: the plan turns those lines into svcctl's block
            assert live.pop("pg_hba") == [rule.replace("+svcctl_clients", "all") for rule in want.attrs["pg_hba"]]
            assert live.pop("listen_base") is None
            assert want.attrs["installed_by"] == "svcctl"  # registry-only, as claimed_networks
            skip = ("claimed_networks", "pg_hba", "installed_by")
            assert live == {k: v for k, v in want.attrs.items() if k not in skip}, want.address
        else:
            assert live == want.attrs, want.address
    assert sorted(r.address for r in desired) == [
        "binding.report.rec-orders",
        "binding.web.rec-orders",
        "engine.lab-2.postgres",
        "instance.rec-orders",
    ]


def test_desired_ignores_other_engines_and_unplaced_instances() -> None:
    env = _lab_env()
    ctx = DesiredContext(env=env, placement={"catalog-db": "lab-2", "sessions": "lab-1"}, observed=State())
    assert DRIVER.desired(ctx) == []


def test_secrets_for_a_binding_is_its_current_rotations_password_and_nothing_else() -> None:
    key = b"k" * 32

    def password_for(purpose: str) -> Secret:
        return derive_password(key, purpose)

    binding = Resource(kind=Kind.BINDING, name="web.orders-db", node="lab-1", engine="postgres", attrs={"rotation": 2})
    assert DRIVER.secrets_for(binding, password_for) == {"password": derive_password(key, "binding/web/orders-db/2")}
    old = binding.model_copy(update={"name": "web.orders-db~r1"})
    assert DRIVER.secrets_for(old, password_for) == {}
    instance = Resource(kind=Kind.INSTANCE, name="orders-db", node="lab-1", engine="postgres")
    assert DRIVER.secrets_for(instance, password_for) == {}


def test_the_snippet_defines_observe_postgres_and_reads_only() -> None:
    text = DRIVER.snippet()
    assert "def observe_postgres():" in text
    compile(text, "observe_postgres.py", "exec")
    for verb in ("CREATE ", "ALTER ", "DROP ", "GRANT ", "REVOKE ", "INSERT ", "UPDATE ", "DELETE "):
        assert verb not in text.upper()
