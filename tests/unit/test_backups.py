"""Backup schedules as resources: desired from the YAML, observed from the node's report, diffed, pruned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import backups
from svcctl.drivers.ownership import mark_ownership
from svcctl.drivers.reported import InvalidReport, backups_report
from svcctl.hostlib.backups import list_backups, to_prune
from svcctl.model.spec import Environment
from svcctl.plan.diff import diff
from svcctl.plan.types import Action
from svcctl.state import Kind, Resource, State

ENV = Environment.model_validate(
    {
        "environment": "t",
        "nodes": {"db-1": {"host": "10.0.0.1", "engines": ["postgres", "redis"]}},
        "services": {"pg": {"engine": "postgres", "versions": ["15"]}, "rd": {"engine": "redis", "versions": ["7"]}},
        "plans": {
            "pg-small": {"service": "pg", "storage_mb": 512, "backup": {"schedule": "daily", "keep": 7}},
            "cache": {"service": "rd", "memory_mb": 16},
        },
        "instances": {
            "orders-db": {"plan": "pg-small"},
            "audit-db": {"plan": "pg-small", "backup": {"schedule": "Mon..Fri 02:30", "keep": 30}},
            "cache-a": {"plan": "cache", "backup": {}},
            "cache-b": {"plan": "cache"},
        },
    }
)
PLACED = {"orders-db": "db-1", "audit-db": "db-1", "cache-a": "db-1", "cache-b": "db-1"}
REDIS = {"cache-a": Resource(kind=Kind.INSTANCE, name="cache-a", node="db-1", engine="redis", attrs={"port": 6380})}


def report(**instances: dict[str, Any]) -> dict[str, Any]:
    return backups_report("db-1", {"instances": instances})


def seen(engine: str, schedule: str, keep: int, *, active: bool = True, **extra: Any) -> dict[str, Any]:
    timer = {"active": active, "enabled": active}
    return {"engine": engine, "schedule": schedule, "keep": keep, "timer": timer, "count": 2, **extra}


def test_desired_takes_the_instances_own_backup_else_its_plans_and_none_without() -> None:
    out = {r.address: r for r in backups.desired(ENV, PLACED, REDIS)}
    assert sorted(out) == ["backup.audit-db", "backup.cache-a", "backup.orders-db"]
    assert out["backup.orders-db"].attrs == {"engine": "postgres", "schedule": "daily", "keep": 7, "enabled": True}
    assert out["backup.audit-db"].attrs["schedule"] == "Mon..Fri 02:30"
    assert out["backup.audit-db"].attrs["keep"] == 30
    assert out["backup.cache-a"].attrs == {
        "engine": "redis",
        "schedule": "daily",
        "keep": 7,
        "enabled": True,
        "port": 6380,
        "credentials": "current",  # its backup user and credential file, as svcctl makes them
    }
    assert backups.desired(ENV, {}, REDIS) == []  # nothing placed, nothing scheduled


def observed(rep: dict[str, Any], recorded: set[str]) -> State:
    registry = {f"backup.{n}": {"attrs": {}, "environment": "t"} for n in recorded}
    return State.of(mark_ownership("db-1", backups.parse("db-1", rep), registry, "t"))


def test_the_diff_creates_updates_and_deletes_schedules_and_ignores_the_count_and_newest() -> None:
    desired = State.of(backups.desired(ENV, PLACED, REDIS))
    rep = report(
        **{
            "orders-db": seen("postgres", "daily", 7, latest="20261201T030000Z"),  # as declared
            "audit-db": seen("postgres", "daily", 30),  # schedule changed in the YAML
            "old-db": seen("postgres", "daily", 7),  # no longer declared
        }
    )
    plan = diff(desired, observed(rep, {"orders-db", "audit-db", "old-db"}))
    actions = {c.address: c.action for c in plan.changes}
    assert actions == {
        "backup.audit-db": Action.UPDATE,
        "backup.cache-a": Action.CREATE,
        "backup.old-db": Action.DELETE,
    }
    update = next(c for c in plan.changes if c.address == "backup.audit-db")
    assert [(a.field, a.old, a.new) for a in update.attrs] == [("schedule", "daily", "Mon..Fri 02:30")]
    assert not any(c.destroys_data for c in plan.changes)  # removing a schedule keeps the backups


def test_a_stopped_timer_is_drift_and_a_schedule_svcctl_did_not_record_is_left_alone() -> None:
    desired = State.of(backups.desired(ENV, {"orders-db": "db-1"}, {}))
    rep = report(**{"orders-db": seen("postgres", "daily", 7, active=False), "theirs": seen("mysql", "daily", 1)})
    plan = diff(desired, observed(rep, {"orders-db"}))
    assert [(c.address, c.action) for c in plan.changes] == [("backup.orders-db", Action.UPDATE)]
    assert [a.field for a in plan.changes[0].attrs] == ["enabled"]
    assert plan.unmanaged == ["backup.theirs on db-1"]


def test_backups_are_created_after_their_instance_and_deleted_before_it() -> None:
    inst = Resource(kind=Kind.INSTANCE, name="orders-db", node="db-1", engine="postgres", attrs={"engine": "postgres"})
    desired = State.of([inst, *backups.desired(ENV, {"orders-db": "db-1"}, {})])
    assert [c.address for c in diff(desired, State()).changes] == ["instance.orders-db", "backup.orders-db"]


@pytest.mark.parametrize(
    "bad",
    [
        {"x": {"engine": "postgres", "timer": {"active": True, "enabled": True}}},  # not an instance name
        {"orders-db": {"engine": "oracle", "timer": {"active": True, "enabled": True}}},
        {"orders-db": {"engine": "postgres", "timer": {"active": "yes", "enabled": True}}},
        {"orders-db": {"engine": "postgres", "keep": "7", "timer": {"active": True, "enabled": True}}},
        {"orders-db": {"engine": "postgres", "schedule": "daily\x1b[2J", "timer": {"active": True, "enabled": True}}},
        {"orders-db": {"engine": "postgres", "latest": "../../etc", "timer": {"active": True, "enabled": True}}},
    ],
)
def test_the_backups_report_is_checked_strictly(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidReport):
        backups_report("db-1", {"instances": bad})


def write_result(directory: Path, ident: str, result: str) -> None:
    (directory / f"{ident}.json").write_text(json.dumps({"result": result}))


def test_listing_reads_results_oldest_first_and_skips_what_is_not_a_result(tmp_path: Path) -> None:
    d = tmp_path / "orders-db"
    d.mkdir()
    write_result(d, "20261201T030000Z", "ok")
    write_result(d, "20261130T030000Z", "failed")
    (d / "20261201T040000Z.json").write_text("{not json")
    (d / ".20261201T050000Z.dump.tmp").write_text("being made")
    (d / "notes.json").write_text("{}")
    listed = list_backups("orders-db", str(tmp_path))
    assert [(b["id"], b["result"]) for b in listed] == [
        ("20261130T030000Z", "failed"),
        ("20261201T030000Z", "ok"),
        ("20261201T040000Z", "unreadable"),
    ]
    with pytest.raises(ValueError, match="not an instance name"):
        list_backups("../etc", str(tmp_path))


def test_pruning_keeps_the_newest_good_ones_and_recent_failures() -> None:
    made = [
        {"id": "20261201T01", "result": "ok"},
        {"id": "20261201T02", "result": "failed"},
        {"id": "20261201T03", "result": "ok"},
        {"id": "20261201T04", "result": "ok"},
        {"id": "20261201T05", "result": "failed"},
    ]
    assert to_prune(made, 2) == ["20261201T01", "20261201T02"]
    assert to_prune(made, 3) == []
    assert to_prune(made, 1) == ["20261201T01", "20261201T02", "20261201T03"]


def test_a_targeted_schedule_brings_its_instance_and_a_destroyed_instance_its_schedule() -> None:
    from svcctl.plan.targets import selected

    inst = Resource(kind=Kind.INSTANCE, name="orders-db", node="db-1", engine="postgres", attrs={"engine": "postgres"})
    desired = State.of([inst, *backups.desired(ENV, {"orders-db": "db-1"}, {})])
    plan = diff(desired, State())
    assert selected(plan, desired, State(), ["backup.orders-db"]) >= {"backup.orders-db", "instance.orders-db"}
    observed = State.of([inst, *backups.desired(ENV, {"orders-db": "db-1"}, {})])
    gone = diff(State(), observed)
    assert "backup.orders-db" in selected(gone, State(), observed, ["instance.orders-db"])
