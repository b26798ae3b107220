"""Backup schedules as resources: `backup.<instance>` (engine, schedule, keep, enabled), on the instance's node.

Desired from the YAML (`Environment.backup_of`), observed from what svcctl wrote on the node (the instance's
backup configuration and its timer's OnCalendar line, read by the observe script's backups fragment,
`drivers/host/observe_backups.py`) and recorded in the registry like every object. Apply makes them through
the engine's `ansible/tasks/<engine>_backup.yml`; docs/backups.md says what runs on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svcctl.drivers.base import PasswordFor
from svcctl.model.spec import Environment
from svcctl.secrets import Secret
from svcctl.state import Kind, Resource

REPORT = "backups"
"""Where the footer files observe_backups()'s output: engines["backups"]."""


def desired(env: Environment, placement: Mapping[str, str], instances: Mapping[str, Resource]) -> list[Resource]:
    """`backup.<instance>` for each placed instance whose plan or own entry declares `backup:`; a Redis one also
    carries its instance's port (from `instances`, the desired instances by name), which its BGSAVE connects to."""
    out = []
    for name in sorted(env.instances):
        backup = env.backup_of(name)
        node = placement.get(name)
        if backup is None or node is None:
            continue
        engine = env.engine_of(name)
        attrs: dict[str, Any] = {"engine": engine, "schedule": backup.schedule, "keep": backup.keep, "enabled": True}
        if engine == "redis" and name in instances:
            attrs["port"] = instances[name].attrs.get("port")
        out.append(Resource(kind=Kind.BACKUP, name=name, node=node, engine=engine, attrs=attrs))
    return out


def parse(node: str, report: Mapping[str, Any] | None) -> list[Resource]:
    """The backup schedules a node's checked backups report shows (managed or not: the registry decides)."""
    out = []
    for name, seen in sorted(((report or {}).get("instances") or {}).items()):
        engine = seen.get("engine")
        if engine is None:
            continue  # a configuration svcctl cannot read is no schedule of an engine it knows
        timer = seen.get("timer") or {}
        attrs = {
            "engine": engine,
            "schedule": seen.get("schedule"),
            "keep": seen.get("keep"),
            "enabled": bool(timer.get("active")) and bool(timer.get("enabled")),
            "backups": seen.get("count", 0),
            "latest": seen.get("latest"),
        }
        if engine == "redis":
            attrs["port"] = seen.get("port")
        out.append(Resource(kind=Kind.BACKUP, name=name, node=node, engine=engine, attrs=attrs))
    return out


def secrets_for(resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
    """A Redis instance's backup needs its admin password (kept root-only on the node for BGSAVE); others none."""
    if resource.kind is Kind.BACKUP and resource.engine == "redis":
        return {"admin_password": password_for(f"instance/{resource.name}/admin")}
    return {}
