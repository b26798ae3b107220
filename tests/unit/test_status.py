"""`svcctl status`'s pure part: observed State + Environment -> Status -> text and JSON; and the connection
counts it shows, from the node's report (strict, capped) through the drivers, never diffed nor pinned."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import reported
from svcctl.model.loader import load_environment
from svcctl.model.spec import Environment
from svcctl.plan.diff import diff
from svcctl.plan.observe import parse_node
from svcctl.plan.review import observed_digests, pinned
from svcctl.plan.status import (
    DEGRADED_EXIT,
    BackupStatus,
    Status,
    build_status,
    instance_status,
    schedule_period,
)
from svcctl.plan.status_render import NO_BACKUPS, render_json, render_text
from svcctl.state import Kind, Resource, State
from tests.unit.test_reported import ENV as LAB_ENV
from tests.unit.test_reported import _password_for, base_document

DOCS = Path(__file__).resolve().parents[2] / "docs" / "status-json.md"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
YAML = """\
environment: st
nodes:
  lab-1: {host: lab-1, engines: [postgres, redis], capacity: {memory_mb: 4096, storage_mb: 40000}}
  lab-2: {host: lab-2, engines: [postgres], capacity: {memory_mb: 4096, storage_mb: 40000}}
services:
  postgres: {engine: postgres, versions: ["15"]}
  redis: {engine: redis, versions: ["7"]}
plans:
  pg-small: {service: postgres, storage_mb: 512, connections: 20}
  cache: {service: redis, memory_mb: 16, connections: 50}
instances:
  orders-db: {plan: pg-small, node: lab-1}
  billing-db: {plan: pg-small, node: lab-2}
  sessions: {plan: cache, node: lab-1}
apps:
  web: {manifest: apps/web.yml}
bindings:
  - {app: web, instance: orders-db}
  - {app: web, instance: sessions, role: readonly}
