"""The mysql engine (MariaDB 10.11 on Debian 12): observe snippet, pure parser, desired resources, secrets.

One `mariadb.service` per node; each instance is a database, each binding a user `sv_<app>_<instance>_r<n>`
at the loopback hosts (tunnels arrive there) plus one netmask host per client network.  Besides the
contract's attributes, instances keep `storage_mb` (and `connections` while no user carries it) in the
database comment, and bindings report `connections` and `hosts` so that a change of either reaches the
users.

The engine's `bind_address` is what the server listens on. svcctl never narrows what a server it found
listens on: it widens a loopback-only server to 0.0.0.0 (svcctl's 60-svcctl.cnf, read after the server's own
files) while the node declares client networks, and otherwise leaves the address the server's own option
files give (observed as `listen_base`, never diffed, while svcctl's file hides it). A change of
`bind_address` restarts mariadb, so its connections drop once; no other engine change does (besides the
first install).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from svcctl.drivers.base import (
    DesiredContext,
    PasswordFor,
    binding_password,
    binding_purpose,
    desired_bindings,
    desired_engines,
    is_adopted,
    name_of,
    parse_binding_user,
    placed_instances,
    quota_exceeded,
)
from svcctl.drivers.hostprograms import engine_part
from svcctl.errors import SvcctlError
from svcctl.model.names import sql_ident
from svcctl.secrets import Secret, mysql_native_matches
from svcctl.state import Attrs, Kind, Resource

ENGINE = "mysql"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
WIDENED = "0.0.0.0"  # noqa: S104  (a value svcctl writes into MariaDB's file, not a socket it binds)
"""The bind-address svcctl's file sets to open a loopback-only server to the node's client networks."""
DEBIAN_BIND = "127.0.0.1"
"""What Debian's 50-server.cnf sets: the server's own address where svcctl cannot read it (not installed yet,
an older report)."""
EVERY_ADDRESS = "*"
"""`bind_address` of a server no option file sets one for: MariaDB's default, every IPv4 and IPv6 address."""
SYSTEM_USERS = frozenset({"root", "mysql", "mariadb.sys"})
"""Accounts the Debian package creates: the engine's own, never reported as unmanaged objects."""

READWRITE = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "INDEX", "REFERENCES",
        "CREATE TEMPORARY TABLES", "LOCK TABLES", "CREATE VIEW", "SHOW VIEW", "TRIGGER",
    }
)  # fmt: skip
READONLY = frozenset({"SELECT", "SHOW VIEW"})
ROLES: dict[frozenset[str], str] = {READWRITE: "readwrite", READONLY: "readonly"}
CUSTOM_ROLE = "custom"
"""Observed role of a user whose privileges are neither svcctl role (so the diff puts them back)."""

COMMENT_PREFIX = "svcctl"
"""Database comments svcctl writes: `svcctl storage_mb=512 connections=20` (absent values left out)."""

_GRANT_RE = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<object>\S+) TO ")
_DB_OBJECT_RE = re.compile(r"^`((?:[^`]|``)+)`\.\*$")


