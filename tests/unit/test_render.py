"""Renderers: golden text and Markdown for a representative plan; JSON and Markdown checked by parsing them.

The representative plan is data (render_cases/representative.plan.json), so these tests do not depend on the
diff.  So is a hostile one (render_cases/hostile.plan.json): names, values, reasons, lists and the environment
carrying terminal escapes, bidi overrides, newlines, pipes, backticks and HTML/Markdown break-outs.
To accept an intended change to the output: SVCCTL_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py,
then review the golden files' diff before committing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from svcctl.model.types import is_unsafe_char
from svcctl.plan.diff import diff
from svcctl.plan.escape import for_terminal
from svcctl.plan.render import render, render_json, render_markdown, render_text
from svcctl.plan.types import Action, AttrChange, Cause, Change, Plan
from svcctl.state import Kind, Resource, State

CASES = Path(__file__).parent / "render_cases"
PLAN = Plan.model_validate_json((CASES / "representative.plan.json").read_text())
HOSTILE = Plan.model_validate_json((CASES / "hostile.plan.json").read_text())
EMPTY = Plan(environment="staging", fingerprint="f" * 64)
TRUNCATION = re.compile(
    r"^_Plan truncated: (\d+) more changes? not shown; run `svcctl plan` locally for the full plan\._$", re.M
)


def _golden(name: str, actual: str) -> None:
    path = CASES / name
    if os.environ.get("SVCCTL_UPDATE_GOLDEN") and (not path.exists() or path.read_text() != actual):
        path.write_text(actual)
        pytest.fail(f"rewrote {path}: review the diff, then run again without SVCCTL_UPDATE_GOLDEN")
    assert actual == path.read_text()


def _secret_plan() -> tuple[Plan, set[str]]:
    """A plan made by the real diff from states full of secrets, in every sensitive attribute shape."""
    secrets = {"hunter2-current", "hunter2-stale", "adm1n-new", "adm1n-old", "pw-created-9"}
    desired = State.of(
        [
            Resource(
                kind=Kind.ENGINE,
                name="db-1.mysql",
                node="db-1",
                engine="mysql",
                attrs={"version": "10.11", "admin_password": "adm1n-new"},
            ),
            Resource(
                kind=Kind.BINDING,
                name="web.orders",
                node="db-1",
                engine="mysql",
                attrs={"role": "readwrite", "credentials": "hunter2-current"},
            ),
            Resource(
                kind=Kind.BINDING,
                name="api.orders",
                node="db-1",
                engine="mysql",
                attrs={"role": "readonly", "password": "pw-created-9"},
            ),
        ]
    )
    observed = State.of(
        [
            Resource(
                kind=Kind.ENGINE,
                name="db-1.mysql",
                node="db-1",
                engine="mysql",
                attrs={"version": "10.11", "admin_password": "adm1n-old"},
                recorded={"version": "10.11", "admin_password": "adm1n-old"},
            ),
            Resource(
                kind=Kind.BINDING,
                name="web.orders",
                node="db-1",
                engine="mysql",
                attrs={"role": "readwrite", "credentials": "hunter2-stale"},
                recorded={"role": "readwrite", "credentials": "hunter2-current"},
            ),
        ]
    )
    return diff(desired, observed), secrets


def _walk(value: Any) -> Iterator[Any]:
    """Every key and value in a JSON document, at any depth."""
    yield value
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


# -- text ---------------------------------------------------------------------------------------------------


def test_text_golden() -> None:
    _golden("representative.txt", render_text(PLAN))


def test_text_sections_come_in_order() -> None:
    text = render_text(PLAN)
    titles = [
        "Objects changed outside svcctl (drift):",
        "svcctl will perform the following actions:",
        "Not managed by this environment (left alone):",
        "Warning: ",
        "Plan: 4 to add, 4 to change, 2 to destroy.",
    ]
    positions = [text.index(t) for t in titles]
    assert positions == sorted(positions)
    assert text.endswith("Plan: 4 to add, 4 to change, 2 to destroy.\n")


def test_text_no_changes() -> None:
    assert render_text(EMPTY) == "No changes. The hosts match the configuration.\n"


def test_text_errors_block_the_plan() -> None:
    plan = EMPTY.model_copy(update={"errors": ["instance.a is protected and no longer declared; ..."]})
    assert render_text(plan) == (
        "Error: instance.a is protected and no longer declared; ...\n"
        "\n"
        "No changes planned, but the errors above must be fixed.\n"
    )
    with_changes = PLAN.model_copy(update={"errors": ["boom"]})
    assert render_text(with_changes).endswith(
        "Error: boom\n\nPlan: 4 to add, 4 to change, 2 to destroy.\n"
        "This plan cannot be applied until the errors above are fixed.\n"
    )


def test_text_colour_only_when_asked() -> None:
    assert "\x1b[" not in render_text(PLAN)
    coloured = render_text(PLAN, color=True)
    assert '  \x1b[32m+\x1b[0m resource "instance" "orders-db" {' in coloured
    assert '  \x1b[33m~\x1b[0m resource "instance" "reports" {' in coloured
    assert '  \x1b[31m-\x1b[0m resource "instance" "old-db" {' in coloured
    assert '\x1b[31m-\x1b[0m/\x1b[32m+\x1b[0m resource "instance" "cache" {' in coloured
    # removing the colour codes gives back the plain text exactly
    assert re.sub(r"\x1b\[\d+m", "", coloured) == render_text(PLAN)


def test_text_attribute_symbols_within_an_update() -> None:
    change = Change(
        action=Action.UPDATE,
        address="instance.sessions",
        kind=Kind.INSTANCE,
        node="db-2",
        engine="redis",
        attrs=[
            AttrChange(field="eviction", old=None, new="allkeys-lru"),
            AttrChange(field="memory_mb", old=64, new=128),
            AttrChange(field="password", sensitive=True),
            AttrChange(field="port", old=6380, new=None, cause=Cause.DRIFT),
        ],
    )
    text = render_text(Plan(changes=[change]))
    assert text == (
        "svcctl will perform the following actions:\n"
        "\n"
        "  # instance.sessions will be updated in-place\n"
        '  ~ resource "instance" "sessions" {\n'
        '      + eviction  = "allkeys-lru"\n'
        "      ~ memory_mb = 64 -> 128\n"
        "      ~ password  = (sensitive value)\n"
        "      - port      = 6380 # (changed outside svcctl)\n"
        "    }\n"
        "\n"
        "Plan: 0 to add, 1 to change, 0 to destroy.\n"
    )


# -- json ---------------------------------------------------------------------------------------------------


def test_json_document() -> None:
    doc = json.loads(render_json(PLAN))
    assert list(doc) == [
        "format_version",
        "environment",
        "summary",
        "changes",
        "drift",
        "unmanaged",
        "warnings",
        "errors",
        "fingerprint",
    ]
    assert doc["format_version"] == 1
    assert doc["environment"] == "staging"
    assert doc["summary"] == {"add": 4, "change": 4, "destroy": 2, "adopt": 0, "drift": 3, "config": 6}
    assert doc["drift"] == ["instance.audit", "instance.sessions", "binding.web.reports"]
    assert doc["unmanaged"] == ["instance.legacy on db-1"]
    assert doc["warnings"] == ["instance.reports on db-1 uses 612 MB of its 512 MB quota (over quota)"]
    assert doc["errors"] == []
    assert doc["fingerprint"] == PLAN.fingerprint
    assert len(doc["changes"]) == len(PLAN.changes)
    cache = next(c for c in doc["changes"] if c["address"] == "instance.cache")
    assert cache == {
        "action": "replace",
        "address": "instance.cache",
        "kind": "instance",
        "node": "db-2",
        "engine": "redis",
        "cause": "config",
        "restarts_service": False,
        "destroys_data": True,
        "reason": None,
        "attributes": [
            {
                "name": "major_version",
                "old": "6",
                "new": "7",
                "cause": "config",
                "sensitive": False,
                "forces_replace": True,
            }
        ],
    }


def test_json_no_changes() -> None:
    doc = json.loads(render_json(EMPTY))
    assert doc["summary"] == {"add": 0, "change": 0, "destroy": 0, "adopt": 0, "drift": 0, "config": 0}
    assert doc["changes"] == doc["drift"] == doc["errors"] == []


def test_no_secret_reaches_any_format() -> None:
    plan, secrets = _secret_plan()
    assert {a.field for c in plan.changes for a in c.attrs if a.sensitive} == {
        "admin_password",
        "credentials",
        "password",
    }
    for value in _walk(json.loads(render_json(plan))):
        assert not any(s in str(value) for s in secrets), value
    for out in (render_text(plan), render_text(plan, color=True), render_markdown(plan)):
        assert not any(s in out for s in secrets)


def test_renderers_mask_sensitive_values_even_if_a_plan_carries_them() -> None:
    """Defence in depth: a hand-made (or old) plan with values in a sensitive attr still prints none."""
    change = Change(
        action=Action.UPDATE,
        address="binding.web.orders",
        kind=Kind.BINDING,
        node="db-1",
        engine="postgres",
        attrs=[AttrChange(field="password", old="leak-old-1", new="leak-new-2", sensitive=True)],
    )
    plan = Plan(changes=[change])
    for out in (render_text(plan), render_json(plan), render_markdown(plan)):
        assert "leak-" not in out
        assert "(sensitive value)" in out or '"sensitive": true' in out


# -- markdown -----------------------------------------------------------------------------------------------


def _fenced(md: str) -> list[str]:
    """The lines inside the ```diff block; asserts there is exactly one and it is closed."""
    match = re.search(r"^(`{3,})diff\n(.*?)^\1$", md, re.S | re.M)
    assert match is not None, md
    assert md.count(match.group(1) + "diff") == 1
    return match.group(2).splitlines()


