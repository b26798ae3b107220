"""libyaml's composer is taken only where its tree is the round-trip composer's (svcctl.model.compose)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from svcctl.model import compose
from svcctl.model.loader import load_environment
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(compose.CParser is None, reason="ruamel.yaml.clib is not installed here")


def shape(data: Any) -> Any:
    """The constructed data with every mapping's and sequence's line/column positions, for comparison."""
    if isinstance(data, CommentedMap):
        items = {str(k): (data.lc.key(k), data.lc.value(k), type(v).__name__, shape(v)) for k, v in data.items()}
        return {"@": (data.lc.line, data.lc.col), **items}
    if isinstance(data, CommentedSeq):
        return {"@": (data.lc.line, data.lc.col), "items": [(data.lc.item(i), shape(v)) for i, v in enumerate(data)]}
    return (type(data).__name__, repr(data))  # repr: nan is not nan, and a TaggedScalar equals only itself


def both(text: str) -> tuple[Any, Any]:
    """The constructed documents' shapes, composed by `compose_all` and by the round-trip composer alone (or
    the error each raised)."""

    def run(compose_with: Any) -> Any:
        rt = YAML(typ="rt")
        try:
            return [shape(rt.constructor.construct_document(d)) for d in compose_with(text, rt)]
        except Exception as exc:  # the same error, whichever composer saw it first
            return (type(exc).__name__, str(exc))

    return run(compose.compose_all), run(lambda t, rt: list(rt.compose_all(io.StringIO(t))))


# Files with anchors, tags or directives never take libyaml (test below); an alias bomb is not constructed here.
YAML_FILES = sorted(
    p
    for p in [*REPO.glob("examples/**/*.y*ml"), *REPO.glob("tests/**/*.y*ml")]
    if p.suffix in (".yml", ".yaml") and compose.fast_path(p.read_text(errors="replace"))
)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_file_of_the_repository_composes_the_same_both_ways(path: Path) -> None:
    fast, slow = both(path.read_text())
    assert fast == slow


def test_the_repositorys_anchored_or_tagged_files_take_the_round_trip_composer() -> None:
    files = [*REPO.glob("tests/unit/loader_cases/yaml-*/*.yaml")]
    marked = [p for p in files if any(c in p.read_text(errors="replace") for c in "&*!%")]
    assert marked, "the loader cases include anchors and tags"
    assert not [p for p in marked if compose.fast_path(p.read_text(errors="replace"))]
    assert len(YAML_FILES) > 100  # the examples and most loader cases do take libyaml


SCALARS = ["yes", "no", "on", "off", "y", "true", "True", "null", "~", "0o17", "017", "0x1f", "1_000", "1e3",
           ".inf", ".nan", "2026-12-01", "2026-12-01T10:00:00Z", "12:30", "1:20:30", "15", "15.0", "+12", "-0",
           "0b101", "=", "abc", '"q"', "'s'", "'15'", "[1, 2]", "{a: 1}", "|\n  block\n  text",
           ">\n  folded"]  # fmt: skip


def test_scalars_of_every_kind_resolve_and_construct_the_same() -> None:
    text = "".join(f"k{i}: {v}\n" for i, v in enumerate(SCALARS))
    assert compose.fast_path(text)
    fast, slow = both(text)
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",
        "a: !!str 15\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: caf\u00e9\n",
        "a: [1, 2\n",
        "a: 1\n a: 2\n",
        "a:\nb: 1\n",
    ],
    ids=["anchor", "tag", "directive", "non-ascii", "unclosed", "bad-indent", "empty-value"],
)
def test_what_the_c_composer_could_read_otherwise_takes_the_round_trip_composer(text: str) -> None:
    if any(c in text for c in "&*!%") or not text.isascii():
        assert not compose.fast_path(text)
    rt = YAML(typ="rt")
    try:
        expected: Any = [rt.constructor.construct_document(d) for d in YAML(typ="rt").compose_all(io.StringIO(text))]
    except Exception as exc:
        with pytest.raises(type(exc)):
            compose.compose_all(text, YAML(typ="rt"))
        return
    got = [rt.constructor.construct_document(d) for d in compose.compose_all(text, YAML(typ="rt"))]
    assert [shape(d) for d in got] == [shape(d) for d in expected]


def test_a_big_environment_loads_the_same_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["environment: big", "nodes:", "  n1: {host: n1.example, engines: [postgres]}", "services:",
             "  postgres: {engine: postgres, versions: ['15']}", "plans:",
             "  pg: {service: postgres, storage_mb: 10, connections: 2}", "instances:"]  # fmt: skip
    lines += [f"  db{i}: {{plan: pg, node: n1, protect: false}}" for i in range(300)]
    lines += ["apps:", "  app: {manifest: apps/app.yml, format: cf}", "bindings:"]
    lines += [f"  - {{app: app, instance: db{i}, role: readwrite}}" for i in range(300)]
    env = tmp_path / "big"
    (env / "apps").mkdir(parents=True)
    (env / "svcctl.yaml").write_text("\n".join(lines) + "\n")
    fast = load_environment(env)
    monkeypatch.setattr(compose, "CParser", None)
    slow = load_environment(env)
    assert fast.model_dump() == slow.model_dump()
    assert len(fast.instances) == 300
