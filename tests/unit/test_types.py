"""The strict string types: what each accepts, and that every one refuses control characters and templates."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from svcctl.model import types

ACCEPTED: list[tuple[Callable[[str], str], str]] = [
    (types.check_host, "lab-1"),
    (types.check_host, "db.example.org"),
    (types.check_host, "10.0.0.11"),
    (types.check_host, "fd00::11"),
    (types.check_host, "db_1"),
    (types.check_user, "deploy"),
    (types.check_user, "_svc.db-1"),
    (types.check_cidr, "10.0.0.0/24"),
    (types.check_cidr, "10.0.0.7/32"),
    (types.check_cidr, "fd00::/64"),
    (types.check_version, "15"),
    (types.check_version, "10.11"),
    (types.check_label_key, "topology.example/zone"),
    (types.check_label_value, ""),
    (types.check_label_value, "eu-west-1a"),
    (types.check_app_name, "Orders.API_v2"),
    (types.check_path, "keys/id_ed25519"),
    (types.check_path, "~/.ssh/known hosts"),
    (types.check_text, "Small plan — für Tests ✓"),
    (types.check_jump_host, "ops@bastion:2222,ssh://[fd00::1]:22"),
    (types.check_environment_name, "prod.eu-1"),
    (types.check_reference, "orders-db"),
]

REFUSED: list[tuple[Callable[[str], str], str, str]] = [
    (types.check_host, "lab-1;id", "not a host name"),
    (types.check_host, "-oProxyCommand=id", "not a host name"),
    (types.check_host, "fe80::1%eth0", "scope id"),
    (types.check_host, "a" * 254, "at most 253"),
    (types.check_user, "root id", "not a Unix user name"),
    (types.check_user, "a" * 33, "not a Unix user name"),
    (types.check_cidr, "10.0.0.1", "not written in canonical form; write 10.0.0.1/32"),
    (types.check_cidr, "10.0.0.1/24", "host bits set; write the network address: 10.0.0.0/24"),
    (types.check_cidr, "FD00::/64", "canonical form; write fd00::/64"),
    (types.check_cidr, "fe80::%lo/64", "scope id"),
    (types.check_cidr, "010.0.0.0/8", "not an IP network"),
    (types.check_version, "15.x", "dot-separated numbers"),
    (types.check_version, "1.2.3.4.5", "dot-separated numbers"),
    (types.check_label_key, "-zone", "must be 1 to 63"),
    (types.check_label_value, "a b", "must be at most 63"),
    (types.check_app_name, "web app", "must be 1 to 63"),
    (types.check_path, "-F/tmp/x", "starts with -"),
    (types.check_text, "x" * 1001, "longer than 1000"),
    (types.check_jump_host, "bastion;id", "not a host name"),
    (types.check_jump_host, "a b@bastion", "it contains a space"),
    (types.check_environment_name, ".hidden", "must be 1 to 64"),
    (types.check_reference, "a b", "is not a name"),
]

EVERY_CHECK = sorted({check for check, *_ in ACCEPTED}, key=lambda f: f.__name__)
HOSTILE = ["a\nb", "a\rb", "a\x1b[2Jb", "a\x00b", "a\u202eb", "a\u2028b", "a{{ x }}b", "a{% if %}b", "a{# c #}b"]


@pytest.mark.parametrize(("check", "value"), ACCEPTED, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_accepted_values_come_back_unchanged(check: Callable[[str], str], value: str) -> None:
    assert check(value) == value


@pytest.mark.parametrize(("check", "value", "says"), REFUSED, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_refused_values_say_why(check: Callable[[str], str], value: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        check(value)
    assert says in str(info.value)


@pytest.mark.parametrize("check", EVERY_CHECK, ids=lambda f: f.__name__)
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_no_type_accepts_a_control_character_or_a_template(check: Callable[[str], str], value: str) -> None:
    with pytest.raises(ValueError) as info:
        check(value)
    message = str(info.value)
    assert types.unsafe_character(message) is None, "the message itself must be printable"
    assert "never allowed" in message