def test_markdown_golden() -> None:
    _golden("representative.md", render_markdown(PLAN))


def test_markdown_shape() -> None:
    md = render_markdown(PLAN)
    lines = md.splitlines()
    assert lines[0] == "#### svcctl plan: `staging`"
    assert "- `instance.legacy on db-1`" in lines
    assert lines[2] == "**Plan:** 4 to add, 4 to change, 2 to destroy · drift: 3 · errors: 0"
    assert md.index("**Warnings:**") < md.index("<details><summary>Show plan</summary>")
    assert md.rstrip().endswith("</details>")
    body = _fenced(md)
    assert body, "the diff block is empty"
    assert all(line[:1] in {"+", "-", "!", " "} for line in body)
    assert '!       major_version = "6" -> "7" # forces replacement' in body
    assert '-   resource "instance" "old-db" {' in body
    assert TRUNCATION.search(md) is None


def test_markdown_errors_come_first_as_bullets() -> None:
    md = render_markdown(PLAN.model_copy(update={"errors": ["first problem", "second problem"]}))
    assert "· errors: 2" in md.splitlines()[2]
    assert "**Errors** (this plan cannot be applied):\n- `first problem`\n- `second problem`\n" in md
    assert md.index("- `second problem`") < md.index("<details>")


def test_markdown_no_changes() -> None:
    md = render_markdown(EMPTY)
    assert md == "#### svcctl plan: `staging`\n\n**No changes.** · drift: 0 · errors: 0\n"


