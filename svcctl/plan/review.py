"""What a saved plan pins, and what moved since: the desired environment and the observed state it rests on.

A saved plan is what was reviewed. It keeps a digest of every field of every entry the YAML declared and of
every observed resource the plan rests on, so that apply can refuse it once either moved and say what did
(`instance.extra-db was added to the YAML`). Digests only: the plan file holds no YAML value, no path and no
secret. Paths are digested relative to the environment's directory (or `~`), so another checkout of the
same files, anywhere, pins the same environment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from svcctl.model.spec import Environment
from svcctl.state import Kind, State

Entries = dict[str, dict[str, str]]
"""Digests of the desired environment: entry address (`instance.orders-db`) -> field -> digest."""

SECTIONS = {"nodes": "node", "services": "service", "plans": "plan", "instances": "instance", "apps": "app"}
LOCAL_PATHS = {"node": ("identity_file", "ssh_config", "known_hosts"), "app": ("manifest",)}
"""The fields holding a path on this machine (the loader resolved them to absolute paths)."""

MEASURED = frozenset({"size_mb", "connections_in_use"})
"""Observed attributes that change by themselves and decide no change (quota warnings, `svcctl status`): not
pinned, so a database growing or a client connecting leaves a saved plan valid."""

NAME = "environment"


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the one form every digest is taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    """A short digest of a JSON value (64 bits: it tells what changed; the fingerprints decide)."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:16]


def portable(value: str, root: Path) -> str:
    """A resolved path as the same files give it in any checkout: relative to the environment's directory
    when inside it, else `~/...` when under the home directory, else as it is."""
    path = Path(value)
    for base, prefix in ((root, ""), (Path.home(), "~/")):
        try:
            return prefix + path.relative_to(base).as_posix()
        except ValueError:
            continue
    return value


def desired_entries(env: Environment, root: Path) -> Entries:
    """The environment as digests per entry and field (`binding.web.orders-db` -> `role`), paths made
    portable against `root`, the environment's directory. Defaults count as written."""
    dump = env.model_dump(mode="json")
    out: Entries = {NAME: {"name": digest(dump[NAME])}}
    items: list[tuple[str, dict[str, Any]]] = []
    for section, kind in SECTIONS.items():
        items += [(f"{kind}.{name}", fields) for name, fields in dump[section].items()]
    items += [(f"binding.{b['app']}.{b['instance']}", b) for b in dump["bindings"]]
    for address, fields in items:
        fields = dict(fields)
        for field in LOCAL_PATHS.get(address.split(".", 1)[0], ()):
            if isinstance(fields.get(field), str):
                fields[field] = portable(fields[field], root)
        out[address] = {field: digest(value) for field, value in fields.items()}
    return out


def entries_fingerprint(entries: Entries) -> str:
    """sha256 of the desired environment's digests: equal exactly when every entry and field is."""
    return hashlib.sha256(canonical(entries).encode()).hexdigest()


def pinned(observed: State, desired: State, changing: Collection[str]) -> State:
    """The part of the observed state a plan rests on: whatever its changes act on (the addresses `changing`,
    an engine only then), this environment's own objects, and whatever sits at an address it declares or is
    named like one of its objects (look-alikes on other nodes block creates); without measurements such as
    `size_mb` and `connections_in_use`.

    Of a shared engine's registry record only the networks other environments claim count (they are part of
    the engine's desired state); which environment recorded it last does not. So another environment's apply
    and a database growing leave a saved plan as it was: apply refuses it anyway when its changes would come
    out different, which is the final test.
    """
    declared = {(r.kind, r.name) for r in desired}
    out = []
    for r in observed:
        ours = r.managed and r.kind is not Kind.ENGINE
        if not (ours or r.address in changing or (r.kind, r.name.split("@", 1)[0]) in declared):
            continue
        if r.kind is Kind.ENGINE and r.address not in changing:
            continue  # shared, and left as it is: any difference it makes shows in the changes
        update: dict[str, Any] = {"attrs": {k: v for k, v in r.attrs.items() if k not in MEASURED}}
        if r.kind is Kind.ENGINE:
            claimed = sorted({n for networks in (r.claims or {}).values() for n in networks})
            update.update(recorded=None, claims={"other environments": claimed})
        out.append(r.model_copy(update=update))
    return State.of(out)


def observed_digests(state: State) -> dict[str, str]:
    """A digest per observed resource (attributes, record, claims, owner), by address."""
    return {r.address: digest(r.model_dump(mode="json")) for r in state}


def _located(env: Environment, address: str) -> str:
    where = env.location(address)
    return f" ({where})" if where is not None else ""


def yaml_changes(then: Entries, now: Entries, env: Environment) -> list[str]:
    """What was added to, removed from or changed in the YAML since `then`, each where it is now declared."""
    out: list[str] = []
    for address in sorted(then.keys() | now.keys()):
        before, after = then.get(address), now.get(address)
        if before is None:
            out.append(f"{address} was added to the YAML{_located(env, address)}")
        elif after is None:
            out.append(f"{address} was removed from the YAML")
        elif address == NAME:
            if before != after:
                out.append(f"the environment's name changed in the YAML{_located(env, NAME)}")
        else:
            for field in sorted(before.keys() | after.keys()):
                if before.get(field) != after.get(field):
                    field_at = env.location(f"{address}.{field}") or env.location(address)
                    out.append(f"{address}.{field} changed in the YAML" + (f" ({field_at})" if field_at else ""))
    return out


def host_changes(then: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """Which observed resources appeared, went or changed since `then`."""
    out: list[str] = []
    for address in sorted(then.keys() | now.keys()):
        if address not in then:
            out.append(f"{address} appeared")
        elif address not in now:
            out.append(f"{address} is gone")
        elif then[address] != now[address]:
            out.append(f"{address} changed")
    return out


def listed(items: list[str], limit: int = 10) -> str:
    """Items joined with '; ', cut after `limit` with how many more there are."""
    shown = items[:limit]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")
