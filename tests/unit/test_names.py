"""Name rules: the strict pattern, reserved names, and the SQL identifier mapping."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svcctl.model.names import NAME_MAX, NAME_RULE, is_valid_name, name_problem, sql_ident


@pytest.mark.parametrize("name", ["ab", "orders-db", "db-1", "a1", "x" * 24, "a-b-c-d", "web2"])
def test_valid_names(name: str) -> None:
    assert name_problem("instance", name) is None
    assert is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    ["a", "x" * 25, "Orders", "orders_db", "orders--db", "orders-", "-orders", "1db", "db.1", "db 1", "", "dé"],
)
def test_invalid_names_say_the_rule(name: str) -> None:
    assert name_problem("instance", name) == f'instance name "{name}" is not allowed; {NAME_RULE}'


@pytest.mark.parametrize("name", ["postgres", "mysql", "redis", "root", "svcctl", "svcctl2", "pg-x", "all"])
def test_reserved_names(name: str) -> None:
    assert name_problem("app", name) == (
        f'app name "{name}" is reserved (it collides with engine or system names); choose another'
    )
    assert name_problem("service", name, reserved=False) is None


def test_non_string_name() -> None:
    assert name_problem("node", 7) == f"node name 7 is not a string; {NAME_RULE}"


def test_sql_ident_maps_hyphens_and_refuses_bad_names() -> None:
    assert sql_ident("orders-db") == "orders_db"
    with pytest.raises(ValueError, match="is not allowed"):
        sql_ident("orders_db")
    with pytest.raises(ValueError, match="is not allowed"):
        sql_ident('x"; DROP TABLE t; --')


@given(
    st.from_regex(r"[a-z](-?[a-z0-9]){1,11}", fullmatch=True), st.from_regex(r"[a-z](-?[a-z0-9]){1,11}", fullmatch=True)
)
def test_sql_ident_is_injective(left: str, right: str) -> None:
    if left != right:
        assert sql_ident(left) != sql_ident(right)


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    """Every name the rule allows, built directly: a letter, then letters or digits, each maybe after one hyphen."""
    name = draw(st.sampled_from(string.ascii_lowercase))
    for hyphen, char in draw(
        st.lists(
            st.tuples(st.booleans(), st.sampled_from(string.ascii_lowercase + string.digits)),
            min_size=1,
            max_size=NAME_MAX,
        )
    ):
        piece = f"-{char}" if hyphen else char
        if len(name) + len(piece) > NAME_MAX:
            break
        name += piece
    return name


def assert_safe_identifier(ident: str) -> None:
    """An unquoted SQL identifier: 2 to 24 lowercase ASCII letters, digits and underscores, a letter first."""
    assert 2 <= len(ident) <= 24
    assert ident.isascii() and (ident.replace("_", "").isalnum())
    assert ident[0].isalpha() and ident == ident.lower()


@given(valid_names())
def test_every_accepted_name_is_a_safe_identifier(name: str) -> None:
    assert is_valid_name(name, reserved=False), name  # the generator builds only names the rule allows
    assert_safe_identifier(sql_ident(name))


_REFUSED_CHARS = "AZ_. \t\né١ａ"  # case, separators, whitespace, look-alikes and non-ASCII letters and digits


def assert_refused(name: str) -> None:
    assert not is_valid_name(name, reserved=False), name
    with pytest.raises(ValueError, match="is not allowed"):
        sql_ident(name)


@pytest.mark.parametrize("char", list(_REFUSED_CHARS), ids=ascii)
@settings(max_examples=30)  # per character
@given(name=valid_names(), data=st.data())
def test_a_valid_name_with_a_foreign_character_inside_is_refused(char: str, name: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(1, len(name) - 1), label="at")
    assert_refused(name[:at] + char + name[at:])


# Each turns a valid name into one the rule refuses; `at` is a position inside the name.
_MISSHAPEN: dict[str, Callable[[str, int], str]] = {
    "digit first": lambda name, at: "0" + name,
    "hyphen first": lambda name, at: "-" + name,
    "hyphen last": lambda name, at: name + "-",
    "double hyphen": lambda name, at: name[:at] + "--" + name[at:],
    "too long": lambda name, at: name + "x" * (NAME_MAX + 1 - len(name)),
    "too short": lambda name, at: name[0],
}


@pytest.mark.parametrize("shape", _MISSHAPEN)
@settings(max_examples=30)  # per shape
@given(name=valid_names(), data=st.data())
def test_a_valid_name_misshapen_is_refused(shape: str, name: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(1, len(name) - 1), label="at")
    assert_refused(_MISSHAPEN[shape](name, at))


@given(st.text(max_size=30))
def test_any_text_is_refused_or_a_safe_identifier(name: str) -> None:
    try:
        ident = sql_ident(name)
    except ValueError:
        assert not is_valid_name(name, reserved=False)
    else:
        assert ident == name.replace("-", "_")
        assert_safe_identifier(ident)
