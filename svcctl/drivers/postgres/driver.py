"""The postgres engine (PostgreSQL 15 on Debian 12): observe snippet, pure parser, desired resources, secrets.

One Debian cluster `<version>/main` per node (unit `postgresql@<version>-main`); each instance is a database
owned by a NOLOGIN role `<db>_owner`, each binding a login role `sv_<app>_<instance>_r<n>`.  Besides the
contract's attributes, instances keep `storage_mb` in the database comment (PostgreSQL has no quota to read
it back from), and bindings report `connections` (the role's CONNECTION LIMIT, the instance's plan's) so a
plan change reaches the users.
"""

from __future__ import annotations

import ipaddress
import math
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
from svcctl.hostlib.verifiers import SCRAM_MAX_ROUNDS
from svcctl.model.names import sql_ident
from svcctl.secrets import Secret, scram_sha256_matches
from svcctl.state import Attrs, Kind, Resource

ENGINE = "postgres"
SYSTEM_DATABASES = frozenset({"postgres"})
"""Databases the Debian cluster creates (templates are not listed by the snippet at all)."""
SYSTEM_ROLES = frozenset({"postgres"})
"""The cluster's own superuser; `pg_*` roles are not listed by the snippet at all."""
CUSTOM_ROLE = "custom"
"""Observed role of a user whose privileges are neither svcctl role (so the diff puts them back)."""
COMMENT_PREFIX = "svcctl"
"""Database comments svcctl writes: `svcctl storage_mb=512` (an absent value left out)."""
CLIENTS_ROLE = "svcctl_clients"
"""The NOLOGIN role every svcctl user (bindings, tunnel sessions) is a member of: svcctl's pg_hba.conf rules
name `+svcctl_clients`, so they never match, and never change how, a user svcctl did not make logs in."""
ANYWHERE = "0.0.0.0/0"
"""What client_networks says for a server listening beyond localhost without a network svcctl can name."""

SCRAM_MAX_ITERATIONS = SCRAM_MAX_ROUNDS
"""Most PBKDF2 iterations svcctl computes to check a SCRAM verifier (PostgreSQL's default is 4096).

A node chooses the count it reports: 999,999,999 would cost minutes of the controller's CPU per role per
plan. A verifier above the cap is `stale` without being computed (`svcctl.hostlib.verifiers`), so apply sets
the password again, and svcctl's own verifiers (the server's default count) always stay below it.
"""


