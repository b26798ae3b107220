"""svcctl's Redis ACL rules depend on the Redis major: Redis 6.0 refuses `&*`, Redis 7 needs it for channels."""

from __future__ import annotations

import pytest

from svcctl.apply.contract import redis_rules
from svcctl.drivers.redis.driver import role_of
from svcctl.hostlib.redis_acl import acl_rules, redis_major
from svcctl.state import Kind, Resource


@pytest.mark.parametrize(
    ("version", "major"), [("7", 7), ("6.0.16", 6), ("5:7.0.15-1~deb12u1", 7), ("8.0.2", 8), ("", None), (None, None)]
)
def test_the_major_is_read_from_every_form_svcctl_meets(version: object, major: int | None) -> None:
    assert redis_major(version) == major


def test_redis_6_rules_drop_the_channel_pattern_and_keep_everything_else() -> None:
    for role in ("admin", "readwrite", "readonly"):
        newest = acl_rules(role)
        assert "&*" in newest
        assert acl_rules(role, "6") == tuple(r for r in newest if r != "&*")
        assert acl_rules(role, "7") == acl_rules(role, "8") == newest


def test_observed_rules_are_svcctls_role_only_in_the_form_of_their_redis() -> None:
    six = list(acl_rules("readonly", "6"))
    assert role_of(six, "6") == "readonly"
    assert role_of(six, "7") == " ".join(six)  # on Redis 7 the same words give no channel: not svcctl's
    assert role_of(list(acl_rules("readwrite")), "7") == "readwrite"


def test_the_playbooks_get_the_rules_of_the_instance_version() -> None:
    binding = Resource(kind=Kind.BINDING, name="web.cache", node="n", engine="redis", attrs={"role": "readonly"})
    instance = Resource(kind=Kind.INSTANCE, name="cache", node="n", engine="redis", attrs={})
    assert redis_rules(binding, "6") == " ".join(acl_rules("readonly", "6"))
    assert redis_rules(instance, "8") == "~* &* +@all"
    assert redis_rules(instance.model_copy(update={"engine": "postgres"}), "15") is None
