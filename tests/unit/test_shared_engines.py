"""Engines are shared by the environments on a node: each keeps the others' client networks open.

The registry's engine record keeps each environment's claim; an environment with no objects left on the
node no longer holds its networks open.
"""

from __future__ import annotations

from svcctl.drivers.base import DesiredContext, shared_networks
from svcctl.drivers.ownership import mark_ownership
from svcctl.drivers.postgres.driver import DRIVER
from svcctl.model.spec import Environment, Instance, Node, Service, ServicePlan
from svcctl.plan.diff import diff
from svcctl.state import Kind, Resource, State

ENGINE = Resource(
    kind=Kind.ENGINE, name="a.postgres", node="a", engine="postgres",
    attrs={"installed": True, "client_networks": ["10.1.0.0/16", "10.9.0.0/16"]},
)  # fmt: skip
REGISTRY = {
    "engine.a.postgres": {
        "attrs": {"client_networks": ["10.1.0.0/16", "10.2.0.0/16"]},
        "environment": "staging",
        "claims": {"staging": ["10.1.0.0/16"], "mine": ["10.9.0.0/16"], "gone": ["10.2.0.0/16"]},
    },
    "instance.orders": {"attrs": {}, "environment": "staging"},
    "instance.mine-db": {"attrs": {}, "environment": "mine"},
}


def observed_engine() -> Resource:
    return next(r for r in mark_ownership("a", [ENGINE], REGISTRY, "mine") if r.kind is Kind.ENGINE)


def test_an_engine_carries_the_claims_of_other_environments_that_still_have_objects_on_the_node() -> None:
    engine = observed_engine()
    assert engine.managed is True
    assert engine.claims == {"staging": ["10.1.0.0/16"]}  # not ours; "gone" has nothing left on the node
    assert engine.attrs["claimed_networks"] == ["10.9.0.0/16"]  # ours, as the record keeps it (registry-only)


def test_desired_client_networks_are_ours_then_the_others_claims() -> None:
    engine = observed_engine()
    assert shared_networks(["10.9.0.0/16"], engine) == ["10.9.0.0/16", "10.1.0.0/16"]
    assert shared_networks(["10.1.0.0/16"], engine) == ["10.1.0.0/16"]  # claimed twice, listed once
    assert shared_networks([], None) == []


def test_the_postgres_engine_desired_next_to_another_environment_keeps_its_network() -> None:
    env = Environment(
        nodes={"a": Node(host="a", engines=["postgres"], client_networks=["10.9.0.0/16"])},
        services={"postgres": Service(engine="postgres", versions=["15"])},
        plans={"small": ServicePlan(service="postgres")},
        instances={"mine-db": Instance(plan="small", node="a")},
    )
    engine = observed_engine()
    ctx = DesiredContext(env=env, placement={"mine-db": "a"}, observed=State.of([engine]))
    [desired] = [r for r in DRIVER.desired(ctx) if r.kind is Kind.ENGINE]
    assert desired.attrs["client_networks"] == ["10.9.0.0/16", "10.1.0.0/16"]
    assert desired.attrs["claimed_networks"] == ["10.9.0.0/16"]


def test_a_claim_not_yet_recorded_is_a_change_even_when_the_networks_are_already_open() -> None:
    """Another environment may have opened our network already: our claim must still reach the record."""
    live = ENGINE.model_copy(update={"attrs": {**ENGINE.attrs, "client_networks": ["10.1.0.0/16"]}})
    engine = next(r for r in mark_ownership("a", [live], REGISTRY, "newcomer") if r.kind is Kind.ENGINE)
    assert engine.attrs["claimed_networks"] == []
    want = engine.model_copy(update={"attrs": {**engine.attrs, "claimed_networks": ["10.1.0.0/16"]}, "claims": None})
    plan = diff(State.of([want]), State.of([engine]))
    [change] = plan.changes
    assert [a.field for a in change.attrs] == ["claimed_networks"]
    assert change.restarts_service is False