class PostgresDriver:
    """PostgreSQL: databases as instances, one login role per binding, SCRAM verifiers checked in memory."""

    engine = ENGINE

    def snippet(self) -> str:
        """The host-side `observe_postgres()`; read-only, stdlib only."""
        return engine_part("postgres", "observe")[1]

    def parse(self, node: str, raw: Mapping[str, Any], password_for: PasswordFor) -> list[Resource]:
        """Live engine, databases and roles of the node's main cluster from the snippet's output (pure)."""
        packages: Mapping[str, str] = raw.get("packages") or {}
        if not packages:
            return []
        version = max(packages, key=int)
        cluster = next((c for c in raw.get("clusters", []) if c["version"] == version and c["name"] == "main"), None)
        unit = (cluster or {}).get("unit") or {}
        out = [
            Resource(
                kind=Kind.ENGINE,
                name=f"{node}.{ENGINE}",
                node=node,
                engine=ENGINE,
                attrs={
                    "installed": True,
                    "version": version,
                    "running": bool(unit.get("active")),
                    "enabled": bool(unit.get("enabled")),
                    "client_networks": observed_client_networks(cluster) if cluster else [],
                    "pg_hba": _rule_lines((cluster or {}).get("hba_block") or []),
                    "listen_addresses": _listen(cluster),
                    "listen_base": (cluster or {}).get("listen_base"),
                },
            )
        ]
        if cluster is None or not cluster.get("running"):
            return out
        databases = {str(d["name"]): d for d in cluster.get("databases", []) if d["name"] not in SYSTEM_DATABASES}
        superusers = {str(r["name"]) for r in cluster.get("roles", []) if r.get("superuser")}
        out += [_instance(node, version, db, superusers) for _, db in sorted(databases.items())]
        roles = [r for r in cluster.get("roles", []) if r["name"] not in SYSTEM_ROLES and r["login"]]
        out += _bindings(node, roles, databases, password_for)
        return out

    def desired(self, ctx: DesiredContext) -> list[Resource]:
        """Engine per node hosting a postgres instance, each instance's database, each binding's current user."""
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
                    "owner": owner_role(name),
                    "connections": env.plan_of(name).connections,
                    "storage_mb": env.plan_of(name).storage_mb,
                    **adoption(ctx, name),
                    **quota_exceeded(ctx, name),
                },
            )
            for name, node in placed
        ]
        out += desired_bindings(ctx, ENGINE, lambda b, _node: {"connections": env.plan_of(b.instance).connections})
        out += desired_engines(
            ctx,
            ENGINE,
            placed,
            lambda node: {"running": True, "enabled": True, "client_networks": list(env.nodes[node].client_networks)},
        )
        for engine in (r for r in out if r.kind is Kind.ENGINE):
            observed = ctx.observed.get(engine.address)
            base = str((observed.attrs.get("listen_base") if observed else None) or "localhost")
            networks = list(engine.attrs["client_networks"])
            engine.attrs["pg_hba"] = hba_rules(networks)
            engine.attrs["listen_addresses"] = listen_addresses(base, networks)
        return out

    def secrets_for(self, resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
        """A binding's derived password (its current rotation); nothing for anything else."""
        return binding_password(resource, password_for)


def adoption(ctx: DesiredContext, name: str) -> Attrs:
    """An adopted instance's attributes: `adopted`, and the owner the database already has, which it keeps."""
    if not is_adopted(ctx, name):
        return {}
    observed = ctx.observed.get(f"instance.{name}")
    owner = observed.attrs.get("owner") if observed is not None else None
    return {"adopted": True, **({"owner": str(owner)} if owner else {})}


def owner_role(instance: str) -> str:
    """The NOLOGIN role owning an instance's database (and, through readwrite users, its tables)."""
    return f"{sql_ident(instance)}_owner"


def hba_rules(networks: Iterable[str]) -> list[str]:
    """svcctl's block in pg_hba.conf, line by line: root's local login as postgres (pg_ident map `svcctl`),
    then scram-sha-256 for svcctl's users only (`+svcctl_clients`) from localhost and each client network."""
    rules = [["local", "all", "postgres", "peer", "map=svcctl"]]
    sources = ("127.0.0.1/32", "::1/128", *networks)
    rules += [["host", "all", f"+{CLIENTS_ROLE}", source, "scram-sha-256"] for source in sources]
    return _rule_lines(rules)


def listen_addresses(base: str, networks: list[str]) -> str:
    """What the server should listen on: as its own files say (`base`), widened to every address when svcctl's
    clients come from a network and the server listens on loopback only; never narrowed."""
    if networks and all(_is_loopback(a.strip()) for a in base.split(",") if a.strip()):
        return "*"
    return base


def _listen(cluster: Mapping[str, Any] | None) -> str | None:
    """The listen_addresses the cluster runs with (or would start with); None without a cluster."""
    if cluster is None:
        return None
    return str((cluster.get("settings") or {}).get("listen_addresses") or cluster.get("listen_base") or "localhost")


def _rule_lines(rules: Iterable[list[str]]) -> list[str]:
    """pg_hba token lists as the lines svcctl writes (words one space apart): observed and desired compare as text."""
    return [" ".join(rule) for rule in rules]


def observed_client_networks(cluster: Mapping[str, Any]) -> list[str]:
    """Networks the cluster admits: [] when it listens on localhost only.

    Listening beyond localhost, the non-loopback `host*` lines of svcctl's block in pg_hba.conf say for whom
    (of a whole file svcctl wrote before it had markers, all its lines). The user's own lines are the user's:
    they open nothing svcctl declares. A block without network lines reports [].
    """
    listen = str((cluster.get("settings") or {}).get("listen_addresses", "localhost"))
    if all(_is_loopback(a.strip()) for a in listen.split(",") if a.strip()):
        return []
    networks: set[str] = set()
    for line in cluster.get("hba_block") or []:
        if not line or not str(line[0]).startswith("host") or len(line) < 5:
            continue
        network = _hba_network(line[3], line[4])
        if network is not None and not ipaddress.ip_network(network).is_loopback:
            networks.add(network)
    if cluster.get("hba_legacy"):
        return sorted(networks) or [ANYWHERE]
    return sorted(networks)


def _hba_network(address: str, mask: str) -> str | None:
    """A pg_hba address (CIDR, or address plus netmask) as a CIDR; None for names such as `samenet`.

    An IPv6 scope id (`fe80::%eth0`) is never part of a network svcctl names, so such a line is not one.
    """
    if "%" in address or "%" in mask:
        return None
    try:
        if "/" in address:
            return str(ipaddress.ip_network(address, strict=False))
        return str(ipaddress.ip_network(f"{address}/{mask}", strict=False))
    except ValueError:
        return None


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # "*" and host names


def verifier_matches(password: Secret, verifier: str) -> bool:
    """Whether a role's SCRAM verifier is for `password`; never true, and never computed, above the cap."""
    return scram_sha256_matches(password, verifier)


def _limit(value: int) -> int | None:
    """CONNECTION LIMIT -1 means unlimited, which a plan says as None."""
    return None if value < 0 else value


def parse_comment(comment: str | None) -> dict[str, int]:
    """`svcctl storage_mb=512` -> {"storage_mb": 512}; any other comment -> {}."""
    words = (comment or "").split()
    if not words or words[0] != COMMENT_PREFIX:
        return {}
    out: dict[str, int] = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key == "storage_mb" and value.isascii() and value.isdigit() and len(value) <= 18:
            out[key] = int(value)
    return out


def _acl(entries: Iterable[str] | None) -> dict[str, str]:
    """PostgreSQL ACL items (`grantee=privs/grantor`, PUBLIC as empty grantee) -> grantee: privilege letters."""
    out: dict[str, str] = {}
    for item in entries or []:
        grantee, _, rest = item.partition("=")
        out[grantee.strip('"')] = out.get(grantee.strip('"'), "") + rest.split("/", 1)[0]
    return out


def _in_use(db: Mapping[str, Any]) -> Attrs:
    """`connections_in_use` (observed only: never diffed or pinned), when the report counts the database's
    client connections."""
    clients = db.get("clients")
    return {} if clients is None else {"connections_in_use": int(clients)}


def _instance(node: str, version: str, db: Mapping[str, Any], superusers: set[str]) -> Resource:
    ident = str(db["name"])
    name = name_of(ident)
    owned_by_superuser = {"owner_superuser": True} if db["owner"] in superusers else {}  # never adoptable
    return Resource(
        kind=Kind.INSTANCE,
        name=name if name is not None else f"{node}.{ENGINE}:{ident}",
        node=node,
        engine=ENGINE,
        attrs={
            "engine": ENGINE,
            "major_version": version,
            "database": ident,
            "owner": db["owner"],
            "connections": _limit(int(db["connlimit"])),
            "storage_mb": parse_comment(db.get("comment")).get("storage_mb"),
            "size_mb": math.ceil(int(db["size"]) / 1048576),
            **owned_by_superuser,
            **_in_use(db),
        },
    )


def _role(role: Mapping[str, Any], db: Mapping[str, Any]) -> str:
    """readwrite/readonly when the role holds exactly what svcctl grants that role on `db`, else custom."""
    user, owner = str(role["name"]), str(db["owner"])
    if "c" not in _acl(db.get("acl")).get(user, ""):
        return CUSTOM_ROLE
    schema = set(_acl(db.get("public_acl")).get(user, ""))
    member_of = [m for m in role.get("member_of", []) if m != CLIENTS_ROLE]  # every svcctl user is one
    acts_as_owner = owner in member_of and f"role={owner}" in (role.get("config") or [])
    if acts_as_owner and {"U", "C"} <= schema:
        return "readwrite"
    reads_future = any(
        d["role"] == owner and d["schema"] == "public" and d["type"] == "r" and "r" in _acl(d["acl"]).get(user, "")
        for d in db.get("default_acl", [])
    )
    if not member_of and not role.get("config") and schema == {"U"} and reads_future:
        return "readonly"
    return CUSTOM_ROLE


def _bindings(
    node: str, roles: list[Mapping[str, Any]], databases: Mapping[str, Mapping[str, Any]], password_for: PasswordFor
) -> list[Resource]:
    out: list[Resource] = []
    svcctl: dict[tuple[str, str], dict[int, Attrs]] = defaultdict(dict)
    for role in sorted(roles, key=lambda r: str(r["name"])):
        user = str(role["name"])
        connect_dbs = {name for name, db in databases.items() if "c" in _acl(db.get("acl")).get(user, "")}
        parsed = parse_binding_user(user, connect_dbs, databases)
        if parsed is None:
            out.append(
                Resource(
                    kind=Kind.BINDING,
                    name=f"{node}.{ENGINE}:{user}",
                    node=node,
                    engine=ENGINE,
                    attrs={"engine": ENGINE, "user": user},
                )
            )
            continue
        app, instance, rotation = parsed
        db = databases.get(sql_ident(instance))
        verifier = str(role.get("verifier") or "")
        current = verifier_matches(password_for(binding_purpose(app, instance, rotation)), verifier)
        svcctl[(app, instance)][rotation] = {
            "engine": ENGINE,
            "role": _role(role, db) if db is not None else CUSTOM_ROLE,
            "rotation": rotation,
            "user": user,
            "credentials": "current" if current else "stale",
            "connections": _limit(int(role["connlimit"])),
        }
    for (app, instance), rotations in sorted(svcctl.items()):
        newest = max(rotations)
        for rotation, attrs in sorted(rotations.items()):
            suffix = "" if rotation == newest else f"~r{rotation}"
            out.append(
                Resource(kind=Kind.BINDING, name=f"{app}.{instance}{suffix}", node=node, engine=ENGINE, attrs=attrs)
            )
    return out


DRIVER = PostgresDriver()
