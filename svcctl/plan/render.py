"""Renderers: text (Terraform's conventions), JSON (a documented schema) and Markdown (a pull-request comment).

All three print the same Plan and compute nothing about it: what changes, why, and what is sensitive was
decided by the diff.  They share one line model so the text and the Markdown diff block never disagree.
Every string in a plan may come from a hostile node or an unreviewed YAML, so it is escaped where it is
formatted (svcctl.plan.escape): a change block's lines once in `_blocks`, the other lists where they are
listed; the JSON document is pure ASCII.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple

from svcctl.plan.escape import for_terminal, markdown_code
from svcctl.plan.types import Action, AttrChange, Cause, Change, Plan

Format = Literal["text", "json", "markdown"]

SENSITIVE_VALUE = "(sensitive value)"
DRIFT_TITLE = "Objects changed outside svcctl (drift):"
ACTIONS_TITLE = "svcctl will perform the following actions:"
UNMANAGED_TITLE = "Not managed by this environment (left alone):"
NO_CHANGES = "No changes. The hosts match the configuration."
GITHUB_COMMENT_LIMIT = 65536

_VERB = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in-place",
    Action.REPLACE: "must be replaced",
    Action.DELETE: "will be destroyed",
    Action.ADOPT: "will be adopted",
}
_GREEN, _YELLOW, _RED, _BOLD, _RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1m", "\x1b[0m"
_COLORED = {
    "+": f"{_GREEN}+{_RESET}",
    "~": f"{_YELLOW}~{_RESET}",
    "-": f"{_RED}-{_RESET}",
    "-/+": f"{_RED}-{_RESET}/{_GREEN}+{_RESET}",
    "<=": f"{_GREEN}<={_RESET}",
}
_DIFF_MARK = {"+": "+", "-": "-", "~": "!", "-/+": "!", "<=": "+"}


class _Line(NamedTuple):
    """One line of a change block: a Terraform symbol (or none) right-aligned in a 3-wide column after `pad`."""

    sym: str
    pad: int
    text: str

    def plain(self, color: bool = False) -> str:
        """The line as `svcctl plan` prints it."""
        if not self.sym:
            return " " * self.pad + self.text
        sym = f"{self.sym:>3}"
        if color:
            sym = sym.replace(self.sym, _COLORED[self.sym])
        return f"{' ' * self.pad}{sym} {self.text}"

    def diff(self) -> str:
        """The line for a ```diff block: the symbol moves to column 0 (`~` becomes `!`), so forges colour it."""
        if not self.sym:
            line = self.plain()
            return line if line.startswith(" ") else " " + line
        blanked = f"{' ' * self.pad}    {self.text}"
        return _DIFF_MARK[self.sym] + blanked[1:]


def _comment(text: str) -> _Line:
    return _Line("", 2, f"# {text}")


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _attr_line(change: Change, a: AttrChange, width: int) -> _Line:
    """One attribute: `+ name = new`, `- name = old` or `~ name = old -> new`, with its comment markers."""
    if change.action is Action.CREATE:
        sym = "+"
    elif change.action is Action.DELETE:
        sym = "-"
    elif a.sensitive:
        sym = "~"
    elif a.old is None:
        sym = "+"
    elif a.new is None:
        sym = "-"
    else:
        sym = "~"
    shown = {"+": _value(a.new), "-": _value(a.old), "~": f"{_value(a.old)} -> {_value(a.new)}"}[sym]
    if a.sensitive:
        shown = SENSITIVE_VALUE
    notes = []
    if a.forces_replace:
        notes.append("forces replacement")
    if a.cause is Cause.DRIFT and change.action is not Action.CREATE:
        notes.append("(changed outside svcctl)")
    suffix = f" # {' '.join(notes)}" if notes else ""
    return _Line(sym, 4, f"{a.field.ljust(width)} = {shown}{suffix}")


def _change_lines(change: Change) -> list[_Line]:
    """A change as Terraform shows a resource: comment header, flags, `resource "kind" "name" {`, attrs, `}`."""
    kind, _, name = change.address.partition(".")
    lines = [_comment(f"{change.address} {_VERB[change.action]}")]
    if change.reason:
        lines.append(_comment(f"({change.reason})"))
    if change.restarts_service:
        lines.append(_comment("restarts service"))
    if change.destroys_data:
        lines.append(_comment("destroys data"))
    lines.append(_Line(change.action.symbol, 0, f'resource "{kind}" "{name}" {{'))
    width = max((len(a.field) for a in change.attrs), default=0)
    lines += [_attr_line(change, a, width) for a in change.attrs]
    lines += [_Line("", 4, "}"), _Line("", 0, "")]
    return lines


def _blocks(plan: Plan) -> list[list[_Line]]:
    """One block per change, drift first; a section's title rides on its first block so it is never orphaned.

    This is where the change blocks' untrusted text (addresses, reasons, attribute names and values) is
    escaped, once for the text and the Markdown renderers alike.
    """
    blocks: list[list[_Line]] = []
    for title, changes in ((DRIFT_TITLE, plan.drift), (ACTIONS_TITLE, plan.config_changes)):
        for i, change in enumerate(changes):
            head = [_Line("", 0, title), _Line("", 0, "")] if i == 0 else []
            blocks.append(head + [line._replace(text=for_terminal(line.text)) for line in _change_lines(change)])
    return blocks


def _summary(plan: Plan) -> str:
    add, change, destroy = plan.counts()
    adopt = f"{plan.adoptions} to adopt, " if plan.adoptions else ""
    return f"{adopt}{add} to add, {change} to change, {destroy} to destroy"


# -- text ---------------------------------------------------------------------------------------------------


def render_text(plan: Plan, color: bool = False) -> str:
    """The plan for a terminal, in Terraform's conventions, so it reads like the tool operators already know."""
    out = [line.plain(color) for block in _blocks(plan) for line in block]
    if plan.unmanaged:
        out += [UNMANAGED_TITLE, *(f"  {for_terminal(u)}" for u in plan.unmanaged), ""]
    warning = f"{_BOLD}{_YELLOW}Warning:{_RESET}" if color else "Warning:"
    error = f"{_BOLD}{_RED}Error:{_RESET}" if color else "Error:"
    out += [f"{warning} {for_terminal(w)}" for w in plan.warnings] + ([""] if plan.warnings else [])
    out += [f"{error} {for_terminal(e)}" for e in plan.errors] + ([""] if plan.errors else [])
    if plan.has_changes:
        out.append(f"Plan: {_summary(plan)}.")
        if plan.errors:
            out.append("This plan cannot be applied until the errors above are fixed.")
    elif plan.errors:
        out.append("No changes planned, but the errors above must be fixed.")
    else:
        out.append(NO_CHANGES)
    return "\n".join(out) + "\n"


# -- json ---------------------------------------------------------------------------------------------------


def _json_attr(a: AttrChange) -> dict[str, Any]:
    return {
        "name": a.field,
        "old": None if a.sensitive else a.old,
        "new": None if a.sensitive else a.new,
        "cause": a.cause.value,
        "sensitive": a.sensitive,
        "forces_replace": a.forces_replace,
    }


def _json_change(c: Change) -> dict[str, Any]:
    return {
        "action": c.action.value,
        "address": c.address,
        "kind": c.kind.value,
        "node": c.node,
        "engine": c.engine,
        "cause": c.cause.value,
        "restarts_service": c.restarts_service,
        "destroys_data": c.destroys_data,
        "reason": c.reason,
        "attributes": [_json_attr(a) for a in c.attrs],
    }


def render_json(plan: Plan) -> str:
    """The plan as the stable JSON document of docs/plan-json.md, for CI and tools; it holds no secrets.

    It is printable ASCII and newlines (`ensure_ascii`): every other character is a `\\uXXXX` escape, so no
    ESC, bidi override or lone surrogate reaches a terminal or a log, and parsing gives back the same strings.
    """
    add, change, destroy = plan.counts()
    doc = {
        "format_version": plan.format_version,
        "environment": plan.environment,
        "summary": {
            "add": add,
            "change": change,
            "destroy": destroy,
            "adopt": plan.adoptions,
            "drift": len(plan.drift),
            "config": len(plan.config_changes),
        },
        "changes": [_json_change(c) for c in plan.changes],
        "drift": [c.address for c in plan.drift],
        "unmanaged": plan.unmanaged,
        "warnings": plan.warnings,
        "errors": plan.errors,
        "fingerprint": plan.fingerprint,
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


# -- markdown -----------------------------------------------------------------------------------------------


def _fence(lines: list[str]) -> str:
    """A backtick fence longer than any backtick run in the body, so no value can close it early."""
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _truncated(hidden: int) -> str:
    noun = "change" if hidden == 1 else "changes"
    return f"_Plan truncated: {hidden} more {noun} not shown; run `svcctl plan` locally for the full plan._\n"


def render_markdown(plan: Plan, max_chars: int = 60000) -> str:
    """The plan as a pull-request comment: summary and problems up front, the diff folded, at most max_chars.

    When the changes do not fit, whole changes are dropped from the end (the fence always closes) and a note
    says how many; the summary, errors and warnings are always kept.  Outside the diff block every value is a
    code span (`markdown_code`), which GitHub shows verbatim: no Markdown, HTML, @mention or #reference in
    it is interpreted; inside, the fence is longer than any backtick run, so nothing closes it early.
    """
    add_change = f"**Plan:** {_summary(plan)}" if plan.has_changes else "**No changes.**"
    head = [f"#### svcctl plan: {markdown_code(plan.environment)}", ""] if plan.environment else []
    head += [f"{add_change} · drift: {len(plan.drift)} · errors: {len(plan.errors)}", ""]
    if plan.targets:
        targeted = ", ".join(markdown_code(t) for t in plan.targets)
        head += [f"**Targeted** (`--target`; this plan may not be every change the YAML asks for): {targeted}", ""]
    if plan.errors:
        head += ["**Errors** (this plan cannot be applied):", *(f"- {markdown_code(e)}" for e in plan.errors), ""]
    if plan.warnings:
        head += ["**Warnings:**", *(f"- {markdown_code(w)}" for w in plan.warnings), ""]
    if plan.unmanaged:
        head += [f"**{UNMANAGED_TITLE}**", *(f"- {markdown_code(u)}" for u in plan.unmanaged), ""]
    top = "\n".join(head) + "\n"

    blocks = [[line.diff() for line in block] for block in _blocks(plan)]
    if not blocks:
        return top.rstrip("\n") + "\n"
    fence = _fence([line for block in blocks for line in block])
    opening = f"<details><summary>Show plan</summary>\n\n{fence}diff\n"
    closing = f"{fence}\n\n</details>\n"
    sizes = [sum(len(line) + 1 for line in block) for block in blocks]
    budget = max_chars - len(top) - len(opening) - len(closing)
    if sum(sizes) > budget:
        budget -= len(_truncated(len(blocks))) + 1
    shown = 0
    while shown < len(blocks) and sizes[shown] <= budget:
        budget -= sizes[shown]
        shown += 1
    body = "".join(line + "\n" for block in blocks[:shown] for line in block)
    out = top + (opening + body + closing if shown else "")
    if shown < len(blocks):
        out += "\n" + _truncated(len(blocks) - shown)
    return out


def render(plan: Plan, fmt: Format, color: bool = False) -> str:
    """Render a plan in one of the formats `svcctl plan -o` offers; colour applies to text only."""
    if fmt == "text":
        return render_text(plan, color=color)
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan)
    raise ValueError(f"unknown plan format {fmt!r}; use text, json or markdown")
