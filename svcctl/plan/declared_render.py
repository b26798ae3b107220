"""Renderers of a DeclaredDiff (`svcctl diff`): text, Markdown and JSON, in the plan's conventions.

Text and the Markdown diff block show each entry as the plan shows a resource (`+`, `~`, `-`, Terraform's
layout), and Markdown puts a summary line and the risky changes up front with the rest folded in <details>,
as `svcctl plan -o markdown` does. Every name and value may come from an unreviewed pull request, so each is
escaped where it is formatted (svcctl.plan.escape); a sensitive field never has a value to print.
"""

from __future__ import annotations

import json
import re
from typing import Any

from svcctl.plan.declared import DeclaredChange, DeclaredDiff, FieldChange
from svcctl.plan.escape import for_terminal, markdown_code
from svcctl.plan.render import SENSITIVE_VALUE, Format
from svcctl.plan.types import Action

NO_CHANGES = "No declared changes: both sides declare the same environment."
RISKY_TITLE = "Risky changes:"
QUOTA_TITLE = "Quota changes:"
ROTATION_TITLE = "Rotations (a new password and user; the old user is dropped by the apply after):"
JSON_FORMAT_VERSION = 1

_VERB = {Action.CREATE: "is added", Action.UPDATE: "is changed", Action.DELETE: "is removed"}
_GREEN, _YELLOW, _RED, _BOLD, _RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1m", "\x1b[0m"
_COLOUR = {"+": _GREEN, "~": _YELLOW, "-": _RED, "!": _RED}
_DIFF_MARK = {"+": "+", "-": "-", "~": "!", "!": "!"}

Line = tuple[str, int, str]
"""(symbol or "", indent, text): one line of an entry's block, its text already escaped."""


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _field_line(change: DeclaredChange, f: FieldChange, width: int) -> Line:
    if change.action is Action.CREATE or (f.old is None and not f.sensitive):
        sym, shown = "+", _value(f.new)
    elif change.action is Action.DELETE or (f.new is None and not f.sensitive):
        sym, shown = "-", _value(f.old)
    else:
        sym, shown = "~", f"{_value(f.old)} -> {_value(f.new)}"
    return sym, 4, f"{f.field.ljust(width)} = {SENSITIVE_VALUE if f.sensitive else shown}"


def _block(change: DeclaredChange) -> list[Line]:
    """An entry as the plan shows a resource: comment, risks, `kind "name" {`, its fields, `}`."""
    kind, _, name = change.address.partition(".")
    lines: list[Line] = [("", 2, f"# {change.address} {_VERB[change.action]}")]
    lines += [("!", 2, f"# RISK: {risk}") for risk in change.risks]
    lines.append((change.action.symbol, 0, f'{kind} "{name}" {{' if name else f"{kind} {{"))
    width = max((len(f.field) for f in change.fields), default=0)
    lines += [_field_line(change, f, width) for f in change.fields]
    lines += [("", 4, "}"), ("", 0, "")]
    return [(sym, pad, for_terminal(text)) for sym, pad, text in lines]


def _plain(line: Line, color: bool) -> str:
    sym, pad, text = line
    if not sym:
        return " " * pad + text
    if sym == "!":
        return " " * pad + (f"{_BOLD}{_RED}{text}{_RESET}" if color else text)
    shown = f"{sym:>3}"
    if color:
        shown = shown.replace(sym, f"{_COLOUR[sym]}{sym}{_RESET}")
    return f"{' ' * pad}{shown} {text}"


def _diff_line(line: Line) -> str:
    """The line for a ```diff block: the symbol in column 0 (`~` and a risk become `!`), so forges colour it."""
    sym, pad, text = line
    if not sym:
        plain = " " * pad + text
        return plain if plain.startswith(" ") else " " + plain
    return _DIFF_MARK[sym] + (" " * (pad + (0 if sym == "!" else 4)) + text)[1:]


def _summary(diff: DeclaredDiff) -> str:
    add, change, remove = diff.counts()
    return f"{add} to add, {change} to change, {remove} to remove"


def _quota_lines(diff: DeclaredDiff) -> list[str]:
    out = []
    for q in diff.quotas:
        on = f" (instances: {', '.join(q.instances)})" if q.instances else " (no instance uses it)"
        out.append(f"{q.address} {q.field}: {_value(q.old)} -> {_value(q.new)}{on}")
    return out


def _rotation_lines(diff: DeclaredDiff) -> list[str]:
    return [f"{r.address} rotation: {r.old} -> {r.new}" for r in diff.rotations]


def _title(diff: DeclaredDiff, base: str, head: str) -> str:
    names = diff.head_name if diff.base_name == diff.head_name else f"{diff.base_name} -> {diff.head_name}"
    return f"environment {names}, {base} -> {head}"


def render_text(diff: DeclaredDiff, base: str, head: str, color: bool = False) -> str:
    """The declared changes for a terminal: the plan's symbols and layout, risks in red."""
    out = [f"svcctl diff: {for_terminal(_title(diff, base, head))}", ""]
    out += [_plain(line, color) for change in diff.changes for line in _block(change)]
    for title, items in (
        (RISKY_TITLE, [f"{a}: {r}" for a, r in diff.risky]),
        (QUOTA_TITLE, _quota_lines(diff)),
        (ROTATION_TITLE, _rotation_lines(diff)),
    ):
        if items:
            out += [f"{_BOLD}{title}{_RESET}" if color else title, *(f"  {for_terminal(i)}" for i in items), ""]
    if diff.has_changes:
        risky = len(diff.risky)
        out.append(f"Declared: {_summary(diff)}; {risky} risky change{'' if risky == 1 else 's'}.")
    else:
        out.append(NO_CHANGES)
    return "\n".join(out) + "\n"


def _fence(lines: list[str]) -> str:
    """A backtick fence longer than any backtick run in the body, so no value can close it early."""
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(diff: DeclaredDiff, base: str, head: str, max_chars: int = 60000) -> str:
    """The declared changes as a pull-request comment: summary and risks up front, every entry folded.

    Values outside the diff block are code spans (`markdown_code`), so nothing in them is interpreted; the
    block's fence outgrows any backtick run. When the entries do not fit in max_chars, whole entries are
    dropped from the end and a note says how many; the summary and the lists are always kept.
    """
    names = diff.head_name if diff.base_name == diff.head_name else f"{diff.base_name} -> {diff.head_name}"
    head_lines = [f"#### svcctl diff: {markdown_code(names)} ({markdown_code(base)} → {markdown_code(head)})", ""]
    if diff.has_changes:
        line = f"**Declared:** {_summary(diff)} · risky: {len(diff.risky)} · quota changes: {len(diff.quotas)}"
        head_lines += [f"{line} · rotations: {len(diff.rotations)}", ""]
    else:
        head_lines += [f"**{NO_CHANGES}**", ""]
    if diff.risky:
        head_lines += [f"**{RISKY_TITLE}**", *(f"- {markdown_code(a)}: {markdown_code(r)}" for a, r in diff.risky), ""]
    for title, items in ((QUOTA_TITLE, _quota_lines(diff)), (ROTATION_TITLE, _rotation_lines(diff))):
        if items:
            head_lines += [f"**{title}**", *(f"- {markdown_code(i)}" for i in items), ""]
    top = "\n".join(head_lines) + "\n"
    blocks = [[_diff_line(line) for line in _block(change)] for change in diff.changes]
    if not blocks:
        return top.rstrip("\n") + "\n"
    fence = _fence([line for block in blocks for line in block])
    opening = f"<details><summary>Show declared changes</summary>\n\n{fence}diff\n"
    closing = f"{fence}\n\n</details>\n"
    note = "_Diff truncated: {} more entries not shown; run `svcctl diff` locally for all of them._\n"
    sizes = [sum(len(line) + 1 for line in block) for block in blocks]
    budget = max_chars - len(top) - len(opening) - len(closing)
    if sum(sizes) > budget:
        budget -= len(note) + 10
    shown = 0
    while shown < len(blocks) and sizes[shown] <= budget:
        budget -= sizes[shown]
        shown += 1
    body = "".join(line + "\n" for block in blocks[:shown] for line in block)
    out = top + (opening + body + closing if shown else "")
    if shown < len(blocks):
        out += "\n" + note.format(len(blocks) - shown)
    return out


def _json_field(f: FieldChange) -> dict[str, Any]:
    return {"name": f.field, "old": f.old, "new": f.new, "sensitive": f.sensitive}


def render_json(diff: DeclaredDiff, base: str, head: str) -> str:
    """The declared changes as one JSON document (printable ASCII: every other character is escaped)."""
    add, change, remove = diff.counts()
    doc = {
        "format_version": JSON_FORMAT_VERSION,
        "base": {"source": base, "environment": diff.base_name},
        "head": {"source": head, "environment": diff.head_name},
        "summary": {"add": add, "change": change, "remove": remove, "risky": len(diff.risky)},
        "changes": [
            {
                "action": c.action.value,
                "address": c.address,
                "kind": c.kind,
                "fields": [_json_field(f) for f in c.fields],
                "risks": c.risks,
            }
            for c in diff.changes
        ],
        "quotas": [
            {"address": q.address, "field": q.field, "old": q.old, "new": q.new, "instances": q.instances}
            for q in diff.quotas
        ],
        "rotations": [{"address": r.address, "old": r.old, "new": r.new} for r in diff.rotations],
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def render(diff: DeclaredDiff, fmt: Format, base: str, head: str, color: bool = False) -> str:
    """Render in one of the formats `svcctl diff -o` offers; colour applies to text only."""
    if fmt == "markdown":
        return render_markdown(diff, base, head)
    if fmt == "json":
        return render_json(diff, base, head)
    return render_text(diff, base, head, color=color)