@pytest.mark.parametrize("max_chars", [400, 600, 900, 1200, 1600, 2000])
def test_markdown_cap_drops_whole_changes_and_closes_the_fence(max_chars: int) -> None:
    full = render_markdown(PLAN)
    assert len(full) > 2000  # so every cap above really cuts
    md = render_markdown(PLAN, max_chars=max_chars)
    assert len(md) <= max_chars
    note = TRUNCATION.search(md)
    assert note is not None
    hidden = int(note.group(1))
    if "<details>" in md:
        body = _fenced(md)
        assert all(line[:1] in {"+", "-", "!", " "} for line in body)
        shown = sum(1 for line in body if re.match(r"^  # \S+ (will|must) be ", line))
        assert body[-1] == " " and body[-2] == "    }"  # ends after a whole change
    else:
        shown = 0
    assert shown + hidden == len(PLAN.changes)
    assert md.startswith(full[: full.index("<details>")])  # summary and warnings are always kept


def test_markdown_cap_never_drops_the_summary_or_problems() -> None:
    """Below what the summary and warnings need, they are still kept whole: the cap gives way, not them."""
    full = render_markdown(PLAN)
    md = render_markdown(PLAN, max_chars=100)
    assert md == full[: full.index("<details>")] + "\n" + (
        "_Plan truncated: 9 more changes not shown; run `svcctl plan` locally for the full plan._\n"
    )


