"""The diff: a pure function from (desired, observed) State to an ordered Plan; reads no host, prints nothing.

Resources are matched by address.  deepdiff decides which attributes differ (lists compare as sets, types
strictly: 1, 1.0, True and "1" all differ, so drivers must report the types desired() uses).  An attribute
that is absent compares equal to one that is None.  The host's record of svcctl's last apply (`recorded`)
tells drift (live != recorded) from a configuration change (desired != recorded).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from typing import Any, TypeGuard

from deepdiff import DeepDiff

from svcctl.model.placement import ENGINE_NAMES
from svcctl.plan.types import Action, AttrChange, Cause, Change, Plan
from svcctl.state import Attrs, Kind, Resource, State

FORCES_REPLACE: dict[Kind, set[str]] = {
    Kind.INSTANCE: {"engine", "node"},
    Kind.BINDING: {"engine"},
}
"""Attributes that cannot change in place: a change to one replaces the resource."""

VERSIONS: dict[Kind, str] = {Kind.INSTANCE: "major_version", Kind.ENGINE: "version"}
"""The version attribute of instances and engines: never changed by a plan (an instance is never replaced
because its version changed, and upgrades are not made yet), so a difference is a plan error."""

RESTARTING: dict[Kind, set[str]] = {
    Kind.ENGINE: {"listen", "listen_addresses", "bind_address", "version"},  # what the server binds to
    Kind.INSTANCE: {"memory_mb", "eviction", "port", "bind"},  # Redis instances are processes
}
"""Attributes whose in-place update restarts a service (and so drops its connections)."""

SENSITIVE = {"password", "credentials"}
"""Attribute names whose values never leave the diff; names ending in `_password` are sensitive too."""

OBSERVED_ONLY = {"size_mb", "connections_in_use", "missing", "hidden_by", "listen_base", "owner_superuser"}
"""Attributes drivers report for information; never diffed."""
OBSERVED_ONLY |= {"backups", "latest"}  # a backup schedule's count of good backups on the node, and the newest

KIND_ORDER: tuple[Kind, ...] = (Kind.ENGINE, Kind.INSTANCE, Kind.BACKUP, Kind.BINDING, Kind.SESSION)
"""Apply order for creates, updates and replaces; deletes run in the reverse order."""

DELETED_OUTSIDE = "deleted outside svcctl"


def is_sensitive(name: str) -> bool:
    """True if an attribute's value is a secret (or derived from one) and must never be shown or stored."""
    return name in SENSITIVE or name.endswith("_password")