class MysqlDriver:
    """MariaDB: databases as instances, one user per binding, verifiers checked in memory."""

    engine = ENGINE

    def snippet(self) -> str:
        """The host-side `observe_mysql()`; read-only, stdlib only."""
        return engine_part("mysql", "observe")[1]

    def parse(self, node: str, raw: Mapping[str, Any], password_for: PasswordFor) -> list[Resource]:
        """Live engine, databases and users on one node from the snippet's output (pure)."""
        if not raw.get("installed"):
            return []
        version = major_minor(str(raw.get("package_version") or ""))
        out = [
            Resource(
                kind=Kind.ENGINE,
                name=f"{node}.{ENGINE}",
                node=node,
                engine=ENGINE,
                attrs={
                    "installed": True,
                    "version": version,
                    "running": bool(raw.get("active")),
                    "enabled": bool(raw.get("enabled")),
                    "client_networks": observed_client_networks(raw),
                    **observed_bind(raw),
                },
            )
        ]
        users = [u for u in raw.get("users", []) if u["user"] not in SYSTEM_USERS]
        databases = {d["name"]: d for d in raw.get("databases", [])}
        bindings = _bindings(node, users, set(databases), password_for)
        limits: dict[str, set[int | None]] = defaultdict(set)
        for _, db, row in bindings.rows:
            limits[db].add(_limit(row["max_user_connections"]))
        for name, db in sorted(databases.items()):
            out.append(_instance(node, version, db, limits.get(name)))
        out += bindings.resources
        return out

    def desired(self, ctx: DesiredContext) -> list[Resource]:
        """Engine per node hosting a mysql instance, each instance's database, each binding's current user."""
        env = ctx.env
        placed = placed_instances(ctx, ENGINE)
        out = [
            Resource(
                kind=Kind.INSTANCE,
                name=name,
                node=node,
                engine=ENGINE,
                attrs={
                    "engine": ENGINE,
                    "major_version": env.version_of(name),
                    "database": sql_ident(name),
                    "connections": env.plan_of(name).connections,
                    "storage_mb": env.plan_of(name).storage_mb,
                    **({"adopted": True} if is_adopted(ctx, name) else {}),
                    **quota_exceeded(ctx, name),
                },
            )
            for name, node in placed
        ]
        out += desired_bindings(
            ctx,
            ENGINE,
            lambda b, node: {
                "connections": env.plan_of(b.instance).connections,
                "hosts": user_hosts(env.nodes[node].client_networks),
            },
        )
        out += desired_engines(
            ctx,
            ENGINE,
            placed,
            lambda node: {"running": True, "enabled": True, "client_networks": list(env.nodes[node].client_networks)},
        )
        for engine in (r for r in out if r.kind is Kind.ENGINE):
            # every environment's networks count (the engine's client_networks include the others' claims)
            own = server_own_bind(ctx.observed.get(engine.address))
            engine.attrs["bind_address"] = desired_bind(own, list(engine.attrs["client_networks"]))
        return out

    def secrets_for(self, resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
        """A binding's derived password (its current rotation); nothing for anything else."""
        return binding_password(resource, password_for)


def user_hosts(client_networks: Iterable[str]) -> list[str]:
    """Hosts a binding user exists at: loopback (tunnels, local clients) plus `addr/netmask` per network."""
    hosts = set(LOOPBACK_HOSTS)
    for cidr in client_networks:
        net = ipaddress.ip_network(cidr, strict=True)
        if not isinstance(net, ipaddress.IPv4Network):
            raise SvcctlError(
                f"client network {cidr}: MariaDB matches client hosts by IPv4 netmask only; "
                "use IPv4 networks for mysql nodes"
            )
        hosts.add(f"{net.network_address}/{net.netmask}")
    return sorted(hosts)


def major_minor(package_version: str) -> str:
    """ "1:10.11.19-0+deb12u1" -> "10.11" (MariaDB's series is its first two parts)."""
    upstream = package_version.split(":", 1)[-1].split("-", 1)[0]
    return ".".join(upstream.split(".")[:2])


def observed_client_networks(raw: Mapping[str, Any]) -> list[str]:
    """Networks the server is open to: [] when it listens on loopback only (or not at all).

    When it listens beyond loopback, the networks svcctl wrote into its config file say for whom ([] when the
    server's own configuration opened it: not svcctl's to close); a server svcctl's file opened with no
    network noted reports 0.0.0.0/0, so the diff closes it again.
    """
    conf = raw.get("conf") or {}
    server = raw.get("server")
    if server is not None:
        addresses = [str(a) for a in server.get("listening", [])]
    else:
        addresses = [a.strip() for a in _effective_bind(raw).split(",") if a.strip()]
    if all(_is_loopback(a) for a in addresses):
        return []
    noted = sorted(str(n) for n in conf.get("client_networks") or [])
    if noted or beyond_loopback(_own_bind(raw)):
        return noted
    return ["0.0.0.0/0"]


def observed_bind(raw: Mapping[str, Any]) -> Attrs:
    """The engine's `bind_address` (what it listens on: the live value while it runs, else what its files
    give) and, only when that is not the server's own address (svcctl's file sets it), `listen_base`."""
    effective, own = _effective_bind(raw), _own_bind(raw)
    return {"bind_address": effective} if own == effective else {"bind_address": effective, "listen_base": own}


def server_own_bind(observed: Resource | None) -> str:
    """The address a server listens on by its own configuration, from its observed engine; Debian's default
    for a node without one (its package is not installed yet)."""
    if observed is None or not observed.attrs.get("installed"):
        return DEBIAN_BIND
    return str(observed.attrs.get("listen_base") or observed.attrs.get("bind_address") or DEBIAN_BIND)


def desired_bind(own: str, client_networks: list[str]) -> str:
    """What the server should listen on: its own address when that already reaches beyond loopback (never
    narrowed), else 0.0.0.0 while client networks are declared (svcctl widens), else its own address."""
    if beyond_loopback(own) or not client_networks:
        return own
    return WIDENED


def beyond_loopback(bind: str) -> bool:
    """Whether a bind-address (one address, a comma list, `*`, a host name) lets anything beyond loopback in."""
    return any(not _is_loopback(a.strip()) for a in bind.split(",") if a.strip()) or not bind.strip(", ")


def _svcctl_bind(raw: Mapping[str, Any]) -> str | None:
    """The bind-address svcctl's own file sets, if it sets one."""
    return str((raw.get("conf") or {}).get("bind_address") or "") or None


def _files_bind(raw: Mapping[str, Any]) -> str | None:
    """The bind-address the server's own option files give (without svcctl's), or None when not reported."""
    base = raw.get("bind_base")
    return None if base is None else (str(base) or EVERY_ADDRESS)


def _effective_bind(raw: Mapping[str, Any]) -> str:
    """What the server listens on: @@bind_address while it runs, else what it would start with."""
    server = raw.get("server")
    if server is not None:
        return str(server.get("bind_address") or EVERY_ADDRESS)
    return _svcctl_bind(raw) or _files_bind(raw) or DEBIAN_BIND


def _own_bind(raw: Mapping[str, Any]) -> str:
    """The server's own address: what it listens on unless svcctl's file sets one, which hides it; then what
    its own files give (Debian's default where an older report does not say)."""
    if _svcctl_bind(raw) is None:
        return _effective_bind(raw)
    return _files_bind(raw) or DEBIAN_BIND


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _limit(value: int) -> int | None:
    """MAX_USER_CONNECTIONS 0 means unlimited, which a plan says as None."""
    return value or None


def parse_comment(comment: str | None) -> dict[str, int | None]:
    """`svcctl storage_mb=512 connections=20` -> {"storage_mb": 512, "connections": 20}; others -> {}."""
    words = (comment or "").split()
    if not words or words[0] != COMMENT_PREFIX:
        return {}
    out: dict[str, int | None] = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key in ("storage_mb", "connections") and value.isascii() and value.isdigit() and len(value) <= 18:
            out[key] = int(value)
    return out


def _instance(node: str, version: str, db: Mapping[str, Any], user_limits: set[int | None] | None) -> Resource:
    ident = str(db["name"])
    name = name_of(ident)
    noted = parse_comment(db.get("comment"))
    connections: Any = noted.get("connections")
    if user_limits:
        connections = _unanimous(user_limits)
    return Resource(
        kind=Kind.INSTANCE,
        name=name if name is not None else f"{node}.{ENGINE}:{ident}",
        node=node,
        engine=ENGINE,
        attrs={
            "engine": ENGINE,
            "major_version": version,
            "database": ident,
            "connections": connections,
            "storage_mb": noted.get("storage_mb"),
            "size_mb": math.ceil(int(db["size_bytes"]) / 1048576),
            **_in_use(db),
        },
    )


def _in_use(db: Mapping[str, Any]) -> Attrs:
    """`connections_in_use` (observed only: never diffed or pinned), when the report counts the database's
    client connections."""
    clients = db.get("clients")
    return {} if clients is None else {"connections_in_use": int(clients)}


def _unanimous(values: set[int | None]) -> Any:
    """The one value all rows agree on, else the sorted distinct values (which never equal a desired int)."""
    if len(values) == 1:
        return next(iter(values))
    return sorted(values, key=lambda v: -1 if v is None else v)


class _Bindings:
    """Binding resources parsed from user rows, plus (user, database, row) for the instances' limits."""

    def __init__(self) -> None:
        self.resources: list[Resource] = []
        self.rows: list[tuple[str, str, Mapping[str, Any]]] = []


def _row_grants(row: Mapping[str, Any]) -> tuple[dict[str, frozenset[str]], bool]:
    """One user@host's privileges per database (`db`.* grants), and whether it holds any other grant."""
    per_db: dict[str, set[str]] = defaultdict(set)
    other = False
    for grant in row.get("grants", []):
        m = _GRANT_RE.match(grant)
        if m is None:
            other = True
            continue
        privs = {p.strip() for p in m["privs"].split(",")}
        if m["object"] == "*.*":
            other = other or privs != {"USAGE"}
            continue
        obj = _DB_OBJECT_RE.match(m["object"])
        if obj is None:
            other = True
            continue
        per_db[obj[1].replace("``", "`").replace("\\_", "_").replace("\\%", "%")] |= privs
    return {db: frozenset(p) for db, p in per_db.items()}, other


def _role(rows: Iterable[Mapping[str, Any]], db: str) -> str:
    """readwrite/readonly when every host row holds exactly that role's privileges on `db`.* and nothing else."""
    seen: set[frozenset[str]] = set()
    for row in rows:
        per_db, other = _row_grants(row)
        if other or set(per_db) != {db}:
            return CUSTOM_ROLE
        seen.add(per_db[db])
    return ROLES.get(next(iter(seen)), CUSTOM_ROLE) if len(seen) == 1 else CUSTOM_ROLE


def _bindings(node: str, users: list[Mapping[str, Any]], databases: set[str], password_for: PasswordFor) -> _Bindings:
    out = _Bindings()
    by_user: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in users:
        by_user[str(row["user"])].append(row)
    svcctl: dict[tuple[str, str], dict[int, Attrs]] = defaultdict(dict)
    for user, rows in sorted(by_user.items()):
        hosts = sorted(str(r["host"]) for r in rows)
        grant_dbs = {db for r in rows for db in _row_grants(r)[0]}
        parsed = parse_binding_user(user, grant_dbs, databases)
        if parsed is None:
            out.resources.append(
                Resource(
                    kind=Kind.BINDING,
                    name=f"{node}.{ENGINE}:{user}",
                    node=node,
                    engine=ENGINE,
                    attrs={"engine": ENGINE, "user": user, "hosts": hosts},
                )
            )
            continue
        app, instance, rotation = parsed
        db = sql_ident(instance)
        out.rows += [(user, db, r) for r in rows]
        password = password_for(binding_purpose(app, instance, rotation))
        current = all(
            r.get("plugin") == "mysql_native_password"
            and mysql_native_matches(password, str(r.get("authentication_string") or ""))
            for r in rows
        )
        svcctl[(app, instance)][rotation] = {
            "engine": ENGINE,
            "role": _role(rows, db),
            "rotation": rotation,
            "user": user,
            "credentials": "current" if current else "stale",
            "connections": _unanimous({_limit(int(r["max_user_connections"])) for r in rows}),
            "hosts": hosts,
        }
    for (app, instance), rotations in sorted(svcctl.items()):
        newest = max(rotations)
        for rotation, attrs in sorted(rotations.items()):
            suffix = "" if rotation == newest else f"~r{rotation}"
            out.resources.append(
                Resource(
                    kind=Kind.BINDING,
                    name=f"{app}.{instance}{suffix}",
                    node=node,
                    engine=ENGINE,
                    attrs=attrs,
                )
            )
    return out


DRIVER = MysqlDriver()
