"""Binding users read back from an engine: one rule for every SQL driver, the inverse of `binding_user`."""

from __future__ import annotations

import pytest

from svcctl.drivers.base import binding_user, parse_binding_user


@pytest.mark.parametrize(
    ("app", "instance", "rotation"), [("web", "orders-db", 0), ("my-app", "db", 3), ("a1", "b-2-c", 12)]
)
def test_a_binding_user_reads_back_as_its_app_instance_and_rotation(app: str, instance: str, rotation: int) -> None:
    user = binding_user(app, instance, rotation)
    assert parse_binding_user(user, {instance.replace("-", "_")}, ()) == (app, instance, rotation)


def test_the_granted_database_decides_where_the_app_name_ends() -> None:
    assert parse_binding_user("sv_my_app_db_r0", {"app_db"}, {"app_db", "db"}) == ("my", "app-db", 0)
    assert parse_binding_user("sv_my_app_db_r0", {"db"}, {"app_db", "db"}) == ("my-app", "db", 0)
    assert parse_binding_user("sv_my_app_db_r0", set(), {"app_db", "db"}) is None  # ambiguous: not svcctl's


@pytest.mark.parametrize(
    "user",
    ["sv_web_db_r0\n", "sv_web_db_r01", "sv_web_db_r", "sv_web__db_r0", "sv_Web_db_r0", "xsv_web_db_r0", "sv_web_r0"],
)
def test_other_users_are_not_svcctls(user: str) -> None:
    assert parse_binding_user(user, {"db"}, {"db"}) is None