def fingerprint(observed: State) -> str:
    """sha256 of the observed state's canonical JSON, so apply can refuse a saved plan the hosts outgrew."""
    canonical = json.dumps(observed.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def diff(desired: State, observed: State, *, protected: Collection[str] = (), environment: str = "") -> Plan:
    """Plan what apply must do to turn `observed` into `desired`; pure, so plans are testable as data.

    `protected` names the instances declared `protect: true` at the last apply; an instance whose record
    says `protect: true` is protected too.
    """
    changes: list[Change] = []
    errors: list[str] = []
    unmanaged: list[str] = []
    # Unmanaged look-alikes renamed `<name>@<node>/<engine>` by the observer still block a create on their node.
    shadows = {(r.kind, r.name.split("@", 1)[0], r.node): r for r in observed if not r.managed and "@" in r.name}
    errors += _version_errors(desired, observed)
    for address in sorted(desired.resources.keys() | observed.resources.keys()):
        want, have = desired.get(address), observed.get(address)
        if have is None:
            assert want is not None
            shadow = shadows.get((want.kind, want.name, want.node))
            if shadow is not None and _adopts(want):
                errors.append(_adopt_elsewhere(want, shadow))
            elif shadow is not None:
                errors.append(_collision(shadow))
            elif _adopts(want):
                errors.append(_nothing_to_adopt(want))
            else:
                changes.append(_create(want))
        elif not have.managed:
            if want is None:
                unmanaged.append(f"{address} on {have.node}" + (f" (environment {have.owner})" if have.owner else ""))
            elif _adopts(want) and have.owner is None:
                adoption, problem = _adopt(want, have)
                changes.append(adoption)
                errors += [problem] if problem else []
            else:
                errors.append(_collision(have))
        elif want is None and have.attrs.get("hidden_by"):
            errors.append(
                f"{address} is no longer declared, but svcctl cannot tell whether it still exists on {have.node}: "
                f"{have.attrs['hidden_by']} is not running. Start it and plan again (or declare {address} again); "
                "svcctl never forgets an object it cannot see"
            )
        elif want is None:
            if have.kind is Kind.INSTANCE and _is_protected(have, protected) and not _is_missing(have):
                errors.append(
                    f"{address} is protected and no longer declared; restore it in the YAML, or set "
                    "`protect: false` on it and apply with --allow-destroy to destroy it"
                )
            else:
                changes.append(_delete(have))
        elif _is_missing(have) and have.attrs.get("hidden_by"):
            hidden_by = have.attrs["hidden_by"]
            reason = f"not visible while {hidden_by} is not running; apply starts it, then creates this only if missing"
            changes.append(_create(want, cause=Cause.DRIFT, reason=reason))
        elif _is_missing(have):
            changes.append(_create(want, cause=Cause.DRIFT, reason=DELETED_OUTSIDE))
        else:
            change = _update(want, have)
            if change is not None:
                changes.append(change)
                if change.destroys_data and _is_protected(have, protected, want):
                    errors.append(_protected_replace(change))
    return Plan(
        environment=environment,
        changes=sorted(changes, key=_apply_order),
        unmanaged=unmanaged,
        warnings=_quota_warnings(observed) + _restart_warnings(changes, desired),
        errors=errors,
        fingerprint=fingerprint(observed),
    )


def _is_missing(r: Resource) -> bool:
    return r.attrs.get("missing") is True


def _adopts(want: Resource) -> bool:
    """Whether the YAML says this instance takes over an existing object (`adopt:`)."""
    return want.kind is Kind.INSTANCE and want.attrs.get("adopted") is True


def _adopt(want: Resource, have: Resource) -> tuple[Change, str | None]:
    """The adoption of an unmanaged object, with every attribute change it implies, and why it must not
    happen (None when it may): svcctl's readwrite bindings act as a database's owner, so never as a superuser."""
    live, target = _diffable(have), _diffable(want)
    attrs = [_attr(k, live.get(k), target.get(k)) for k in _differing(live, target)]
    change = Change(
        action=Action.ADOPT,
        address=want.address,
        kind=want.kind,
        node=want.node,
        engine=want.engine,
        attrs=attrs,
        reason="exists; svcctl records it as this environment's and keeps its data, users and grants",
    )
    owner = have.attrs.get("owner")
    if have.attrs.get("owner_superuser") is True:
        return change, (
            f"{want.address} cannot be adopted: its database is owned by the superuser {owner}, and svcctl's "
            "readwrite bindings act as the database's owner. Give the database an owner of its own first "
            f"(ALTER DATABASE {have.attrs.get('database')} OWNER TO a role that is not a superuser), then plan again"
        )
    return change, None


def _nothing_to_adopt(want: Resource) -> str:
    database = want.attrs.get("database")
    return (
        f"{want.address} adopts database {database} on {want.node}, but {want.node} has no such database "
        f"(or its engine is not running); create it there, pin the instance to the node that has it, or remove "
        "adopt: to let svcctl create a new one"
    )


def _adopt_elsewhere(want: Resource, shadow: Resource) -> str:
    return (
        f"{want.address} adopts database {want.attrs.get('database')} on {want.node}, but {shadow.node} holds it "
        f"({shadow.engine}); pin the instance to node {shadow.node}"
    )


def _is_protected(have: Resource, protected: Collection[str], want: Resource | None = None) -> bool:
    """Protected by the caller's list, by the host's record of the last apply, or (replace) by the YAML."""
    recorded = have.recorded or {}
    declared = want is not None and want.attrs.get("protect") is True
    return have.name in protected or recorded.get("protect") is True or declared


def _collision(have: Resource) -> str:
    if have.kind is Kind.INSTANCE and have.attrs.get("database"):
        fix = (
            f"adopt it (adopt: {{database: {have.attrs['database']}}} on the instance), rename the instance in "
            f"the YAML, or remove the object from {have.node}"
        )
    elif have.kind is Kind.INSTANCE:
        fix = f"rename the instance in the YAML or remove the object from {have.node}"
    else:
        fix = f"remove the object from {have.node} or stop declaring it there"
    return (
        f"{have.address} exists on {have.node} but svcctl did not create it; {fix} "
        "(svcctl never takes over or overwrites what it did not create unless the YAML says so)"
    )


def _protected_replace(change: Change) -> str:
    fields = ", ".join(a.field for a in change.attrs if a.forces_replace)
    return (
        f"{change.address} is protected and changing {fields} forces its replacement, which destroys its "
        "data; revert the change, or set `protect: false` on it and apply with --allow-destroy to replace it"
    )


def _attr(name: str, old: Any, new: Any, cause: Cause = Cause.CONFIG, forces: bool = False) -> AttrChange:
    """One AttrChange; sensitive values are dropped here, before anything can print them."""
    if is_sensitive(name):
        return AttrChange(field=name, cause=cause, sensitive=True, forces_replace=forces)
    return AttrChange(field=name, old=old, new=new, cause=cause, forces_replace=forces)


def _diffable(r: Resource) -> Attrs:
    """The attributes the diff compares: the resource's own, minus observed-only ones, plus node and engine.

    node and engine are Resource fields, not attrs; they join the comparison so that moving an instance to
    another node (or engine) shows up, and replaces it.
    """
    return {**{k: v for k, v in r.attrs.items() if k not in OBSERVED_ONLY}, "node": r.node, "engine": r.engine}


def _recorded(have: Resource) -> Attrs | None:
    """What svcctl recorded at its last apply; node and engine default to the live ones (a host never moves)."""
    if have.recorded is None:
        return None
    recorded = {k: v for k, v in have.recorded.items() if k not in OBSERVED_ONLY}
    return {"node": have.node, "engine": have.engine, **recorded}


def _create(want: Resource, cause: Cause = Cause.CONFIG, reason: str | None = None) -> Change:
    return Change(
        action=Action.CREATE,
        address=want.address,
        kind=want.kind,
        node=want.node,
        engine=want.engine,
        cause=cause,
        attrs=[_attr(k, None, v, cause) for k, v in sorted(_diffable(want).items()) if v is not None],
        reason=reason,
    )


def _delete(have: Resource) -> Change:
    missing = _is_missing(have)
    if have.attrs.get("adopted") is True and not missing:  # svcctl did not make it, so it never drops it
        return Change(
            action=Action.DELETE,
            address=have.address,
            kind=have.kind,
            node=have.node,
            engine=have.engine,
            attrs=[_attr("adopted", True, None)],
            reason="adopted and no longer declared: released, svcctl forgets it; the database and its data stay",
        )
    return Change(
        action=Action.DELETE,
        address=have.address,
        kind=have.kind,
        node=have.node,
        engine=have.engine,
        cause=Cause.DRIFT if missing else Cause.CONFIG,
        attrs=[_attr(k, v, None) for k, v in sorted(_diffable(have).items()) if v is not None],
        destroys_data=have.kind is Kind.INSTANCE and not missing,
        reason=f"{DELETED_OUTSIDE} and no longer declared; apply forgets its record" if missing else None,
    )


def _differing(old: Attrs, new: Attrs) -> list[str]:
    """Top-level keys whose values differ (absent == None), in name order.

    DeepDiff (order of lists ignored, types strict) decides, but only for the keys whose values are not
    `identical`: a converged plan compares thousands of objects, nearly all alike, and DeepDiff costs ~0.3 ms each.
    """
    unsure = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if not identical(old.get(k), new.get(k))}
    if not unsure:
        return []
    before = {k: v[0] for k, v in unsure.items() if k in old}
    after = {k: v[1] for k, v in unsure.items() if k in new}
    # threshold_to_diff_deeper=0: DeepDiff 8 otherwise reports two mappings that share under a third of their
    # keys as one change of the whole root, which names no key at all
    keys: Iterable[str] = DeepDiff(
        before, after, ignore_order=True, verbose_level=2, threshold_to_diff_deeper=0
    ).affected_root_keys
    return sorted(k for k in keys if old.get(k) is not None or new.get(k) is not None)