"""
RELEASE = {"os": {"id": "debian", "version_id": "12", "version_codename": "bookworm"}, "python": "3.11.2"}


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    (tmp_path / "svcctl.yaml").write_text(YAML)
    return load_environment(tmp_path / "svcctl.yaml")


def res(kind: Kind, name: str, node: str, engine: str, managed: bool = True, **attrs: Any) -> Resource:
    return Resource(kind=kind, name=name, node=node, engine=engine, attrs=attrs, managed=managed)


def healthy_state(**changes: dict[str, Any]) -> State:
    """Everything up; `changes` replaces attributes by address (`{"instance.orders-db": {"size_mb": 600}}`
    is spelt instance_orders_db=...)."""
    resources = [
        res(Kind.ENGINE, "lab-1.postgres", "lab-1", "postgres", installed=True, version="15", running=True),
        res(Kind.ENGINE, "lab-1.redis", "lab-1", "redis", installed=True, version="7"),
        res(Kind.ENGINE, "lab-2.postgres", "lab-2", "postgres", installed=True, version="15", running=True),
        res(Kind.INSTANCE, "orders-db", "lab-1", "postgres", major_version="15",
            database="orders_db", size_mb=8, storage_mb=512, connections=20, connections_in_use=3),
        res(Kind.INSTANCE, "billing-db", "lab-2", "postgres", major_version="15", size_mb=9, connections_in_use=0),
        res(Kind.INSTANCE, "sessions", "lab-1", "redis", major_version="7", port=6380, running=True,
            connections_in_use=2),
        res(Kind.BINDING, "web.orders-db", "lab-1", "postgres", user="sv_web_orders_db_r0", credentials="current"),
        res(Kind.BINDING, "web.sessions", "lab-1", "redis", user="sv_web_sessions_r0", credentials="current"),
    ]  # fmt: skip
    out = []
    for r in resources:
        key = f"{r.kind.value}_{r.name}".replace(".", "_").replace("-", "_")
        if key in changes:
            r = r.model_copy(update={"attrs": {**r.attrs, **changes[key]}})
        out.append(r)
    return State.of(out)


def status_of(env: Environment, state: State, failures: dict[str, str] | None = None) -> Status:
    releases = {n: RELEASE for n in env.nodes if n not in (failures or {})}
    return build_status(env, state, releases, failures or {}, NOW)


def instance(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(i for i in doc["instances"] if i["name"] == name)
    return found


# --- the status model ---------------------------------------------------------------------------------------


def test_healthy(env: Environment) -> None:
    status = status_of(env, healthy_state())
    assert (status.healthy, status.exit_code, status.problems) == (True, 0, ())
    doc = json.loads(render_json(status))
    assert (doc["health"], doc["exit_code"], doc["observed_at"]) == ("healthy", 0, "2026-12-01T12:00:00+00:00")
    orders = instance(doc, "orders-db")
    assert orders == {
        "name": "orders-db", "node": "lab-1", "engine": "postgres", "version": "15", "plan": "pg-small",
        "state": "up", "running": True, "answering": True, "size_mb": 8, "storage_mb": 512, "memory_mb": None,
        "connections_in_use": 3, "connections": 20,
        "bindings": [{"app": "web", "role": "readwrite", "user": "sv_web_orders_db_r0", "credentials": "current"}],
        "backup": None, "problems": [],
    }  # fmt: skip
    sessions = instance(doc, "sessions")
    assert (sessions["state"], sessions["connections_in_use"], sessions["memory_mb"]) == ("up", 2, 16)
    assert sessions["bindings"][0]["role"] == "readonly"
    lab1 = next(n for n in doc["nodes"] if n["name"] == "lab-1")
    assert lab1["release"] == {"id": "debian", "version_id": "12", "codename": "bookworm", "python": "3.11.2"}
    assert lab1["engines"] == [
        {"engine": "postgres", "installed": True, "version": "15", "running": True},
        {"engine": "redis", "installed": True, "version": "7", "running": True},  # its one instance runs
    ]
    text = render_text(status)
    assert text.startswith("Environment st: healthy\n")
    assert re.search(r"orders-db\s+lab-1\s+postgres 15\s+up\s+8/512 MB\s+3/20\s+web \(current\)\s+" + NO_BACKUPS, text)
    assert re.search(r"lab-1\s+yes\s+debian 12 \(bookworm\)\s+postgres 15 running, redis 7 running", text)
    assert text.endswith("Everything is up.\n")


def test_an_engine_stopped_is_degraded_and_named(env: Environment) -> None:
    state = healthy_state(engine_lab_1_postgres={"running": False})
    status = status_of(env, state)
    assert status.exit_code == DEGRADED_EXIT
    assert status.problems == ("instance.orders-db: engine.lab-1.postgres is not running on lab-1",)
    doc = json.loads(render_json(status))
    assert (instance(doc, "orders-db")["state"], instance(doc, "orders-db")["running"]) == ("down", False)
    assert doc["health"] == "degraded"
    assert "Problems:\n  instance.orders-db: engine.lab-1.postgres is not running on lab-1\n" in render_text(status)


def test_a_stopped_cluster_hides_its_database_and_bindings(env: Environment) -> None:
    """A stopped PostgreSQL lists no database: the registry's record says it is there, hidden."""
    hidden = {"missing": True, "hidden_by": "engine.lab-1.postgres"}
    state = State.of(
        [r for r in healthy_state(engine_lab_1_postgres={"running": False}) if r.engine != "postgres" or r.kind is
         Kind.ENGINE or r.node != "lab-1"]
        + [res(Kind.INSTANCE, "orders-db", "lab-1", "postgres", **hidden),
           res(Kind.BINDING, "web.orders-db", "lab-1", "postgres", **hidden)]
    )  # fmt: skip
    orders = instance(json.loads(render_json(status_of(env, state))), "orders-db")
    assert (orders["state"], orders["running"], orders["size_mb"], orders["connections_in_use"]) == (
        "down", False, None, None)  # fmt: skip
    assert orders["bindings"][0]["credentials"] == "unknown"
    assert orders["problems"] == ["engine.lab-1.postgres is not running on lab-1"]


