"""Which observed objects svcctl manages: those the host's registry records for this environment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from svcctl.errors import SvcctlError
from svcctl.state import Kind, Resource


def base_address(address: str) -> str:
    """`binding.web.db~r0` (an old rotation's user) belongs to `binding.web.db`."""
    return address.split("~", 1)[0]


def mark_ownership(
    node: str, live: Iterable[Resource], registry: Mapping[str, Any], environment: str
) -> list[Resource]:
    """Mark live resources managed (with their recorded attrs) or not, and add recorded-but-missing ones.

    Records written by another environment are not ours: their objects are unmanaged here, so two
    environments sharing a node never delete each other's databases.  Engines are shared
    infrastructure: always managed, never deleted (the plan drops engines nobody wants).
    """
    ours = {a: r for a, r in registry.items() if isinstance(r, Mapping) and r.get("environment") == environment}
    # Environments that still have objects here: their claims on shared engines stand, a gone one's lapse.
    present = {
        r.get("environment") for a, r in registry.items() if isinstance(r, Mapping) and not a.startswith("engine.")
    }
    out: list[Resource] = []
    seen: set[str] = set()
    live = list(live)
    # A recorded object the observer did not see is missing, unless its engine is down: then it is hidden.
    stopped = {r.engine: r.address for r in live if r.kind is Kind.ENGINE and r.attrs.get("running") is False}
    for res in live:
        seen.add(res.address)
        record = ours.get(res.address)
        if record is None and res.kind is Kind.ENGINE:
            # Engines are shared: the last apply of any environment recorded what they should be, so a
            # stopped engine is drift here too, not a configuration change.
            shared = registry.get(res.address)
            record = shared if isinstance(shared, Mapping) else None
        owner = record or ours.get(base_address(res.address))
        theirs = registry.get(res.address) or registry.get(base_address(res.address))
        other = theirs.get("environment") if owner is None and isinstance(theirs, Mapping) else None
        attrs = dict(res.attrs)
        if res.kind is Kind.ENGINE and "client_networks" in attrs:
            attrs["claimed_networks"] = _own_claim(record, environment)  # registry-only attribute
        if res.kind is Kind.ENGINE and record is not None and "installed_by" in record.get("attrs", {}):
            attrs["installed_by"] = record["attrs"]["installed_by"]  # registry-only: who installed it
        if res.kind is Kind.INSTANCE and record is not None:
            for registry_only in ("protect", "adopted", "quota_exceeded"):  # what the record alone knows of it
                if registry_only in record.get("attrs", {}):
                    attrs[registry_only] = record["attrs"][registry_only]
        out.append(
            res.model_copy(
                update={
                    "attrs": attrs,
                    "managed": owner is not None or res.kind is Kind.ENGINE,
                    "recorded": dict(record["attrs"]) if record else None,
                    "owner": str(other) if other and res.kind is not Kind.ENGINE else None,
                    "claims": _claims(record, environment, present) if res.kind is Kind.ENGINE else None,
                }
            )
        )
    for address, record in sorted(ours.items()):
        if address in seen:
            continue
        kind_name, _, name = address.partition(".")
        try:
            kind = Kind(kind_name)
        except ValueError:
            continue
        attrs = dict(record.get("attrs", {}))
        engine = str(attrs.get("engine") or name.rsplit(".", 1)[-1])
        seen_as: dict[str, Any] = {"missing": True}
        if kind not in (Kind.ENGINE, Kind.BACKUP) and engine in stopped:  # unit files show whatever runs
            seen_as["hidden_by"] = stopped[engine]
        out.append(Resource(kind=kind, name=name, node=node, engine=engine, attrs=seen_as, recorded=attrs))
    return out


def _own_claim(record: Mapping[str, Any] | None, environment: str) -> list[str]:
    """This environment's client networks as the engine's record keeps them ([] if it never claimed any)."""
    claims = (record or {}).get("claims")
    mine = claims.get(environment) if isinstance(claims, Mapping) else None
    return [str(n) for n in mine] if isinstance(mine, list) else []


def _claims(record: Mapping[str, Any] | None, environment: str, present: set[Any]) -> dict[str, list[str]]:
    """Other environments' client networks for a shared engine, as its registry record keeps them."""
    claims = (record or {}).get("claims")
    if not isinstance(claims, Mapping):
        return {}
    return {
        str(env): [str(n) for n in networks]
        for env, networks in sorted(claims.items())
        if env != environment and env in present and isinstance(networks, list)
    }


def merge_nodes(resources: Iterable[Resource]) -> list[Resource]:
    """Make addresses unique across nodes: unmanaged look-alikes get `@<node>/<engine>` appended to their name.

    Two nodes (or two engines on one node) may hold objects that map to the same address, e.g. a database
    `orders_db` on lab-1 and on lab-2 that svcctl did not create.  The one svcctl manages keeps the address;
    the others are renamed so they are still listed (and still block a create on their node) without
    clashing.  Two *managed* objects at one address mean the registries disagree: refuse.
    """
    groups: dict[str, list[Resource]] = {}
    for res in resources:
        groups.setdefault(res.address, []).append(res)
    out: list[Resource] = []
    for address, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        managed = [r for r in group if r.managed]
        if len(managed) > 1:
            where = ", ".join(f"{r.node} ({r.engine})" for r in managed)
            raise SvcctlError(
                f"{address} is recorded as svcctl's on more than one node: {where}. Each object lives in one "
                "place; remove the stale record from /var/lib/svcctl/registry.json on the wrong node (after "
                "checking which one holds the data) and plan again."
            )
        for res in group:
            out.append(res if res.managed else res.model_copy(update={"name": f"{res.name}@{res.node}/{res.engine}"}))
    return out
