"""The diff, tested as data: each tests/unit/diff_cases/<case>.json holds desired, observed and the plan expected."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svcctl.plan.diff import KIND_ORDER, diff, fingerprint, is_sensitive
from svcctl.plan.types import Action, AttrChange, Change, Plan
from svcctl.state import Kind, Resource, State

CASES = sorted((Path(__file__).parent / "diff_cases").glob("*.json"))


def _state(resources: list[dict[str, Any]]) -> State:
    return State.of(Resource.model_validate(r) for r in resources)


def _attr(a: AttrChange) -> dict[str, Any]:
    out: dict[str, Any] = {"field": a.field, "old": a.old, "new": a.new, "cause": a.cause.value}
    if a.sensitive:
        out["sensitive"] = True
    if a.forces_replace:
        out["forces_replace"] = True
    return out


def _change(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": c.action.value,
        "address": c.address,
        "node": c.node,
        "cause": c.cause.value,
        "destroys_data": c.destroys_data,
        "restarts_service": c.restarts_service,
        "attrs": [_attr(a) for a in c.attrs],
    }
    if c.reason is not None:
        out["reason"] = c.reason
    return out


def _condensed(plan: Plan) -> dict[str, Any]:
    return {
        "changes": [_change(c) for c in plan.changes],
        "errors": plan.errors,
        "unmanaged": plan.unmanaged,
        "warnings": plan.warnings,
    }


def _secrets(resources: list[dict[str, Any]]) -> set[str]:
    """Every value of a sensitive attribute in the case's inputs (attrs and records)."""
    found = set()
    for r in resources:
        for attrs in (r.get("attrs") or {}, r.get("recorded") or {}):
            found |= {str(v) for k, v in attrs.items() if is_sensitive(k)}
    return found


def test_there_are_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = json.loads(path.read_text())
    desired, observed = _state(case["desired"]), _state(case["observed"])
    plan = diff(desired, observed, protected=case["protected"], environment="test")
    assert _condensed(plan) == case["expected"]
    assert plan.environment == "test"
    assert plan.fingerprint == fingerprint(observed)
    dumped = plan.model_dump_json()
    for secret in _secrets(case["desired"] + case["observed"]):
        assert secret not in dumped


def _res(kind: Kind, name: str, attrs: dict[str, Any], node: str = "db-1", **kw: Any) -> Resource:
    return Resource(kind=kind, name=name, node=node, engine="postgres", attrs=attrs, **kw)


def test_fingerprint_is_canonical_and_sensitive_to_any_change() -> None:
    a = _res(Kind.INSTANCE, "a", {"x": 1, "y": [1, 2]})
    b = _res(Kind.ENGINE, "db-1.postgres", {"version": "15"})
    one, other_order = State.of([a, b]), State.of([b, a])
    assert fingerprint(one) == fingerprint(other_order)
    assert len(fingerprint(one)) == 64
    changed = State.of([a.model_copy(update={"attrs": {"x": 2, "y": [1, 2]}}), b])
    assert fingerprint(changed) != fingerprint(one)
    unrecorded = State.of([a.model_copy(update={"recorded": {"x": 1}}), b])
    assert fingerprint(unrecorded) != fingerprint(one)
    # the canonical form: compact JSON, sorted keys (documented in docs/plan-json.md)
    assert fingerprint(State()) == hashlib.sha256(b'{"resources":{}}').hexdigest()


def test_protected_by_address_is_not_a_name() -> None:
    """`protected` holds instance names; an address there protects nothing (so a typo cannot pass silently)."""
    observed = State.of([_res(Kind.INSTANCE, "orders-db", {})])
    plan = diff(State(), observed, protected=["instance.orders-db"])
    assert [c.action for c in plan.changes] == [Action.DELETE]
    assert plan.errors == []


def test_bindings_are_not_protected_by_their_instance_name() -> None:
    """Protection is for instances: a binding whose name happens to be protected is still deleted."""
    observed = State.of([_res(Kind.BINDING, "orders-db", {})])
    plan = diff(State(), observed, protected=["orders-db"])
    assert [(c.action, c.destroys_data) for c in plan.changes] == [(Action.DELETE, False)]


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [("password", True), ("credentials", True), ("admin_password", True), ("password_hint", False), ("role", False)],
)
def test_is_sensitive(name: str, sensitive: bool) -> None:
    assert is_sensitive(name) is sensitive


def test_types_are_strict_and_none_equals_absent() -> None:
    observed = State.of([_res(Kind.INSTANCE, "a", {"port": 1, "flag": True, "gone": None}, recorded={})])
    desired = State.of([_res(Kind.INSTANCE, "a", {"port": 1.0, "flag": 1})])
    plan = diff(desired, observed)
    assert [(a.field, a.old, a.new) for c in plan.changes for a in c.attrs] == [
        ("flag", True, 1),
        ("port", 1, 1.0),
    ]


# -- properties -------------------------------------------------------------------------------------------

_names = st.text(alphabet="abcdefgh-0123", min_size=1, max_size=6)
_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
_values = _scalars | st.lists(_scalars, max_size=4)
_attr_names = _names.filter(lambda n: n not in {"size_mb", "missing"})
_attrs = st.dictionaries(_attr_names, _values, max_size=5)


@st.composite
def _managed_states(draw: st.DrawFn) -> State:
    resources = {}
    for kind in draw(st.lists(st.sampled_from(list(Kind)), max_size=8)):
        name = draw(_names)
        attrs = draw(_attrs)
        recorded = draw(st.none() | _attrs)
        r = Resource(kind=kind, name=name, node=draw(_names), engine=draw(_names), attrs=attrs, recorded=recorded)
        resources[r.address] = r
    return State(resources=resources)


@given(_managed_states())
def test_a_state_diffed_against_itself_plans_nothing(state: State) -> None:
    plan = diff(state, state, protected=[r.name for r in state])
    assert plan.changes == []
    assert plan.errors == []
    assert plan.unmanaged == []


@given(_managed_states())
def test_against_empty_hosts_exactly_the_desired_addresses_are_created_in_kind_order(state: State) -> None:
    plan = diff(state, State())
    assert [c.address for c in plan.changes] == sorted(
        state.resources, key=lambda a: (KIND_ORDER.index(state.resources[a].kind), a)
    )
    assert {c.action for c in plan.changes} <= {Action.CREATE}
    assert plan.errors == []
