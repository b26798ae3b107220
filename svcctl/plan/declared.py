"""What a change to the YAML declares, without any host: two loaded environments compared entry by entry.

`svcctl diff BASE HEAD` reviews a pull request that has neither SSH nor the key (a fork's): it says which
nodes, services, plans, instances, apps and bindings are added, removed or edited (each field old -> new),
which quotas and rotations change, and flags the changes that can lose data or access. Pure: two
Environments (and their directories, so paths compare as the same files in any checkout) in, records out;
rendering lives in svcctl.plan.declared_render.

Risky, by this module's rules (RISKS): protection turned off, an instance removed (its data is destroyed),
an instance's node pin changed or its engine changed (a move or an engine change replaces it, destroying its
data), a node removed or pointed at another machine (host, port, user, jump host or ssh_config changed), the
environment renamed (the hosts record its objects under the old name), a binding removed (its user is dropped,
the app loses access) and a client network opened (the engines accept direct connections from it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from svcctl.model.spec import Environment
from svcctl.plan.diff import is_sensitive
from svcctl.plan.review import LOCAL_PATHS, SECTIONS, portable
from svcctl.plan.types import Action

ORDER = ("environment", *SECTIONS.values(), "binding")
"""How changes are listed: the environment's name, then the sections as the YAML has them, bindings last."""

QUOTAS = ("connections", "storage_mb", "memory_mb", "eviction")
"""A plan's fields that size the instances on it."""

REACH = ("host", "port", "user", "jump_host", "ssh_config")
"""A node's fields that decide which machine svcctl reaches as that node."""

RISKS = {
    "protection": "protection turned off: apply may now destroy it (with --allow-destroy)",
    "removed-instance": "removed: apply destroys the instance and its data (dumped on its node first)",
    "node-pin": "node pin changed: the instance moves if it is elsewhere, which replaces it and destroys its data",
    "engine": "engine changed: apply replaces the instance, which destroys its data",
    "removed-node": "node removed: its instances must move (replaced, data destroyed) or the plan fails",
    "reach": "node reached at another address: svcctl no longer sees what the old machine holds",
    "renamed": "environment renamed: the hosts record its objects under the old name, the new one owns none",
    "removed-binding": "binding removed: its user is dropped at the next apply and the app loses access",
    "network": "client network opened: the node's engines accept direct connections from it",
}


class FieldChange(NamedTuple):
    """One field's before and after (None: absent on that side); a sensitive one keeps neither value."""

    field: str
    old: Any
    new: Any
    sensitive: bool = False


@dataclass(frozen=True)
class DeclaredChange:
    """One entry added, removed or edited in the YAML, with the risks it carries."""

    action: Action
    address: str
    fields: list[FieldChange]
    risks: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """`node`, `service`, `plan`, `instance`, `app`, `binding` or `environment`."""
        return self.address.split(".", 1)[0]


@dataclass(frozen=True)
class QuotaChange:
    """A size that changes for some instances: a plan's quota, or an instance moved to another plan."""

    address: str
    field: str
    old: Any
    new: Any
    instances: list[str]


@dataclass(frozen=True)
class Rotation:
    """A binding whose rotation counter changes: a new password and user; the old user goes one apply later."""

    address: str
    old: int
    new: int


@dataclass(frozen=True)
class DeclaredDiff:
    """Everything a change to the YAML declares, ordered for review."""

    base_name: str
    head_name: str
    changes: list[DeclaredChange]
    quotas: list[QuotaChange]
    rotations: list[Rotation]

    @property
    def has_changes(self) -> bool:
        """True when HEAD declares anything other than BASE does."""
        return bool(self.changes)

    @property
    def risky(self) -> list[tuple[str, str]]:
        """(address, risk) for every risky change, in order."""
        return [(c.address, r) for c in self.changes for r in c.risks]

    def counts(self) -> tuple[int, int, int]:
        """(added, changed, removed) entries."""
        actions = [c.action for c in self.changes]
        return actions.count(Action.CREATE), actions.count(Action.UPDATE), actions.count(Action.DELETE)


Entries = dict[str, dict[str, Any]]


def declared_entries(env: Environment, root: Path, tree: Path | None = None) -> Entries:
    """The environment as address -> flattened fields (`capacity.storage_mb`), defaults included, paths as
    the same files give them in any checkout: relative to `root` (the environment's directory), or to it
    from inside `tree` (the checkout), else `~/...` or as they are."""
    dump = env.model_dump(mode="json")
    out: Entries = {"environment": {"name": dump["environment"]}}
    items = [(f"{kind}.{name}", entry) for section, kind in SECTIONS.items() for name, entry in dump[section].items()]
    items += [(f"binding.{b['app']}.{b['instance']}", b) for b in dump["bindings"]]
    for address, entry in items:
        fields = dict(entry)
        for name in LOCAL_PATHS.get(address.split(".", 1)[0], ()):
            if isinstance(fields.get(name), str):
                fields[name] = _path(fields[name], root, tree or root)
        out[address] = _flat(fields)
    return out


