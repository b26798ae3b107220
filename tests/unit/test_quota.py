"""Quota enforcement (storage_enforce): over its storage quota, an instance's readwrite bindings read only.

As the Cloud Foundry MySQL node's quota enforcer, but declared: the plan shows `quota_exceeded` and each
binding's role change, and apply carries them out. The e2e proof is tests/e2e/test_quota.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from svcctl.drivers.base import DesiredContext
from svcctl.drivers.postgres.driver import DRIVER
from svcctl.errors import InvalidEnvironment
from svcctl.model.loader import load_environment
from svcctl.state import Kind, Resource, State
from tests.conftest import REPO

LAB = (REPO / "examples" / "lab" / "svcctl.yaml").read_text()


def _env(tmp_path: Path, plan: str) -> Path:
    path = tmp_path / "svcctl.yaml"
    path.write_text(LAB.replace("  pg-small: {service: postgres, storage_mb: 512, connections: 20}", plan, 1))
    return path


def _observed(size_mb: int) -> State:
    return State.of([Resource(kind=Kind.INSTANCE, name="orders-db", node="lab-1", engine="postgres",
                              attrs={"size_mb": size_mb})])  # fmt: skip


def _desired(tmp_path: Path, plan: str, observed: State) -> dict[str, Resource]:
    env = load_environment(_env(tmp_path, plan))
    ctx = DesiredContext(env=env, placement={"orders-db": "lab-1"}, observed=observed)
    return {r.address: r for r in DRIVER.desired(ctx)}


ENFORCED = "  pg-small: {service: postgres, storage_mb: 512, storage_enforce: true, connections: 20}"


@pytest.mark.parametrize(("size", "over"), [(513, True), (512, False), (10, False)])
def test_over_its_enforced_quota_an_instance_says_so_and_its_writers_read_only(
    tmp_path: Path, size: int, over: bool
) -> None:
    desired = _desired(tmp_path, ENFORCED, _observed(size))
    assert desired["instance.orders-db"].attrs["quota_exceeded"] is over
    assert desired["binding.web.orders-db"].attrs["role"] == ("readonly" if over else "readwrite")


def test_a_new_instance_is_not_over_its_quota(tmp_path: Path) -> None:
    desired = _desired(tmp_path, ENFORCED, State())
    assert desired["instance.orders-db"].attrs["quota_exceeded"] is False
    assert desired["binding.web.orders-db"].attrs["role"] == "readwrite"


def test_without_enforcement_over_quota_changes_nothing(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "  pg-small: {service: postgres, storage_mb: 512, connections: 20}", _observed(9999))
    assert "quota_exceeded" not in desired["instance.orders-db"].attrs
    assert desired["binding.web.orders-db"].attrs["role"] == "readwrite"


@pytest.mark.parametrize(
    "plan",
    [
        "  pg-small: {service: postgres, storage_enforce: true, connections: 20}",
        "  pg-small: {service: redis, memory_mb: 16, storage_enforce: true}",
    ],
)
def test_enforcement_needs_a_storage_quota_on_a_database_plan(tmp_path: Path, plan: str) -> None:
    with pytest.raises(InvalidEnvironment) as failed:
        load_environment(_env(tmp_path, plan))
    assert any(
        "plan pg-small: storage_enforce needs storage_mb on a postgres or mysql plan" in p.message
        for p in failed.value.problems
    ), failed.value.problems
