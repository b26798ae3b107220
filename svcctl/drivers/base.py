"""What every engine driver provides, and the host-side observe script they share.

A driver owns one engine (pyinfra's facts are the model): a read-only Python snippet that runs on the
host as root and returns JSON-able data, a pure parser from that data to Resources, the desired
Resources for an environment, and the variables its playbook tasks need.  One observe script per host
contains every driver's snippet, so observing a node costs one SSH round trip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from svcctl.model.names import is_valid_name, sql_ident
from svcctl.model.spec import Binding, Environment, version_key
from svcctl.secrets import Secret
from svcctl.state import Attrs, Kind, Resource, State

REGISTRY_PATH = "/var/lib/svcctl/registry.json"

# purpose ("binding/web/orders-db/0", "instance/sessions/admin") -> the derived password
PasswordFor = Callable[[str], Secret]


@dataclass(frozen=True)
class Observed:
    """One node's observation: each engine's snippet output plus the host's registry.

    Built by `svcctl.drivers.reported.observation`, which checked every value against its schema first:
    what a node prints is untrusted, and drivers parse only what passed.
    """

    node: str
    engines: Mapping[str, Any]  # engine -> whatever its snippet returned (or {"error": "..."})
    registry: Mapping[str, Any] = field(default_factory=dict)  # address -> {"attrs": {...}, ...}


@dataclass(frozen=True)
class DesiredContext:
    """What desired-state computation may look at besides the YAML."""

    env: Environment
    placement: Mapping[str, str]  # instance -> node
    observed: State  # e.g. Redis keeps the port an instance already has


class Driver(Protocol):
    """One engine: observe (snippet + pure parse), desired resources, playbook variables."""

    engine: str

    def snippet(self) -> str:
        """Python source defining `observe_<engine>() -> dict`, run as root on the host (stdlib only); it may
        define `units_<engine>() -> list` too, the systemd units it will ask about, so one call asks for all."""
        ...

    def parse(self, node: str, raw: Mapping[str, Any], password_for: PasswordFor) -> list[Resource]:
        """Live resources of this engine on one node, from its snippet's output (pure; tested on recordings).

        Return every object of this engine that exists (svcctl's or not); the caller marks which are
        managed from the host's registry.  Binding verifiers are checked with `password_for` here and
        reduced to `credentials: "current" | "stale"`; no verifier leaves the driver.
        """
        ...

    def desired(self, ctx: DesiredContext) -> list[Resource]:
        """Resources this engine should have for the environment (engines, instances, bindings)."""
        ...

    def secrets_for(self, resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
        """The secrets a playbook needs to realise this resource (e.g. {"password": ...})."""
        ...


# --- what the drivers share: binding identities and the shape of desired state --------------------------------


def binding_user(app: str, instance: str, rotation: int) -> str:
    """The engine user of a binding: `sv_<app>_<instance>_r<rotation>` (the names' SQL identifiers)."""
    return f"sv_{sql_ident(app)}_{sql_ident(instance)}_r{rotation}"


_BINDING_USER = re.compile(r"sv_([a-z0-9_]+)_r(0|[1-9][0-9]*)")


def name_of(ident: str) -> str | None:
    """An SQL identifier back to the svcctl name it came from, or None when svcctl would not make it."""
    name = ident.replace("_", "-")
    if not is_valid_name(name, reserved=False) or sql_ident(name) != ident:
        return None
    return name


def parse_binding_user(user: str, granted: Iterable[str], databases: Iterable[str]) -> tuple[str, str, int] | None:
    """`sv_web_orders_db_r2` -> ("web", "orders-db", 2), the inverse of `binding_user`; None for other users.

    Both names may hold `_` once mapped, so the databases the user may reach (then all of the node's) decide
    where the app's name ends; a user no split explains is not svcctl's.
    """
    match = _BINDING_USER.fullmatch(user)
    if match is None:
        return None
    parts = match[1].split("_")
    candidates = []
    for i in range(1, len(parts)):
        app, instance = name_of("_".join(parts[:i])), name_of("_".join(parts[i:]))
        if app is not None and instance is not None:
            candidates.append((app, instance))
    for known in (set(granted), set(databases)):
        hits = [c for c in candidates if sql_ident(c[1]) in known]
        if len(hits) == 1:
            return (*hits[0], int(match[2]))
    return (*candidates[0], int(match[2])) if len(candidates) == 1 else None


def binding_purpose(app: str, instance: str, rotation: int) -> str:
    """What a binding's password is derived for (svcctl.secrets): one password per rotation."""
    return f"binding/{app}/{instance}/{rotation}"


def binding_password(resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
    """{"password": ...} for a binding's current rotation; nothing for an old rotation (`~r<n>`) or others.

    Nor for a binding whose record is all that is left (an apply stopped between recording and creating
    it, then the binding was dropped from the YAML): its delete only forgets the record.
    """
    rotation = resource.attrs.get("rotation")
    if resource.kind is not Kind.BINDING or "~" in resource.name or not isinstance(rotation, int):
        return {}
    app, instance = resource.name.split(".", 1)
    return {"password": password_for(binding_purpose(app, instance, rotation))}


def is_adopted(ctx: DesiredContext, name: str) -> bool:
    """Whether instance `name` is an adopted database: its YAML says `adopt:`, or its record says it was
    adopted, for good (removing `adopt:` later never turns it into one svcctl may drop)."""
    observed = ctx.observed.get(f"instance.{name}")
    recorded = observed is not None and observed.attrs.get("adopted") is True
    return ctx.env.instances[name].adopt is not None or recorded


def quota_exceeded(ctx: DesiredContext, name: str) -> Attrs:
    """`quota_exceeded` of an instance whose plan enforces its storage quota: whether its observed size is over
    `storage_mb` now (a new instance is not); nothing for a plan that does not enforce it."""
    plan = ctx.env.plan_of(name)
    if not plan.storage_enforce or plan.storage_mb is None:
        return {}
    observed = ctx.observed.get(f"instance.{name}")
    size = observed.attrs.get("size_mb") if observed is not None else None
    return {"quota_exceeded": isinstance(size, int) and size > plan.storage_mb}


def placed_instances(ctx: DesiredContext, engine: str) -> list[tuple[str, str]]:
    """(instance, node) for each placed instance of this engine, in name order."""
    env = ctx.env
    return [
        (name, ctx.placement[name])
        for name in sorted(env.instances)
        if env.engine_of(name) == engine and name in ctx.placement
    ]


def desired_bindings(ctx: DesiredContext, engine: str, extra: Callable[[Binding, str], Attrs]) -> list[Resource]:
    """The current-rotation user of each binding on a placed instance of this engine; `extra` adds the
    engine's own attributes (given the binding and its node)."""
    env = ctx.env
    out = []
    for b in env.bindings:
        node = ctx.placement.get(b.instance)
        if b.instance not in env.instances or env.engine_of(b.instance) != engine or node is None:
            continue
        # An instance over its enforced quota keeps its readers and loses its writers until it is under again.
        over = quota_exceeded(ctx, b.instance).get("quota_exceeded") is True
        attrs: Attrs = {
            "engine": engine,
            "role": "readonly" if over else b.role,
            "rotation": b.rotation,
            "user": binding_user(b.app, b.instance, b.rotation),
            "credentials": "current",
            **extra(b, node),
        }
        out.append(Resource(kind=Kind.BINDING, name=f"{b.app}.{b.instance}", node=node, engine=engine, attrs=attrs))
    return out


def desired_engines(
    ctx: DesiredContext, engine: str, instances: list[tuple[str, str]], extra: Callable[[str], Attrs]
) -> list[Resource]:
    """`engine.<node>.<engine>` for each node hosting one of `instances`, at the highest version they need."""
    versions: dict[str, list[str]] = {}
    for name, node in instances:
        versions.setdefault(node, []).append(ctx.env.version_of(name))
    out = []
    for node, wanted in sorted(versions.items()):
        observed = ctx.observed.get(f"engine.{node}.{engine}")
        attrs = {"installed": True, "version": max(wanted, key=version_key), **extra(node), **installed_by(observed)}
        if "client_networks" in attrs:
            own = list(attrs["client_networks"])
            attrs["client_networks"] = shared_networks(own, ctx.observed.get(f"engine.{node}.{engine}"))
            attrs["claimed_networks"] = own  # registry-only: this environment's claim, kept in the engine's record
        out.append(Resource(kind=Kind.ENGINE, name=f"{node}.{engine}", node=node, engine=engine, attrs=attrs))
    return out


def installed_by(observed: Resource | None) -> Attrs:
    """Who installed an engine, as its record keeps it (registry-only): `svcctl` when this apply installs it,
    `existing` when it was there before svcctl recorded it (a server svcctl did not set up). A record an older
    svcctl wrote does not say: then nothing is claimed."""
    recorded = (observed.recorded or {}) if observed is not None else {}
    if "installed_by" in recorded:
        return {"installed_by": recorded["installed_by"]}
    if observed is not None and observed.recorded is not None:
        return {}
    installed = observed is not None and observed.attrs.get("installed") is True
    return {"installed_by": "existing" if installed else "svcctl"}


def shared_networks(own: list[str], observed: Resource | None) -> list[str]:
    """An engine's client networks: this environment's, then those other environments on the node claimed.

    Engines are shared by the environments on a node; each environment's apply keeps the others' networks
    open, so one environment never cuts another's apps off. A network goes when no environment claims it.
    """
    claimed = {n for networks in ((observed.claims or {}) if observed else {}).values() for n in networks}
    return [*own, *sorted(claimed - set(own))]