def test_a_stopped_redis_instance_is_down(env: Environment) -> None:
    status = status_of(env, healthy_state(instance_sessions={"running": False}))
    assert status.exit_code == DEGRADED_EXIT
    assert status.problems == ("instance.sessions: redis-server@sessions is not running on lab-1",)
    assert "redis 7 stopped" in render_text(status)


def test_over_quota(env: Environment) -> None:
    status = status_of(env, healthy_state(instance_orders_db={"size_mb": 600}))
    assert status.exit_code == DEGRADED_EXIT
    assert status.problems == ("instance.orders-db: over quota: uses 600 MB of its 512 MB (plan pg-small)",)
    assert "600/512 MB" in render_text(status)


def test_stale_credentials(env: Environment) -> None:
    status = status_of(env, healthy_state(binding_web_orders_db={"credentials": "stale"}))
    assert status.exit_code == DEGRADED_EXIT
    assert status.problems == (
        "instance.orders-db: binding web: credentials stale (the engine's password is not the derived one)",
    )
    assert instance(json.loads(render_json(status)), "orders-db")["bindings"][0]["credentials"] == "stale"
    assert "web (stale)" in render_text(status)


def test_a_missing_binding_user_is_degraded(env: Environment) -> None:
    state = State.of(r for r in healthy_state() if r.address != "binding.web.sessions")
    status = status_of(env, state)
    assert status.problems == ("instance.sessions: binding web: its user does not exist",)


def test_an_unreachable_node_is_shown_not_fatal(env: Environment) -> None:
    state = State.of(r for r in healthy_state() if r.node != "lab-2")
    status = status_of(env, state, {"lab-2": "cannot connect to lab-2:22: timed out"})
    assert status.exit_code == DEGRADED_EXIT
    assert status.problems == (
        "node lab-2: could not be observed: cannot connect to lab-2:22: timed out",
        "instance.billing-db: not observed: node lab-2 could not be observed",
    )
    doc = json.loads(render_json(status))
    lab2 = next(n for n in doc["nodes"] if n["name"] == "lab-2")
    assert lab2 == {"name": "lab-2", "reachable": False, "error": "cannot connect to lab-2:22: timed out",
                    "release": None, "engines": []}  # fmt: skip
    billing = instance(doc, "billing-db")
    assert (billing["state"], billing["node"], billing["running"]) == ("unknown", "lab-2", None)
    assert billing["size_mb"] is None
    assert instance(doc, "orders-db")["state"] == "up"  # the reachable node's instances are still shown
    assert re.search(r"lab-2\s+no\s+-", render_text(status))


def test_an_instance_nowhere_is_missing(env: Environment) -> None:
    state = State.of(r for r in healthy_state() if r.address != "instance.billing-db")
    status = status_of(env, state)
    assert status.problems == (
        "instance.billing-db: does not exist on any node (not applied yet, or deleted outside svcctl): run svcctl plan",
    )
    assert instance(json.loads(render_json(status)), "billing-db")["state"] == "missing"


def test_another_environments_object_at_the_address_is_not_ours(env: Environment) -> None:
    state = State.of(
        r.model_copy(update={"managed": False}) if r.address == "instance.billing-db" else r for r in healthy_state()
    )
    assert instance(json.loads(render_json(status_of(env, state))), "billing-db")["state"] == "missing"


def backed_up(tmp_path: Path, schedule: str = "daily") -> Environment:
    (tmp_path / "svcctl.yaml").write_text(
        YAML.replace(
            "orders-db: {plan: pg-small, node: lab-1}",
            f"orders-db: {{plan: pg-small, node: lab-1, backup: {{schedule: '{schedule}'}}}}",
        )
    )
    return load_environment(tmp_path / "svcctl.yaml")


def with_backup(**attrs: Any) -> State:
    seen = {"engine": "postgres", "schedule": "daily", "keep": 7, "enabled": True, "backups": 3} | attrs
    backup = Resource(kind=Kind.BACKUP, name="orders-db", node="lab-1", engine="postgres", attrs=seen)
    return State.of([*healthy_state(), backup])