def test_markdown_cap_not_applied_when_it_fits() -> None:
    full = render_markdown(PLAN)
    assert render_markdown(PLAN, max_chars=len(full)) == full
    assert TRUNCATION.search(render_markdown(PLAN, max_chars=len(full) - 1)) is not None


def test_markdown_fence_outgrows_backticks_in_values() -> None:
    change = Change(
        action=Action.CREATE,
        address="instance.x",
        kind=Kind.INSTANCE,
        node="db-1",
        engine="postgres",
        attrs=[AttrChange(field="note", new="```` sneaky")],
    )
    md = render_markdown(Plan(changes=[change]))
    assert "`````diff\n" in md
    assert _fenced(md) == [
        " svcctl will perform the following actions:",
        " ",
        "  # instance.x will be created",
        '+   resource "instance" "x" {',
        '+       note = "```` sneaky"',
        "    }",
        " ",
    ]


# -- hostile strings --------------------------------------------------------------------------------------


def _raw_unsafe(text: str) -> list[str]:
    """Control and format characters (but the line feeds between lines) left in an output."""
    return [char for char in text if is_unsafe_char(char) and char != "\n"]


def _html(md: str) -> str:
    """The Markdown as GitHub would turn it into HTML (CommonMark with raw HTML, tables and strikethrough)."""
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(md)


def test_hostile_plan_carries_what_it_should() -> None:
    """The case really is hostile: raw ESC, C1 CSI, DEL, NUL, bidi, line separators, a private-use char."""
    strings = [HOSTILE.environment, *HOSTILE.unmanaged, *HOSTILE.warnings, *HOSTILE.errors]
    strings += [c.address for c in HOSTILE.changes] + [c.reason or "" for c in HOSTILE.changes]
    strings += [json.dumps([a.field, a.old, a.new]) for c in HOSTILE.changes for a in c.attrs]
    found = "".join(strings)
    for char in "\x1b\x9b\x7f\x07\u202e\u2028\u2029\U000f0000\n|`<>[]":
        assert char in found or json.dumps(char)[1:-1] in found, repr(char)


def test_hostile_text_golden() -> None:
    _golden("hostile.txt", render_text(HOSTILE))


def test_hostile_markdown_golden() -> None:
    _golden("hostile.md", render_markdown(HOSTILE))


