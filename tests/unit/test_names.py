"""Name rules: the strict pattern, reserved names, and the SQL identifier mapping."""

from __future__ import annotations

import string

import pytest
from hypothesis import event, given
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


# Near misses (the characters of valid names plus some the rule refuses: case, '_', '.', space, non-ASCII)
# and any text at all.
_NEAR_MISSES = st.text(alphabet=string.ascii_lowercase[:6] + string.digits[:3] + "-_A. é", max_size=30)


@given(_NEAR_MISSES | st.text(max_size=30))
def test_a_refused_name_never_becomes_an_identifier(name: str) -> None:
    accepted = is_valid_name(name, reserved=False)
    event("accepted" if accepted else "refused")  # both branches run: see --hypothesis-show-statistics
    if accepted:
        assert sql_ident(name) == name.replace("-", "_")
        assert_safe_identifier(sql_ident(name))
    else:
        with pytest.raises(ValueError, match="is not allowed"):
            sql_ident(name)