def _path(value: str, root: Path, tree: Path) -> str:
    path = Path(value)
    if path.is_relative_to(tree) and not path.is_relative_to(root):
        return Path(os.path.relpath(path, root)).as_posix()
    return portable(value, root)


def _flat(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{name}.")
        elif value is not None:
            out[f"{prefix}{name}"] = value
    return out


def compare(
    base: Environment, head: Environment, base_root: Path, head_root: Path, *, trees: tuple[Path, Path] | None = None
) -> DeclaredDiff:
    """What HEAD declares differently from BASE; `*_root` are their directories (paths compare relative to
    them) and `trees` the checkouts they sit in, when they are parts of one."""
    before = declared_entries(base, base_root, trees[0] if trees else None)
    after = declared_entries(head, head_root, trees[1] if trees else None)
    changes: list[DeclaredChange] = []
    for address in sorted(before.keys() | after.keys(), key=_order):
        old, new = before.get(address), after.get(address)
        if old == new:
            continue
        if old is None:
            assert new is not None
            action, fields = Action.CREATE, [_field(k, None, v) for k, v in sorted(new.items())]
        elif new is None:
            action, fields = Action.DELETE, [_field(k, v, None) for k, v in sorted(old.items())]
        else:
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            action, fields = Action.UPDATE, [_field(k, old.get(k), new.get(k)) for k in keys]
        changes.append(DeclaredChange(action, address, fields, _risks(action, address, fields, base, head)))
    return DeclaredDiff(
        base_name=base.name,
        head_name=head.name,
        changes=changes,
        quotas=_quotas(changes, base, head),
        rotations=[
            Rotation(c.address, int(f.old), int(f.new))
            for c in changes
            if c.action is Action.UPDATE and c.kind == "binding"
            for f in c.fields
            if f.field == "rotation" and isinstance(f.old, int) and isinstance(f.new, int)
        ],
    )


def _order(address: str) -> tuple[int, str]:
    kind = address.split(".", 1)[0]
    return ORDER.index(kind) if kind in ORDER else len(ORDER), address


def _field(name: str, old: Any, new: Any) -> FieldChange:
    """A FieldChange; a sensitive field's values are dropped here, before anything can print them."""
    if is_sensitive(name.rsplit(".", 1)[-1]):
        return FieldChange(name, None, None, sensitive=True)
    return FieldChange(name, old, new)


def _engine(env: Environment, instance: str) -> str | None:
    try:
        return env.engine_of(instance)
    except KeyError:
        return None


def _risks(action: Action, address: str, fields: list[FieldChange], base: Environment, head: Environment) -> list[str]:
    kind, _, name = address.partition(".")
    changed = {f.field: f for f in fields}
    risks: list[str] = []
    if kind == "instance":
        if action is Action.DELETE:
            risks.append(RISKS["removed-instance"])
        elif action is Action.UPDATE:
            protect = changed.get("protect")
            if protect is not None and protect.old is not False and protect.new is False:
                risks.append(RISKS["protection"])
            if "node" in changed:
                risks.append(RISKS["node-pin"])
            was, now = _engine(base, name), _engine(head, name)
            if was != now:
                risks.append(f"{RISKS['engine']} ({was} -> {now})")
    elif kind == "node":
        if action is Action.DELETE:
            risks.append(RISKS["removed-node"])
        elif action is Action.UPDATE:
            reach = [f.field for f in fields if f.field in REACH]
            if reach:
                risks.append(f"{RISKS['reach']} ({', '.join(reach)} changed)")
            networks = changed.get("client_networks")
            if networks is not None:
                opened = sorted(set(networks.new or []) - set(networks.old or []))
                if opened:
                    risks.append(f"{RISKS['network']} ({', '.join(opened)})")
    elif kind == "environment" and action is Action.UPDATE:
        risks.append(RISKS["renamed"])
    elif kind == "binding" and action is Action.DELETE:
        risks.append(RISKS["removed-binding"])
    return risks


def _quotas(changes: list[DeclaredChange], base: Environment, head: Environment) -> list[QuotaChange]:
    out: list[QuotaChange] = []
    for c in changes:
        name = c.address.partition(".")[2]
        if c.kind == "plan" and c.action is Action.UPDATE:
            users = sorted(i for i, inst in head.instances.items() if inst.plan == name)
            out += [QuotaChange(c.address, f.field, f.old, f.new, users) for f in c.fields if f.field in QUOTAS]
        elif c.kind == "instance" and c.action is Action.UPDATE and any(f.field == "plan" for f in c.fields):
            was, now = base.plans.get(base.instances[name].plan), head.plans.get(head.instances[name].plan)
            for quota in QUOTAS:
                old, new = getattr(was, quota, None), getattr(now, quota, None)
                if old != new:
                    out.append(QuotaChange(c.address, quota, old, new, [name]))
    return out