def test_no_raw_control_or_format_character_reaches_any_format() -> None:
    for out in (render_text(HOSTILE), render_markdown(HOSTILE), render_json(HOSTILE)):
        assert _raw_unsafe(out) == []
    coloured = render_text(HOSTILE, color=True)
    assert set(re.findall(r"\x1b\[[0-9;]*m", coloured)) <= {"\x1b[0m", "\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[33m"}
    assert _raw_unsafe(re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == []  # the only escapes are svcctl's colours


def test_escaped_values_stay_visible_and_lines_stay_whole() -> None:
    text = render_text(HOSTILE)
    assert "  # instance.evil\\x1b[2J\\x1b[H will be created\n" in text
    assert "  # (deleted outside svcctl\\n| col | umn |\\n|---|---|\\n# not a heading)\n" in text
    assert '      + owner\\u202egpj.exe = "txt.\\u202eexe"\n' in text
    assert "\n# not a heading" not in text and "\n|---|" not in text


def test_json_is_ascii_and_gives_back_the_exact_strings() -> None:
    out = render_json(HOSTILE)
    assert out.isascii()
    doc = json.loads(out)
    assert doc["environment"] == HOSTILE.environment
    assert doc["errors"] == HOSTILE.errors and doc["unmanaged"] == HOSTILE.unmanaged
    assert [c["address"] for c in doc["changes"]] == [c.address for c in HOSTILE.changes]


def test_a_lone_surrogate_is_escaped_and_the_output_encodes() -> None:
    plan = EMPTY.model_copy(update={"errors": ["bad \udc80 name"], "unmanaged": ["x\ud800"]})
    for out in (render_text(plan), render_markdown(plan), render_json(plan)):
        out.encode("utf-8")  # a raw lone surrogate would make printing it fail
        assert _raw_unsafe(out) == []
    assert "Error: bad \\udc80 name\n" in render_text(plan)


def test_hostile_markdown_renders_no_html_link_image_table_or_heading_of_its_own() -> None:
    md = render_markdown(HOSTILE)
    html = _html(md)
    tags = set(re.findall(r"<(/?[a-z0-9]+)", html))
    assert tags <= {"h4", "/h4", "p", "/p", "strong", "/strong", "ul", "/ul", "li", "/li", "code", "/code",
                    "pre", "/pre", "details", "/details", "summary", "/summary"}, tags  # fmt: skip
    assert html.count("<details>") == 1 and html.count("</details>") == 1
    assert html.rstrip().endswith("</details>")
    # every listed value is one code span showing exactly its escaped text
    codes = re.findall(r"<code>(.*?)</code>", html)
    for value in (HOSTILE.environment, *HOSTILE.errors, *HOSTILE.warnings, *HOSTILE.unmanaged):
        shown = for_terminal(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert shown.replace('"', "&quot;") in codes, value
    # the diff block is one block holding every change line, closed by svcctl's own fence
    body = _fenced(md)
    assert sum(1 for line in body if "resource " in line) == len(HOSTILE.changes)
    assert all(line[:1] in {"+", "-", "!", " "} for line in body)


def test_a_hostile_plan_truncated_still_closes_its_fence_and_details() -> None:
    md = render_markdown(HOSTILE, max_chars=len(render_markdown(HOSTILE)) - 1)
    assert TRUNCATION.search(md) is not None
    html = _html(md)
    assert html.count("<details>") == html.count("</details>") <= 1
    assert "<img" not in html and "<script" not in html and "<a " not in html


# -- dispatch -----------------------------------------------------------------------------------------------


def test_render_dispatches() -> None:
    assert render(PLAN, "text") == render_text(PLAN)
    assert render(PLAN, "text", color=True) == render_text(PLAN, color=True)
    assert render(PLAN, "json") == render_json(PLAN)
    assert render(PLAN, "markdown") == render_markdown(PLAN)
    with pytest.raises(ValueError, match="unknown plan format 'yaml'"):
        render(PLAN, "yaml")  # type: ignore[arg-type]


# -- docs ---------------------------------------------------------------------------------------------------


def test_documented_example_matches_the_renderer() -> None:
    """docs/plan-json.md's example has exactly the keys render_json produces, so the doc cannot fall behind."""
    doc = (Path(__file__).parents[2] / "docs" / "plan-json.md").read_text()
    example = json.loads(doc.split("```json\n", 1)[1].split("\n```", 1)[0])
    rendered = json.loads(render_json(PLAN))
    assert list(example) == list(rendered)
    assert list(example["summary"]) == list(rendered["summary"])
    change_keys = {tuple(c) for c in example["changes"]} | {tuple(c) for c in rendered["changes"]}
    assert len(change_keys) == 1
    attr_keys = {tuple(a) for d in (example, rendered) for c in d["changes"] for a in c["attributes"]}
    assert len(attr_keys) == 1
    assert example["format_version"] == rendered["format_version"]