def test_the_newest_good_backup_is_shown_with_its_age(tmp_path: Path) -> None:
    status = status_of(backed_up(tmp_path), with_backup(latest="20261201T030000Z"))
    assert status.healthy, status.problems
    backup = instance(json.loads(render_json(status)), "orders-db")["backup"]
    assert backup == {"last_at": "2026-12-01T03:00:00+00:00", "age_seconds": 9 * 3600, "result": "ok",
                      "schedule": "daily", "overdue": False, "count": 3, "enabled": True}  # fmt: skip
    assert re.search(r"orders-db .* ok 9h ago\n", render_text(status))
    assert instance(json.loads(render_json(status)), "billing-db")["backup"] is None  # none declared, none there


def test_a_backup_older_than_its_schedule_allows_is_degraded(tmp_path: Path) -> None:
    status = status_of(backed_up(tmp_path), with_backup(latest="20261130T000000Z"))  # 36 h ago: just not overdue
    assert status.healthy, status.problems
    status = status_of(backed_up(tmp_path), with_backup(latest="20261129T235959Z"))
    assert status.problems == (
        "instance.orders-db: its last backup (2026-11-29T23:59:59+00:00) is older than its schedule (daily) allows",
    )
    assert "ok 1d ago (overdue)" in render_text(status)


def test_a_stopped_backup_timer_or_a_missing_schedule_is_degraded(tmp_path: Path) -> None:
    env = backed_up(tmp_path)
    status = status_of(env, with_backup(enabled=False, latest="20261201T030000Z"))
    assert status.problems == ("instance.orders-db: its backup timer is not active: run svcctl plan",)
    status = status_of(env, healthy_state())
    assert status.problems == ("instance.orders-db: its backup schedule is not on its node: run svcctl plan",)


def test_no_backup_yet_is_not_a_problem(tmp_path: Path) -> None:
    status = status_of(backed_up(tmp_path), with_backup(backups=0, latest=None))
    assert status.healthy, status.problems
    assert "none yet" in render_text(status)


@pytest.mark.parametrize(
    ("schedule", "days"),
    [("hourly", 1 / 24), ("daily", 1), ("weekly", 7), ("monthly", 31), ("yearly", 366), ("*-*-* 03:00:00", 1),
     ("Mon..Fri 02:30", 7), ("Sun *-*-* 04:00", 7), ("*-*-01 02:00", 366), ("02:30", 1)],
)  # fmt: skip
def test_a_schedules_period_errs_long(schedule: str, days: float) -> None:
    assert schedule_period(schedule) == round(days * 86400)


def test_a_failed_or_overdue_backup_is_degraded(env: Environment) -> None:
    state = healthy_state()
    failed = BackupStatus(last_at="2026-12-01T03:00:00+00:00", age_seconds=32400, result="failed", schedule="daily")
    assert instance_status(env, "orders-db", state, {}, failed).problems == (
        "its last backup failed (2026-12-01T03:00:00+00:00)",
    )
    old = BackupStatus(last_at="2026-11-20T03:00:00+00:00", age_seconds=10**6, result="ok", schedule="daily",
                       overdue=True)  # fmt: skip
    assert instance_status(env, "orders-db", state, {}, old).problems == (
        "its last backup (2026-11-20T03:00:00+00:00) is older than its schedule (daily) allows",
    )
    fine = BackupStatus(last_at="2026-12-01T03:00:00+00:00", age_seconds=32400, result="ok", schedule="daily")
    assert instance_status(env, "orders-db", state, {}, fine).problems == ()


def test_hostile_strings_are_escaped(env: Environment) -> None:
    evil = "boom\x1b[2J\x1b]0;pwned\x07\u202eevil\nline\r"
    state = healthy_state(binding_web_orders_db={"user": "sv_\x1b[31mred"})
    status = status_of(env, state, {"lab-2": evil})
    text = render_text(status)
    assert "\x1b" not in text and "\u202e" not in text and "\r" not in text and "\x07" not in text
    assert "boom\\x1b[2J\\x1b]0;pwned\\x07\\u202eevil\\nline\\r" in text
    assert all(line == line.rstrip("\r") for line in text.split("\n"))
    out = render_json(status)
    assert out.isascii() and "\x1b" not in out
    doc = json.loads(out)  # parsing gives the same strings back
    assert next(n for n in doc["nodes"] if n["name"] == "lab-2")["error"] == evil
    assert instance(doc, "orders-db")["bindings"][0]["user"] == "sv_\x1b[31mred"


