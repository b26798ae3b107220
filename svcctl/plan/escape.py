"""Escaping at print time: untrusted strings made inert for a terminal and for Markdown (a pull-request comment).

Object names, attributes, reasons and environment names in a plan can come from a node a hostile host
controls, or from an unreviewed pull request's YAML.  Printed raw, an ESC sequence drives the operator's
terminal (clears it, retitles it, rewrites earlier lines) and a bidi override makes text read other than it
is; in a comment, a backtick, `|`, `<details>` or `](javascript:` breaks out of its place.  The renderers
pass every such value through one of these functions where they format it.

Control and format characters are those `svcctl.model.types` refuses in every value (categories Cc, Cf,
Zl, Zp, Cs, Co, Cn); each is shown as a Python-style escape (`\\x1b`, `\\u202e`, `\\n`), so it stays visible.
"""

from __future__ import annotations

import re
import string

from svcctl.model.types import is_unsafe_char

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PUNCTUATION = frozenset(string.punctuation)
_BACKTICKS = re.compile(r"`+")


def _visible(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def for_terminal(text: str, *, newlines: bool = False) -> str:
    """`text` with every control and format character replaced by a visible escape (`\\x1b`, `\\u202e`).

    With `newlines=True`, line feeds are kept (for svcctl's own multi-line messages); carriage returns,
    which could overwrite a line, are still escaped.
    """
    if text.isprintable():  # no C* or Z* character but the space: nothing to escape (the common case)
        return text
    return "".join(
        _visible(char) if is_unsafe_char(char) and not (newlines and char == "\n") else char for char in text
    )


def for_markdown(text: str) -> str:
    """`text` for Markdown prose (a list item, a table cell): escaped for the terminal, then every ASCII
    punctuation character backslash-escaped.

    CommonMark (and GitHub's GFM) treats an escaped punctuation character as that literal character, and
    every Markdown and HTML construct (emphasis, code, links, images, HTML and entities, tables, headings,
    lists, strikethrough, math, autolinks) needs an unescaped punctuation character, so the result renders
    as exactly `text` and can open or close nothing.  GitHub's references (`@user`, `#12`) are made from
    rendered text, not Markdown: no escape stops them; use `markdown_code` where that matters.  Leading
    spaces are kept, so at the very start of a line four of them would still indent a (harmless) code block.
    """
    return "".join("\\" + char if char in _PUNCTUATION else char for char in for_terminal(text))


def markdown_code(text: str) -> str:
    """`text` as a Markdown code span, which GitHub shows verbatim: no Markdown, HTML, entity, autolink,
    @mention or #reference inside it is interpreted.

    The delimiter is one backtick longer than the longest run in `text`, so nothing inside can close it,
    and padding keeps leading or trailing backticks and spaces as they are.  Not for table cells (a `|`
    there splits the cell even inside a code span): use `for_markdown`.
    """
    shown = for_terminal(text)
    if not shown:
        return ""
    longest = max((len(run) for run in _BACKTICKS.findall(shown)), default=0)
    delimiter = "`" * (longest + 1)
    if shown[0] == "`" or shown[-1] == "`" or (shown[0] == " " and shown[-1] == " " and shown.strip(" ")):
        shown = f" {shown} "  # CommonMark strips exactly one space from each side of such a span
    return f"{delimiter}{shown}{delimiter}"
