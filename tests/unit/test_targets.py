"""--target: the plan narrowed to the targets and what they depend on (svcctl.plan.targets), as data."""

from __future__ import annotations

from typing import Any

import pytest

from svcctl.plan.diff import diff
from svcctl.plan.render import render_markdown
from svcctl.plan.targets import UnknownTarget, check_forms, narrow, warning
from svcctl.plan.types import Plan
from svcctl.state import Kind, Resource, State


def _res(kind: Kind, name: str, node: str = "db-1", engine: str = "postgres", **attrs: Any) -> Resource:
    return Resource(kind=kind, name=name, node=node, engine=engine, attrs=attrs)


def _engine(node: str = "db-1", engine: str = "postgres") -> Resource:
    return _res(Kind.ENGINE, f"{node}.{engine}", node, engine, installed=True, version="15")


DESIRED = State.of(
    [
        _engine(),
        _engine("db-2", "redis"),
        _res(Kind.INSTANCE, "orders-db", database="orders_db", protect=True),
        _res(Kind.INSTANCE, "billing-db", database="billing_db", protect=True),
        _res(Kind.INSTANCE, "cache", "db-2", "redis", memory_mb=16),
        _res(Kind.BINDING, "web.orders-db", role="readwrite", rotation=1),
        _res(Kind.BINDING, "web.billing-db", role="readonly", rotation=0),
    ]
)
"""Everything to create, except that db-1's PostgreSQL is there already and a rotation left an old user."""

OBSERVED = State.of(
    [
        _engine(),
        _res(Kind.BINDING, "web.orders-db~r0", role="readwrite", rotation=0),
        _res(Kind.INSTANCE, "old-db", database="old_db"),
        _res(Kind.BINDING, "web.old-db", role="readwrite", rotation=0),
        _res(Kind.SESSION, "old-db.a1b2", user="svs_old_db_a1b2"),
    ]
)


def _plan() -> Plan:
    return diff(DESIRED, OBSERVED, environment="prod")


def _addresses(targets: list[str]) -> tuple[list[str], list[str]]:
    narrowed, left_out = narrow(_plan(), DESIRED, OBSERVED, targets)
    return sorted(c.address for c in narrowed.changes), sorted(left_out)


def test_without_targets_the_plan_is_unchanged() -> None:
    plan = _plan()
    assert narrow(plan, DESIRED, OBSERVED, []) == (plan, [])


def test_an_instance_brings_its_engine_only() -> None:
    kept, left_out = _addresses(["instance.cache"])
    assert kept == ["engine.db-2.redis", "instance.cache"]
    assert "instance.orders-db" in left_out and "binding.web.orders-db" in left_out
    assert set(kept).isdisjoint(left_out)
    assert len(kept) + len(left_out) == len(_plan().changes)


def test_an_instance_whose_engine_needs_nothing_is_alone() -> None:
    assert _addresses(["instance.billing-db"])[0] == ["instance.billing-db"]


def test_a_binding_brings_its_instance_its_engine_and_its_old_rotations() -> None:
    kept, _ = _addresses(["binding.web.orders-db"])
    assert kept == ["binding.web.orders-db", "binding.web.orders-db~r0", "instance.orders-db"]


def test_a_destroyed_instance_brings_its_bindings_and_sessions() -> None:
    kept, _ = _addresses(["instance.old-db"])
    assert kept == ["binding.web.old-db", "instance.old-db", "session.old-db.a1b2"]


def test_several_targets_are_united() -> None:
    kept, _ = _addresses(["instance.cache", "binding.web.billing-db"])
    assert kept == ["binding.web.billing-db", "engine.db-2.redis", "instance.billing-db", "instance.cache"]


def test_the_plan_records_its_targets_and_keeps_errors_and_order() -> None:
    plan = _plan().model_copy(update={"errors": ["elsewhere"], "warnings": ["w"]})
    narrowed, _ = narrow(plan, DESIRED, OBSERVED, ["instance.cache", "instance.cache"])
    assert narrowed.targets == ["instance.cache"]
    assert narrowed.errors == ["elsewhere"] and narrowed.warnings == ["w"]
    assert [c.address for c in narrowed.changes] == ["engine.db-2.redis", "instance.cache"]  # apply order kept


def test_an_unknown_address_names_it_and_the_close_matches() -> None:
    with pytest.raises(UnknownTarget) as caught:
        narrow(_plan(), DESIRED, OBSERVED, ["instance.order-db"])
    assert "--target instance.order-db" in caught.value.message
    assert "did you mean instance.orders-db" in caught.value.message
    with pytest.raises(UnknownTarget, match="no address is close"):
        narrow(_plan(), DESIRED, OBSERVED, ["instance.zzzzzzzzzzzzzzzz"])


@pytest.mark.parametrize("target", ["orders-db", "node.db-1", "instance.", "instance", ""])
def test_what_is_no_address_at_all_is_refused_before_any_ssh(target: str) -> None:
    with pytest.raises(UnknownTarget, match="is not a resource address"):
        check_forms([target])


def test_the_warning_says_targeting_is_for_exceptions() -> None:
    text = warning(["instance.b", "instance.a"])
    assert text.startswith("Warning: resource targeting is in effect (instance.a, instance.b)")
    assert "exceptional" in text and "may not be every change" in text


def test_markdown_says_the_plan_is_targeted() -> None:
    narrowed, _ = narrow(_plan(), DESIRED, OBSERVED, ["instance.cache"])
    assert "**Targeted**" in render_markdown(narrowed) and "`instance.cache`" in render_markdown(narrowed)
    assert "**Targeted**" not in render_markdown(_plan())


def test_a_saved_plan_keeps_its_targets() -> None:
    narrowed, _ = narrow(_plan(), DESIRED, OBSERVED, ["instance.cache"])
    assert Plan.model_validate(narrowed.model_dump(mode="json")).targets == ["instance.cache"]
