"""Adoption: an instance that takes over an existing database, from the YAML's checks to the plan's words.

The diff's own cases are in diff_cases/adopt_*.json and adopted_*.json; the e2e proof is
tests/e2e/test_brownfield.py on a server set up by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from svcctl.drivers.base import DesiredContext, installed_by
from svcctl.drivers.ownership import mark_ownership
from svcctl.drivers.postgres.driver import DRIVER
from svcctl.errors import InvalidEnvironment
from svcctl.model.loader import load_environment
from svcctl.plan.diff import diff
from svcctl.plan.render import render_json, render_text
from svcctl.plan.types import Action, AttrChange, Change, Plan
from svcctl.state import Kind, Resource, State
from tests.conftest import REPO

LAB = (REPO / "examples" / "lab" / "svcctl.yaml").read_text()
ADOPTING = """
  legacy-orders:
    plan: pg-small
    node: lab-2
    adopt: {database: legacy_orders}
"""


def _env(tmp_path: Path, instance: str = ADOPTING) -> Path:
    path = tmp_path / "svcctl.yaml"
    path.write_text(LAB.replace("\ninstances:\n", "\ninstances:\n" + instance.strip("\n") + "\n", 1))
    return path


def _problems(tmp_path: Path, instance: str) -> list[str]:
    with pytest.raises(InvalidEnvironment) as failed:
        load_environment(_env(tmp_path, instance))
    return [p.message for p in failed.value.problems]


def test_an_adopting_instance_loads_with_its_database(tmp_path: Path) -> None:
    env = load_environment(_env(tmp_path))
    adopt = env.instances["legacy-orders"].adopt
    assert adopt is not None and adopt.database == "legacy_orders"


@pytest.mark.parametrize(
    ("instance", "problem"),
    [
        ("  legacy-orders:\n    plan: pg-small\n    adopt: {database: legacy_orders}\n",
         "instance legacy-orders: adopts database legacy_orders, so it needs node: "
         "(the node that holds legacy_orders)"),
        ("  orders:\n    plan: pg-small\n    node: lab-2\n    adopt: {database: legacy_orders}\n",
         "instance orders: adopts database legacy_orders, but svcctl names instance orders's database orders; "
         "name the instance legacy-orders (instance names map to their database, - as _)"),
        ("  legacy-cache:\n    plan: cache-64\n    node: lab-2\n    adopt: {database: legacy_cache}\n",
         "instance legacy-cache: adopt takes over a database (PostgreSQL, MariaDB); a redis instance has none"),
    ],
)  # fmt: skip
def test_what_adoption_needs_is_said_at_the_adopt_block(tmp_path: Path, instance: str, problem: str) -> None:
    assert problem in _problems(tmp_path, instance)


def test_a_database_name_that_is_no_identifier_is_refused(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, "  x:\n    plan: pg-small\n    node: lab-2\n    adopt: {database: 'Legacy-Orders'}\n"
    )
    assert any(re.search(r"identifier .*Legacy-Orders.* must be 1 to 63 lowercase", p) for p in problems), problems


def _observed_legacy(owner: str = "legacy_app", **attrs: object) -> Resource:
    return Resource(kind=Kind.INSTANCE, name="legacy-orders", node="lab-2", engine="postgres",
                    attrs={"engine": "postgres", "major_version": "15", "database": "legacy_orders", "owner": owner,
                           "connections": None, "storage_mb": None, "size_mb": 3, **attrs})  # fmt: skip


def test_desired_keeps_the_owner_the_database_has_and_marks_it_adopted(tmp_path: Path) -> None:
    env = load_environment(_env(tmp_path))
    ctx = DesiredContext(env=env, placement={"legacy-orders": "lab-2"}, observed=State.of([_observed_legacy()]))
    [instance] = [r for r in DRIVER.desired(ctx) if r.kind is Kind.INSTANCE]
    assert instance.attrs["adopted"] is True and instance.attrs["owner"] == "legacy_app"
    assert instance.attrs["database"] == "legacy_orders"


def test_once_recorded_adopted_stays_adopted_without_the_adopt_block(tmp_path: Path) -> None:
    """Removing `adopt:` later must never turn a database svcctl did not create into one it may drop."""
    record = {"environment": "lab", "attrs": {"adopted": True, "protect": True, "owner": "legacy_app"}}
    [observed] = mark_ownership("lab-2", [_observed_legacy()], {"instance.legacy-orders": record}, "lab")
    assert observed.managed and observed.attrs["adopted"] is True
    env = load_environment(_env(tmp_path, "  legacy-orders:\n    plan: pg-small\n    node: lab-2\n"))
    ctx = DesiredContext(env=env, placement={"legacy-orders": "lab-2"}, observed=State.of([observed]))
    [instance] = [r for r in DRIVER.desired(ctx) if r.kind is Kind.INSTANCE]
    assert instance.attrs["adopted"] is True and instance.attrs["owner"] == "legacy_app"


def test_a_database_owned_by_a_superuser_says_so_for_the_diff() -> None:
    raw = {"packages": {"15": "15.9"}, "clusters": [{
        "version": "15", "name": "main", "port": 5432, "running": True, "start": "auto", "unit": {"active": True},
        "roles": [{"name": "postgres", "login": True, "superuser": True, "connlimit": -1}],
        "databases": [{"name": "legacy_orders", "owner": "postgres", "connlimit": -1, "size": 1,
                       "acl": None}]}]}  # fmt: skip
    parsed = {r.address: r for r in DRIVER.parse("lab-2", raw, lambda _purpose: None)}  # type: ignore[arg-type,return-value]
    assert parsed["instance.legacy-orders"].attrs["owner_superuser"] is True


def test_the_plan_says_will_be_adopted_and_counts_it_apart() -> None:
    change = Change(action=Action.ADOPT, address="instance.legacy-orders", kind=Kind.INSTANCE, node="lab-2",
                    engine="postgres", attrs=[AttrChange(field="connections", old=None, new=20)],
                    reason="exists; svcctl records it as this environment's")  # fmt: skip
    plan = Plan(environment="lab", changes=[change])
    text = render_text(plan)
    assert "# instance.legacy-orders will be adopted" in text
    assert '<= resource "instance" "legacy-orders" {' in text
    assert "Plan: 1 to adopt, 0 to add, 0 to change, 0 to destroy." in text
    assert '"adopt": 1' in render_json(plan) and '"action": "adopt"' in render_json(plan)


def _engine(installed: bool, recorded: dict[str, object] | None) -> Resource:
    return Resource(kind=Kind.ENGINE, name="lab-2.postgres", node="lab-2", engine="postgres",
                    attrs={"installed": installed}, recorded=recorded)  # fmt: skip


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (None, {"installed_by": "svcctl"}),  # a new node: this apply installs it
        (_engine(False, None), {"installed_by": "svcctl"}),
        (_engine(True, None), {"installed_by": "existing"}),  # a server svcctl did not set up
        (_engine(True, {"installed_by": "existing"}), {"installed_by": "existing"}),  # kept for good
        (_engine(True, {"installed_by": "svcctl"}), {"installed_by": "svcctl"}),
        (_engine(True, {"version": "15"}), {}),  # an older svcctl's record does not say: nothing claimed
    ],
)
def test_the_registry_keeps_who_installed_an_engine(observed: Resource | None, expected: dict[str, str]) -> None:
    assert installed_by(observed) == expected


def test_restarting_an_engine_svcctl_did_not_install_is_a_warning_of_its_own() -> None:
    want = Resource(kind=Kind.ENGINE, name="lab-2.postgres", node="lab-2", engine="postgres",
                    attrs={"installed": True, "listen_addresses": "*", "installed_by": "existing"})  # fmt: skip
    have = want.model_copy(update={"attrs": {"installed": True, "listen_addresses": "localhost"},
                                   "recorded": {"installed_by": "existing"}})  # fmt: skip
    plan = diff(State.of([want]), State.of([have]))
    [change] = plan.changes
    assert change.restarts_service
    assert plan.warnings == [
        "engine.lab-2.postgres was not installed by svcctl, and this apply restarts it (listen_addresses changes): "
        "every client connected to it now loses its connection"
    ]
    ours = diff(State.of([want.model_copy(update={"attrs": {**want.attrs, "installed_by": "svcctl"}})]),
                State.of([have]))  # fmt: skip
    assert ours.warnings == []
