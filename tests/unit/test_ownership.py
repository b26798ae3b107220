"""Ownership from the host registry, and merging the nodes' observations into one State."""

from __future__ import annotations

import pytest

from svcctl.drivers.ownership import mark_ownership, merge_nodes
from svcctl.errors import SvcctlError
from svcctl.plan.diff import diff
from svcctl.state import Kind, Resource, State


def inst(name: str, node: str, engine: str = "postgres", managed: bool = True) -> Resource:
    return Resource(kind=Kind.INSTANCE, name=name, node=node, engine=engine, attrs={}, managed=managed)


def test_lookalikes_on_two_nodes_are_renamed_and_the_managed_one_keeps_the_address() -> None:
    merged = State.of(merge_nodes([inst("orders", "a"), inst("orders", "b", managed=False), inst("x", "b")]))
    assert sorted(merged.resources) == ["instance.orders", "instance.orders@b/postgres", "instance.x"]
    assert merged.resources["instance.orders"].node == "a"


def test_unmanaged_lookalikes_in_two_engines_of_one_node_get_distinct_names() -> None:
    merged = merge_nodes([inst("db", "a", "postgres", False), inst("db", "a", "mysql", False)])
    assert sorted(r.address for r in merged) == ["instance.db@a/mysql", "instance.db@a/postgres"]


def test_two_managed_objects_at_one_address_are_refused_naming_both_nodes() -> None:
    with pytest.raises(
        SvcctlError, match=r"instance.orders is recorded as svcctl's on more than one node: a \(postgres\), b"
    ):
        merge_nodes([inst("orders", "a"), inst("orders", "b")])


def test_records_of_another_environment_are_not_ours() -> None:
    live = [inst("orders", "a", managed=False)]
    registry = {"instance.orders": {"attrs": {"protect": True}, "environment": "other"}}
    [res] = mark_ownership("a", live, registry, "mine")
    assert res.managed is False and res.recorded is None
    assert res.owner == "other"  # so the plan can say whose it is


def test_the_plan_names_the_environment_an_unmanaged_object_belongs_to() -> None:
    binding = Resource(kind=Kind.BINDING, name="web.orders~r0", node="a", engine="postgres", attrs={"user": "u"})
    legacy = inst("legacy", "a")
    registry = {"binding.web.orders": {"attrs": {}, "environment": "staging"}}
    observed = mark_ownership("a", [binding, legacy], registry, "mine")
    assert [(r.managed, r.owner) for r in observed] == [(False, "staging"), (False, None)]
    plan = diff(State(), State.of(observed), environment="mine")
    assert plan.unmanaged == ["binding.web.orders~r0 on a (environment staging)", "instance.legacy on a"]


def test_a_recorded_object_that_is_gone_comes_back_as_missing() -> None:
    registry = {"instance.orders": {"attrs": {"engine": "postgres", "protect": True}, "environment": "mine"}}
    [res] = mark_ownership("a", [], registry, "mine")
    assert (res.address, res.attrs, res.managed, res.engine) == ("instance.orders", {"missing": True}, True, "postgres")


def test_an_old_rotation_user_belongs_to_its_recorded_binding() -> None:
    live = [Resource(kind=Kind.BINDING, name="web.db~r0", node="a", engine="postgres", attrs={}, managed=False)]
    registry = {"binding.web.db": {"attrs": {"engine": "postgres"}, "environment": "mine"}}
    out = {r.address: r for r in mark_ownership("a", live, registry, "mine")}
    assert out["binding.web.db~r0"].managed is True
    assert out["binding.web.db"].attrs == {"missing": True}


def test_records_hidden_by_a_stopped_engine_are_never_forgotten_and_are_recreated_only_if_missing() -> None:
    engine = Resource(kind=Kind.ENGINE, name="a.postgres", node="a", engine="postgres", attrs={"running": False})
    registry = {
        "instance.kept": {"attrs": {"engine": "postgres"}, "environment": "mine"},
        "instance.dropped": {"attrs": {"engine": "postgres"}, "environment": "mine"},
        "instance.cache": {"attrs": {"engine": "redis"}, "environment": "mine"},
    }
    observed = State.of(mark_ownership("a", [engine], registry, "mine"))
    assert observed.resources["instance.kept"].attrs == {"missing": True, "hidden_by": "engine.a.postgres"}
    assert observed.resources["instance.cache"].attrs == {"missing": True}  # redis's engine is not the one down
    want = Resource(kind=Kind.INSTANCE, name="kept", node="a", engine="postgres", attrs={"engine": "postgres"})
    cache = Resource(kind=Kind.INSTANCE, name="cache", node="a", engine="redis", attrs={"engine": "redis"})
    plan = diff(State.of([want, cache, engine]), observed, environment="mine")
    reasons = {c.address: c.reason for c in plan.changes}
    assert reasons["instance.kept"] == (
        "not visible while engine.a.postgres is not running; apply starts it, then creates this only if missing"
    )
    assert reasons["instance.cache"] == "deleted outside svcctl"
    assert "instance.dropped" not in reasons  # not forgotten: an error says why
    assert plan.errors == [
        "instance.dropped is no longer declared, but svcctl cannot tell whether it still exists on a: "
        "engine.a.postgres is not running. Start it and plan again (or declare instance.dropped again); "
        "svcctl never forgets an object it cannot see"
    ]