def test_the_json_fields_are_the_documented_ones(env: Environment) -> None:
    failed = {"lab-2": "unreachable"}
    doc = json.loads(render_json(status_of(env, healthy_state(), failed)))
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    node, orders = doc["nodes"][0], instance(doc, "orders-db")
    fields = {*doc, *node, *node["release"], *node["engines"][0], *orders, *orders["bindings"][0]}
    assert set(doc) == {"format_version", "environment", "observed_at", "health", "exit_code", "nodes",
                        "instances", "problems"}  # fmt: skip
    assert fields <= documented, fields - documented
    assert {"last_at", "age_seconds", "result", "schedule", "overdue"} <= documented  # the backup object
    assert doc["format_version"] == 1


# --- connection counts: the report, the drivers, the diff and saved plans ----------------------------------


def _counted() -> dict[str, Any]:
    doc = copy.deepcopy(base_document())
    doc["engines"]["postgres"]["clusters"][0]["databases"][1]["clients"] = 4
    doc["engines"]["mysql"]["databases"][0]["clients"] = 2
    first = sorted(doc["engines"]["redis"]["instances"])[0]
    doc["engines"]["redis"]["instances"][first]["clients"] = 7
    return doc


def test_connection_counts_reach_the_instances_as_connections_in_use() -> None:
    doc = _counted()
    live = parse_node(reported.observation("lab-1", doc), LAB_ENV.name, _password_for)
    counted = {r.engine: r.attrs["connections_in_use"] for r in live if "connections_in_use" in r.attrs}
    assert counted == {"postgres": 4, "mysql": 2, "redis": 7}
    uncounted = parse_node(reported.observation("lab-1", base_document()), LAB_ENV.name, _password_for)
    assert not any("connections_in_use" in r.attrs for r in uncounted)  # older reports: absent, not 0


@pytest.mark.parametrize("value", [-1, "3", 3.0, True, reported.MAX_CLIENTS + 1])
def test_a_connection_count_must_be_a_small_non_negative_integer(value: object) -> None:
    doc = copy.deepcopy(base_document())
    doc["engines"]["postgres"]["clusters"][0]["databases"][1]["clients"] = value
    with pytest.raises(reported.InvalidReport, match="clients"):
        reported.observation("lab-1", doc)


def test_a_live_count_is_never_diffed_nor_pinned_by_a_saved_plan() -> None:
    one = healthy_state()
    other = healthy_state(instance_orders_db={"connections_in_use": 19}, instance_sessions={"connections_in_use": 0})
    desired = State.of(
        r.model_copy(update={"attrs": {k: v for k, v in r.attrs.items() if k != "connections_in_use"}}) for r in one
    )
    assert diff(desired, one).changes == diff(desired, other).changes
    assert not any(c.address == "instance.orders-db" for c in diff(desired, other).changes)
    pinned_one, pinned_other = pinned(one, desired, set()), pinned(other, desired, set())
    assert observed_digests(pinned_one) == observed_digests(pinned_other)
    moved = healthy_state(instance_orders_db={"storage_mb": 1024})  # a real change still moves the digest
    assert observed_digests(pinned(moved, desired, set())) != observed_digests(pinned_one)


def test_the_documented_example_has_the_rendered_keys(env: Environment) -> None:
    """docs/status-json.md's example has exactly the keys render_json produces, so the doc cannot fall behind."""
    example = json.loads(DOCS.read_text().split("```json\n", 1)[1].split("\n```", 1)[0])
    rendered = json.loads(render_json(status_of(env, healthy_state())))
    assert list(example) == list(rendered)
    assert [list(n) for n in example["nodes"]] == [list(rendered["nodes"][0])] * len(example["nodes"])
    assert {tuple(i) for i in example["instances"]} == {tuple(i) for i in rendered["instances"]}
    assert list(example["nodes"][0]["release"]) == list(rendered["nodes"][0]["release"])
