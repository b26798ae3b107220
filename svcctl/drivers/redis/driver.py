"""Redis: one `redis-server@NAME` systemd instance per svcctl instance, its users in an ACL file of its own.

The snippet reads the instances' files rather than asking the servers, so a stopped instance is still
seen; the parser turns that into engine, instance and binding resources.  Binding users are named
`sv_<app>_<instance>_r<rotation>`; since each lives in its instance's ACL file, the instance part is
known and the app part is what remains, so the name maps back to its binding without ambiguity.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from svcctl.drivers.base import (
    DesiredContext,
    PasswordFor,
    desired_bindings,
    desired_engines,
    placed_instances,
)
from svcctl.drivers.hostprograms import engine_part
from svcctl.hostlib.backups import REDIS_BACKUP_USER
from svcctl.hostlib.redis_acl import ACL_ROLES, acl_rules, redis_major
from svcctl.model.names import is_valid_name, sql_ident
from svcctl.model.spec import Node
from svcctl.secrets import Secret, redis_acl_matches
from svcctl.ssh import SshTarget, resolve
from svcctl.state import Attrs, Kind, Resource

ENGINE = "redis"
FIRST_PORT = 6380
READWRITE_RULES = acl_rules("readwrite")
READONLY_RULES = acl_rules("readonly")
_UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_MIB = 1024**2
LOCAL_BIND = ("127.0.0.1", "-::1")
"""Where an instance listens on a node without client_networks: loopback only (`-`: skip if unavailable)."""
LOCAL_BIND_6 = ("127.0.0.1", "::1")
"""The same for Redis 6 (Debian 11), which has no `-` prefix and refuses to start on `-::1`: Debian's own
default there, which needs IPv6 on the loopback."""
DEFAULT_BIND = ("*", "-::*")
"""Redis 7's own default when a config has no `bind` line: every address."""


def major_of(package_version: str | None) -> str | None:
    """`5:7.0.15-1~deb12u10` -> `7`: the major version svcctl's catalogue speaks of (hostlib's one rule)."""
    major = redis_major(package_version)
    return None if major is None else str(major)


def memory_bytes(value: str | None) -> int:
    """A redis memory setting (`64mb`, `1g`, `1048576`) in bytes; absent means 0 (no limit)."""
    if not value:
        return 0
    match = re.fullmatch(r"(\d+)\s*([kmg]b?)?", value.strip().lower())
    if match is None:
        raise ValueError(f"unreadable redis memory value {value!r}")
    return int(match.group(1)) * _UNITS.get(match.group(2) or "", 1)


def memory_mb(value: str | None) -> int | float:
    """maxmemory in MiB: an int when whole (as desired() has it), else a float so the diff shows it."""
    size = memory_bytes(value)
    return size // _MIB if size % _MIB == 0 else round(size / _MIB, 3)