def identical(a: object, b: object) -> bool:
    """Equal with the very same types all the way down (True is not 1, 1 is not 1.0), lists in the same order:
    what DeepDiff never reports as a difference."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(identical(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple)
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _version_errors(desired: State, observed: State) -> list[str]:
    """A plan error for each instance whose version differs from what its node runs, and for each engine
    whose version would have to change; `_update` leaves those attributes out of the changes."""
    errors: list[str] = []
    blamed: set[str] = set()  # engines an instance's error already names
    for want in sorted(desired, key=lambda r: r.address):
        if want.kind is not Kind.INSTANCE:
            continue
        wanted = want.attrs.get("major_version")
        label = ENGINE_NAMES.get(want.engine, want.engine)
        have = observed.get(want.address)
        engine = observed.get(f"engine.{want.node}.{want.engine}")
        if have is not None and have.managed and not _is_missing(have) and have.node == want.node:
            live = have.attrs.get("major_version")
            if live is not None and wanted is not None and str(live) != str(wanted):
                errors.append(
                    f"{want.address} runs {label} {live} on {want.node}, but the environment asks for {wanted}; "
                    "svcctl never replaces an instance because its version changed, and does not upgrade one "
                    f'yet: set version: "{live}" on instance {want.name} (without version: it takes its '
                    f"service's highest), or create a new instance at {wanted} and move the data yourself"
                )
                blamed.add(f"engine.{want.node}.{want.engine}")
                continue
        running = engine.attrs.get("version") if engine is not None and engine.attrs.get("installed") else None
        if running is not None and wanted is not None and str(running) != str(wanted):
            errors.append(
                f"{want.address} wants {label} {wanted} on {want.node}, which runs {label} {running}; svcctl "
                "neither upgrades an engine nor runs a second version beside it yet: place the instance on a "
                f'node that offers {wanted}, or set version: "{running}" on it'
            )
            blamed.add(f"engine.{want.node}.{want.engine}")
    for want in sorted(desired, key=lambda r: r.address):
        have = observed.get(want.address)
        if want.kind is not Kind.ENGINE or want.address in blamed or have is None or not have.attrs.get("installed"):
            continue
        live, wanted = have.attrs.get("version"), want.attrs.get("version")
        if live is not None and wanted is not None and str(live) != str(wanted):
            label = ENGINE_NAMES.get(want.engine, want.engine)
            errors.append(
                f"{want.address} runs {label} {live}, but the instances placed on {want.node} want {wanted}; "
                "svcctl does not upgrade an engine yet: place them on a node that offers "
                f'{wanted}, or set version: "{live}" on them'
            )
    return errors


def _update(want: Resource, have: Resource) -> Change | None:
    live, target, recorded = _diffable(have), _diffable(want), _recorded(have)
    version = VERSIONS.get(want.kind)
    if version is not None and _is_installed_version(have, version):
        target[version] = live.get(version)  # never changed by a plan: `_version_errors` says why
    keys = _differing(live, target)
    if not keys:
        return None
    drifted = set(_differing(recorded, live)) if recorded is not None else set()
    replacing = FORCES_REPLACE.get(want.kind, set())
    attrs = [
        _attr(
            k,
            live.get(k),
            target.get(k),
            Cause.DRIFT if k in drifted else Cause.CONFIG,
            forces=k in replacing,
        )
        for k in keys
    ]
    replace = any(a.forces_replace for a in attrs)
    return Change(
        action=Action.REPLACE if replace else Action.UPDATE,
        address=want.address,
        kind=want.kind,
        node=want.node,
        engine=want.engine,
        cause=Cause.DRIFT if all(a.cause is Cause.DRIFT for a in attrs) else Cause.CONFIG,
        attrs=attrs,
        restarts_service=not replace and bool(set(keys) & RESTARTING.get(want.kind, set())),
        destroys_data=replace and want.kind is Kind.INSTANCE,
    )


def _is_installed_version(have: Resource, version: str) -> bool:
    """Whether `have` really runs a version (an engine that is installed, an instance that exists)."""
    if have.attrs.get(version) is None:
        return False
    return have.attrs.get("installed") is True if have.kind is Kind.ENGINE else not _is_missing(have)


def _apply_order(change: Change) -> tuple[int, int, str]:
    """Creates, updates and replaces in KIND_ORDER, then deletes in reverse; by address within a group."""
    rank = KIND_ORDER.index(change.kind)
    if change.action is Action.DELETE:
        return 1, len(KIND_ORDER) - rank, change.address
    return 0, rank, change.address


def _quota_warnings(observed: State) -> list[str]:
    warnings = []
    for r in sorted(observed, key=lambda r: r.address):
        size, quota = r.attrs.get("size_mb"), r.attrs.get("storage_mb")
        if r.kind is Kind.INSTANCE and _is_number(size) and _is_number(quota) and size > quota:
            warnings.append(f"{r.address} on {r.node} uses {size} MB of its {quota} MB quota (over quota)")
    return warnings


def _restart_warnings(changes: list[Change], desired: State) -> list[str]:
    """A restart of an engine svcctl did not install: said apart, since it drops the connections of clients
    that are not svcctl's."""
    out = []
    for c in changes:
        want = desired.get(c.address)
        theirs = want is not None and want.attrs.get("installed_by") == "existing"
        if c.restarts_service and c.kind is Kind.ENGINE and theirs:
            fields = ", ".join(a.field for a in c.attrs if a.field in RESTARTING[Kind.ENGINE])
            out.append(
                f"{c.address} was not installed by svcctl, and this apply restarts it ({fields} changes): "
                "every client connected to it now loses its connection"
            )
    return out


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
