"""svcctl.plan.escape: untrusted strings made inert for a terminal and for Markdown, checked by rendering them.

The Markdown checks render with markdown-it-py (CommonMark with raw HTML, as GitHub allows some), so
"inert" means what a renderer does, not what a regex hopes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from svcctl.model.types import is_unsafe_char
from svcctl.plan.escape import for_markdown, for_terminal, markdown_code

HOSTILE = [
    "\x1b[2J\x1b[H",
    "\x1b]0;title\x07",
    "\x9b31m",
    "txt.\u202eexe",
    "a\u2028b\u2029c",
    "line\nbreak\r\tend",
    "</details><img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![x](https://evil.example/x.png)",
    "| a | b |",
    "```` fence",
    "`",
    " ` ",
    "# heading",
    "> quote",
    "- item",
    "1. item",
    "***",
    "**bold** _em_ ~~del~~",
    "&lt;script&gt; &#x202e;",
    "<https://evil.example>",
    "<!-- comment -->",
    "\\`escaped\\`",
    "trailing backslash \\",
    "$x^2$",
    "\udc80 lone surrogate",
    "\U000f0000 private use",
]


def _md() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _text(value: str) -> str:
    """What a value must render as: its terminal-escaped text, HTML-escaped."""
    shown = for_terminal(value)
    return shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# -- terminal -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain café", "plain café"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),
        ("\u202e\u2066\u200b\ufeff", "\\u202e\\u2066\\u200b\\ufeff"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\udc80", "\\udc80"),
        ("\U000f0000\U0010fffd", "\\U000f0000\\U0010fffd"),
        ("\u0378", "\\u0378"),  # unassigned
        ("non\u00a0breaking and\u3000ideographic spaces", "non\u00a0breaking and\u3000ideographic spaces"),
    ],
)
def test_for_terminal_shows_control_and_format_characters_as_escapes(raw: str, shown: str) -> None:
    assert for_terminal(raw) == shown


def test_for_terminal_keeps_line_feeds_only_when_asked() -> None:
    assert for_terminal("a\nb\r\x1b", newlines=True) == "a\nb\\r\\x1b"
    assert for_terminal("a\nb") == "a\\nb"


@given(st.text())
def test_for_terminal_leaves_no_unsafe_character_and_changes_nothing_else(value: str) -> None:
    out = for_terminal(value)
    assert not any(is_unsafe_char(c) for c in out)
    out.encode("utf-8")  # no lone surrogate left to fail printing
    if not any(is_unsafe_char(c) for c in value):
        assert out == value


# -- markdown -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_for_markdown_renders_as_its_text_in_a_paragraph_a_list_item_and_a_table_cell(value: str) -> None:
    md = _md()
    assert md.render(f"x {for_markdown(value)} x") == f"<p>x {_text(value)} x</p>\n"
    assert md.render(f"- x{for_markdown(value)}x") == f"<ul>\n<li>x{_text(value)}x</li>\n</ul>\n"
    table = md.render(f"| h |\n| --- |\n| {for_markdown(value)} |\n")
    assert table.count("<td>") == 1 and f"<td>{_text(value).strip()}</td>" in table


@given(st.text())
def test_for_markdown_renders_exactly_its_text_whatever_it_is(value: str) -> None:
    assert _md().render(f"x {for_markdown(value)} x") == f"<p>x {_text(value)} x</p>\n"


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_code_is_one_code_span_showing_the_text(value: str) -> None:
    out = _md().render(f"- {markdown_code(value)}")
    assert out == f"<ul>\n<li><code>{_text(value)}</code></li>\n</ul>\n"


@given(st.text(min_size=1))
def test_markdown_code_renders_exactly_its_text_whatever_it_is(value: str) -> None:
    assert _md().render(f"x {markdown_code(value)} x") == f"<p>x <code>{_text(value)}</code> x</p>\n"


def test_markdown_code_delimiter_outgrows_backtick_runs() -> None:
    assert markdown_code("plain") == "`plain`"
    assert markdown_code("a `b` c") == "``a `b` c``"
    assert markdown_code("```") == "```` ``` ````"
    assert markdown_code("  both sides  ") == "`   both sides   `"
    assert markdown_code("") == ""