def bind_of(node_name: str, node: Node, major: str | None = None) -> list[str]:
    """Addresses an instance of Redis `major` binds: loopback, plus the node's own address when it declares
    client_networks.

    The node's address is the one svcctl reaches it at (its host, or HostName from its ssh_config), so the
    clients of those networks reach Redis where they reach the node; ACL passwords and protected mode stay.
    A node known only by a DNS name binds every IPv4 address instead (Redis cannot bind a name).
    """
    local = LOCAL_BIND_6 if major is not None and major.isdigit() and int(major) < 7 else LOCAL_BIND
    if not node.client_networks:
        return list(local)
    hostname = resolve(SshTarget.from_node(node_name, node)).hostname
    try:
        address = str(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        address = "0.0.0.0"  # noqa: S104 (a node known by name only: its clients must reach it somehow)
    return [*local, address]


def role_of(rules: list[str], major: str | None = None) -> str:
    """`readwrite` / `readonly` when the rules are exactly svcctl's for Redis `major`, else the rules themselves."""
    for role in ACL_ROLES:
        if tuple(rules) == acl_rules(role, major):
            return role
    return " ".join(rules)


def _binding_of(user: str, instance: str) -> tuple[str, int] | None:
    """(app, rotation) if `user` is svcctl's name for a binding on `instance`, else None."""
    if not is_valid_name(instance, reserved=False):
        return None
    match = re.fullmatch(rf"sv_([a-z0-9_]+)_{sql_ident(instance)}_r(0|[1-9][0-9]*)", user)
    if match is None:
        return None
    app = match.group(1).replace("_", "-")
    if not is_valid_name(app, reserved=False):
        return None
    return app, int(match.group(2))


def _credentials(user: Mapping[str, Any], password: Secret) -> str:
    """`current` when the user is on and its one password is the derived one; anything else is `stale`."""
    flags, hashes = user.get("flags", []), user.get("hashes", [])
    usable = "on" in flags and "nopass" not in flags and "off" not in flags
    ok = usable and len(hashes) == 1 and redis_acl_matches(password, hashes[0])
    return "current" if ok else "stale"


def _port_of(r: Resource) -> int | None:
    """An observed instance's port: live, else (deleted outside svcctl) the one its record holds."""
    for attrs in (r.attrs, r.recorded or {}):
        port = attrs.get("port")
        if isinstance(port, int) and not isinstance(port, bool):
            return port
    return None


def _split_binding_name(name: str) -> tuple[str, str]:
    """`web.sessions` or `web.sessions~r0` -> ("web", "sessions")."""
    app, _, rest = name.partition(".")
    return app, rest.split("~", 1)[0]


class RedisDriver:
    """The redis engine: observe, parse, desired state and the secrets its playbook tasks need."""

    engine = ENGINE

    def snippet(self) -> str:
        """The host-side snippet defining `observe_redis()`."""
        return engine_part("redis", "observe")[1]

    def parse(self, node: str, raw: Mapping[str, Any], password_for: PasswordFor) -> list[Resource]:
        """Engine, instances and every ACL user (svcctl's bindings, old rotations, foreign users) on a node."""
        if not raw.get("installed"):
            return []
        major = major_of(raw.get("version"))
        out = [Resource(kind=Kind.ENGINE, name=f"{node}.{ENGINE}", node=node, engine=ENGINE,
                        attrs={"installed": True, "version": major})]  # fmt: skip
        for name, inst in sorted(raw.get("instances", {}).items()):
            config, unit = inst.get("config", {}), inst.get("unit", {})
            connections = config.get("maxclients")
            attrs: Attrs = {
                "engine": ENGINE,
                "major_version": major,
                "port": int(config.get("port", 6379)),
                "memory_mb": memory_mb(config.get("maxmemory")),
                "eviction": config.get("maxmemory-policy", "noeviction"),
                "connections": int(connections) if connections is not None else None,
                "bind": config["bind"].split() if config.get("bind") else list(DEFAULT_BIND),
                "running": bool(unit.get("active")),
                "enabled": bool(unit.get("enabled")),
            }
            if inst.get("clients") is not None:  # observed only: never diffed or pinned
                attrs["connections_in_use"] = int(inst["clients"])
            out.append(Resource(kind=Kind.INSTANCE, name=name, node=node, engine=ENGINE, attrs=attrs))
            out += self._users(node, name, inst.get("users", []), password_for, major)
        return out

    def _users(
        self, node: str, instance: str, users: list[Mapping[str, Any]], password_for: PasswordFor, major: str | None
    ) -> list[Resource]:
        """Binding resources of one instance's users: the newest rotation per app at the binding's address."""
        ours: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        out: list[Resource] = []
        for user in users:
            if user["name"] in ("default", REDIS_BACKUP_USER):
                continue  # the instance's admin, part of the instance itself; its backups' user, of backup.<name>
            parsed = _binding_of(user["name"], instance)
            if parsed is None:
                attrs = {"engine": ENGINE, "role": role_of(user.get("rules", []), major), "user": user["name"]}
                out.append(Resource(kind=Kind.BINDING, name=f"{instance}:{user['name']}", node=node,
                                    engine=ENGINE, attrs=attrs))  # fmt: skip
                continue
            app, rotation = parsed
            ours.setdefault(app, []).append((rotation, user))
        for app, found in sorted(ours.items()):
            newest = max(rotation for rotation, _ in found)
            for rotation, user in sorted(found, key=lambda pair: pair[0]):
                password = password_for(f"binding/{app}/{instance}/{rotation}")
                attrs = {
                    "engine": ENGINE,
                    "role": role_of(user.get("rules", []), major),
                    "rotation": rotation,
                    "user": user["name"],
                    "credentials": _credentials(user, password),
                }
                name = f"{app}.{instance}" if rotation == newest else f"{app}.{instance}~r{rotation}"
                out.append(Resource(kind=Kind.BINDING, name=name, node=node, engine=ENGINE, attrs=attrs))
        return out

    def desired(self, ctx: DesiredContext) -> list[Resource]:
        """Redis instances where placed (ports kept, else allocated), their bindings, and their nodes' engines."""
        env = ctx.env
        placed = placed_instances(ctx, ENGINE)
        ports = self._ports(ctx, [name for name, _ in placed])
        out = [
            Resource(
                kind=Kind.INSTANCE,
                name=name,
                node=node,
                engine=ENGINE,
                attrs={
                    "engine": ENGINE,
                    "major_version": env.version_of(name),
                    "port": ports[name],
                    "memory_mb": env.plan_of(name).memory_mb,
                    "eviction": env.plan_of(name).eviction,
                    "connections": env.plan_of(name).connections,
                    "bind": bind_of(node, env.nodes[node], env.version_of(name)),
                    "running": True,
                    "enabled": True,
                },
            )
            for name, node in placed
        ]
        out += desired_bindings(ctx, ENGINE, lambda _b, _node: {})
        out += desired_engines(ctx, ENGINE, placed, lambda _node: {})
        return out

    def _ports(self, ctx: DesiredContext, names: list[str]) -> dict[str, int]:
        """Each instance's port: the one it has on its node, else the lowest free one from 6380 (by name).

        An instance deleted behind svcctl's back has no live port, but its record does: recreating it on
        that port keeps the apps' manifests right.
        """
        used: dict[str, set[int]] = {}
        for r in ctx.observed:
            port = _port_of(r)
            if r.kind is Kind.INSTANCE and r.engine == ENGINE and port is not None:
                used.setdefault(r.node, set()).add(port)
        ports: dict[str, int] = {}
        for name in names:
            have = ctx.observed.get(f"instance.{name}")
            if have is not None and have.engine == ENGINE and have.node == ctx.placement[name]:
                port = _port_of(have)
                if port is not None:
                    ports[name] = port
        for name in names:
            if name in ports:
                continue
            taken = used.setdefault(ctx.placement[name], set())  # observed ones include every kept port
            port = FIRST_PORT
            while port in taken:
                port += 1
            ports[name] = port
            taken.add(port)
        return ports

    def secrets_for(self, resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
        """Instances need the admin (`default` user) password; bindings theirs plus the admin's for ACL LOAD."""
        if resource.kind is Kind.INSTANCE:
            return {"admin_password": password_for(f"instance/{resource.name}/admin")}
        if resource.kind is Kind.BINDING:
            if ":" in resource.name:  # `<instance>:<user>`, a user svcctl did not name: only the admin applies
                instance = resource.name.split(":", 1)[0]
                return {"admin_password": password_for(f"instance/{instance}/admin")}
            app, instance = _split_binding_name(resource.name)
            out = {"admin_password": password_for(f"instance/{instance}/admin")}
            rotation = resource.attrs.get("rotation")
            if isinstance(rotation, int):  # a delete of a user whose record is all that is left needs none
                out["password"] = password_for(f"binding/{app}/{instance}/{rotation}")
            return out
        return {}


DRIVER = RedisDriver()
