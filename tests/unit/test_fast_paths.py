"""The plan's fast paths give exactly the answers of the slow ones they skip.

`diff._differing` asks DeepDiff only about keys whose values are not `identical`; `types.unsafe_character`
skips the per-character Unicode lookup for printable ASCII; `secrets.scram_sha256_matches` keeps its answers
for the process. Each is compared with the slow rule it stands in for, over many generated inputs.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest
from deepdiff import DeepDiff

from svcctl.hostlib.verifiers import scram_verifier
from svcctl.model import types
from svcctl.plan.diff import _differing, identical
from svcctl.secrets import scram_sha256_matches

SCALARS: list[Any] = [None, True, False, 0, 1, 2, 1.0, 0.0, "", "a", "1", "True", "b c"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 2 and pick < 0.15:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 2 and pick < 0.25:
        return {rng.choice("xyz"): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(SCALARS)


def _mutated(rng: random.Random, value: Any) -> Any:
    """`value`, sometimes changed a little: reordered, retyped (1 -> True, 1 -> 1.0), replaced."""
    pick = rng.random()
    if isinstance(value, list) and value and pick < 0.4:
        return rng.sample(value, len(value))  # same items, another order: equal to DeepDiff(ignore_order)
    if value is True and pick < 0.5:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and pick < 0.5:
        return float(value)
    if pick < 0.3:
        return _value(rng)
    return value


def _attrs(rng: random.Random) -> dict[str, Any]:
    return {k: _value(rng) for k in rng.sample("abcdef", rng.randint(0, 6))}


def _reference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = DeepDiff(old, new, ignore_order=True, verbose_level=2, threshold_to_diff_deeper=0).affected_root_keys
    return sorted(k for k in keys if old.get(k) is not None or new.get(k) is not None)


def test_differing_names_exactly_the_keys_deepdiff_names() -> None:
    rng = random.Random(15)
    for _ in range(3000):
        old = _attrs(rng)
        new = {k: _mutated(rng, v) for k, v in old.items() if rng.random() > 0.1}
        new.update({k: _value(rng) for k in rng.sample("abcdefg", rng.randint(0, 2))})
        assert _differing(old, new) == _reference(old, new), (old, new)


def test_attrs_that_share_few_keys_still_name_each_differing_key() -> None:
    # DeepDiff's default (threshold_to_diff_deeper=0.33) reports these as one change of the whole root
    assert _differing({"d": 0.0, "e": 2}, {"a": "1", "e": 2.0, "g": 0.0}) == ["a", "d", "e", "g"]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1, True),
        (True, 1, False),
        (1, 1.0, False),
        ([1, 2], [2, 1], False),  # not identical; DeepDiff with ignore_order decides
        ({"a": [1]}, {"a": [1]}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ((1,), [1], False),
    ],
)
def test_identical_is_strict_about_types_and_order(a: object, b: object, same: bool) -> None:
    assert identical(a, b) is same


def _slow_unsafe(value: str) -> str | None:
    for char in value:
        if unicodedata.category(char) in types._UNSAFE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def test_unsafe_character_agrees_with_the_unicode_categories_for_every_character() -> None:
    for code in [*range(0x3000), *range(0xD7F0, 0xE010), 0xFEFF, 0x10FFFF]:
        char = chr(code)
        for value in (char, f"ab{char}", f"{char}cd"):
            assert types.unsafe_character(value) == _slow_unsafe(value), hex(code)


def test_a_remembered_scram_answer_is_still_per_password_and_verifier() -> None:
    verifier = scram_verifier("right", salt=b"0123456789abcdef")
    for _ in range(2):  # the second round is answered from memory, and must give the same answers
        assert scram_sha256_matches("right", verifier)
        assert not scram_sha256_matches("wrong", verifier)
        assert not scram_sha256_matches("right", scram_verifier("right", salt=b"fedcba9876543210")[:-4] + "AAA=")
    from svcctl import secrets

    assert secrets._scram_matches.cache_info().hits >= 3  # asked again, answered from memory
    assert secrets._scram_matches.cache_info().maxsize == 8192  # bounded: a hostile node cannot grow it forever
