"""`svcctl status`'s renderers: a table for a terminal and the JSON document of docs/status-json.md.

They print a `Status` and compute nothing about it. Node-reported strings (errors, versions, releases, users)
may come from a hostile node, so every text cell goes through `svcctl.plan.escape.for_terminal`, and the JSON
document is pure ASCII (`ensure_ascii`), as the plan's renderers do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from svcctl.plan.escape import for_terminal
from svcctl.plan.status import (
    STATUS_FORMAT_VERSION,
    BackupStatus,
    BindingStatus,
    EngineStatus,
    InstanceStatus,
    NodeStatus,
    Status,
)

Format = Literal["text", "json"]
NO_BACKUPS = "no backups"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; every cell escaped before it is measured."""
    cells = [[for_terminal(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]


def _engine(e: EngineStatus) -> str:
    state = {True: "running", False: "stopped", None: "no instances"}[e.running]
    return f"{e.engine} {e.version or '?'} {state}" if e.installed else f"{e.engine} not installed"


def _release(n: NodeStatus) -> str:
    if n.release is None:
        return "-"
    r = n.release
    name = " ".join(x for x in (r.id, r.version_id) if x) or "?"
    return f"{name} ({r.codename})" if r.codename else name


def _of(used: int | float | None, limit: int | None, unit: str = "") -> str:
    shown = "?" if used is None else str(used)
    return f"{shown}/{limit}{unit}" if limit is not None else f"{shown}{unit} (no limit)"


def _size(i: InstanceStatus) -> str:
    if i.storage_mb is not None or i.size_mb is not None:
        return _of(i.size_mb, i.storage_mb, " MB")
    if i.memory_mb is not None:
        return f"maxmemory {i.memory_mb} MB"
    return "-"


def _bindings(bindings: Sequence[BindingStatus]) -> str:
    return ", ".join(f"{b.app} ({b.credentials.value})" for b in bindings) or "-"


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"


def _backup(b: BackupStatus | None) -> str:
    if b is None:
        return NO_BACKUPS
    if b.result is None:
        shown = "none yet"
    else:
        shown = f"{b.result} {_age(max(b.age_seconds or 0, 0))}" if b.age_seconds is not None else b.result
    notes = [n for n, on in (("overdue", b.overdue), ("timer off", b.enabled is False)) if on]
    return shown + (f" ({', '.join(notes)})" if notes else "")


def render_text(status: Status) -> str:
    """The status as tables for a terminal: the nodes, the instances, then every problem."""
    health = "healthy" if status.healthy else f"degraded ({len(status.problems)} problem"
    health += "" if status.healthy else ("s)" if len(status.problems) != 1 else ")")
    out = [f"Environment {for_terminal(status.environment)}: {health}", ""]
    out += _table(
        ("NODE", "REACHABLE", "RELEASE", "ENGINES"),
        [
            (n.name, "yes" if n.reachable else "no", _release(n), ", ".join(map(_engine, n.engines)) or "-")
            for n in status.nodes
        ],
    )
    out.append("")
    if status.instances:
        out += _table(
            ("INSTANCE", "NODE", "ENGINE", "STATE", "SIZE/QUOTA", "CONNECTIONS", "BINDINGS", "LAST BACKUP"),
            [
                (
                    i.name,
                    i.node or "-",
                    f"{i.engine} {i.version or '?'}",
                    i.state.value,
                    _size(i),
                    _of(i.connections_in_use, i.connections),
                    _bindings(i.bindings),
                    _backup(i.backup),
                )
                for i in status.instances
            ],
        )
    else:
        out.append("No instances declared.")
    out.append("")
    if status.problems:
        out += ["Problems:", *(f"  {for_terminal(p)}" for p in status.problems)]
    else:
        out.append("Everything is up.")
    return "\n".join(out) + "\n"


def _json_backup(b: BackupStatus | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {
        "last_at": b.last_at,
        "age_seconds": b.age_seconds,
        "result": b.result,
        "schedule": b.schedule,
        "overdue": b.overdue,
        "count": b.count,
        "enabled": b.enabled,
    }


def _json_node(n: NodeStatus) -> dict[str, Any]:
    release = None
    if n.release is not None:
        r = n.release
        release = {"id": r.id, "version_id": r.version_id, "codename": r.codename, "python": r.python}
    return {
        "name": n.name,
        "reachable": n.reachable,
        "error": n.error,
        "release": release,
        "engines": [
            {"engine": e.engine, "installed": e.installed, "version": e.version, "running": e.running}
            for e in n.engines
        ],
    }


def _json_instance(i: InstanceStatus) -> dict[str, Any]:
    return {
        "name": i.name,
        "node": i.node,
        "engine": i.engine,
        "version": i.version,
        "plan": i.plan,
        "state": i.state.value,
        "running": i.running,
        "answering": i.answering,
        "size_mb": i.size_mb,
        "storage_mb": i.storage_mb,
        "memory_mb": i.memory_mb,
        "connections_in_use": i.connections_in_use,
        "connections": i.connections,
        "bindings": [
            {"app": b.app, "role": b.role, "user": b.user, "credentials": b.credentials.value} for b in i.bindings
        ],
        "backup": _json_backup(i.backup),
        "problems": list(i.problems),
    }


def render_json(status: Status) -> str:
    """The status as the stable JSON document of docs/status-json.md (printable ASCII only; no secret)."""
    doc = {
        "format_version": STATUS_FORMAT_VERSION,
        "environment": status.environment,
        "observed_at": status.observed_at,
        "health": "healthy" if status.healthy else "degraded",
        "exit_code": status.exit_code,
        "nodes": [_json_node(n) for n in status.nodes],
        "instances": [_json_instance(i) for i in status.instances],
        "problems": list(status.problems),
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def render(status: Status, fmt: Format) -> str:
    """The status in one of the formats `svcctl status -o` offers."""
    if fmt == "json":
        return render_json(status)
    if fmt == "text":
        return render_text(status)
    raise ValueError(f"unknown status format {fmt!r}; use text or json")
