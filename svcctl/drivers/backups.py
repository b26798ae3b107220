"""Backup schedules as resources: `backup.<instance>` (engine, schedule, keep, enabled), on the instance's node.

Desired from the YAML (`Environment.backup_of`), observed from what svcctl wrote on the node (the instance's
backup configuration and its timer's OnCalendar line, read by the observe script's backups fragment,
`drivers/host/observe_backups.py`) and recorded in the registry like every object. Apply makes them through
the engine's `ansible/tasks/<engine>_backup.yml`; docs/backups.md says what runs on the node.

A Redis backup also has `credentials`: its instance's backup user (`svcctl_backup`, in the instance's ACL file
with svcctl's rules and the derived password's verifier) and the service's credential file, and no admin
password file of older svcctl left; the Redis observe fragment reports them, and anything else is `stale`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from svcctl.drivers.base import PasswordFor
from svcctl.hostlib.backups import REDIS_BACKUP_USER
from svcctl.hostlib.redis_acl import acl_rules
from svcctl.model.spec import Environment
from svcctl.secrets import Secret, redis_acl_matches
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
        if engine == "redis":
            attrs["credentials"] = "current"
        out.append(Resource(kind=Kind.BACKUP, name=name, node=node, engine=engine, attrs=attrs))
    return out


def parse(
    node: str,
    report: Mapping[str, Any] | None,
    redis: Mapping[str, Any] | None = None,
    password_for: PasswordFor | None = None,
) -> list[Resource]:
    """The backup schedules a node's checked backups report shows (managed or not: the registry decides); a
    Redis one's `credentials` from the node's Redis report (`redis`) and the derived backup passwords."""
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
            attrs["credentials"] = redis_credentials(name, redis, password_for)
        out.append(Resource(kind=Kind.BACKUP, name=name, node=node, engine=engine, attrs=attrs))
    return out


def redis_credentials(instance: str, redis: Mapping[str, Any] | None, password_for: PasswordFor | None) -> str:
    """`current` when the instance's ACL file has svcctl's backup user (on, svcctl's rules for its Redis, one
    password: the derived one), its credential file exists and no old admin password file is left; else `stale`."""
    seen = ((redis or {}).get("instances") or {}).get(instance)
    if not isinstance(seen, Mapping) or password_for is None:
        return "stale"
    backup = seen.get("backup") or {}
    if not backup.get("credential") or backup.get("legacy_auth"):
        return "stale"
    users = [u for u in seen.get("users") or [] if isinstance(u, Mapping) and u.get("name") == REDIS_BACKUP_USER]
    if len(users) != 1:
        return "stale"
    user = users[0]
    flags, hashes = user.get("flags") or [], user.get("hashes") or []
    if "on" not in flags or "off" in flags or "nopass" in flags or len(hashes) != 1:
        return "stale"
    if tuple(user.get("rules") or ()) != acl_rules("backup", (redis or {}).get("version")):
        return "stale"
    return "current" if redis_acl_matches(password_for(f"instance/{instance}/backup"), hashes[0]) else "stale"


def secrets_for(resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
    """A Redis backup needs its backup user's password (the service's credential) and, for ACL LOAD at apply
    time only, the instance's admin password; others none."""
    if resource.kind is Kind.BACKUP and resource.engine == "redis":
        return {
            "password": password_for(f"instance/{resource.name}/backup"),
            "admin_password": password_for(f"instance/{resource.name}/admin"),
        }
    return {}
