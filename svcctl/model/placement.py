"""Choose a node for each instance: existing ones stay, pinned ones go where pinned, others go to the
node with the most free capacity.

Candidates are filtered in this order: the node runs the instance's engine (service and plan); it offers
the instance's version (`Instance.version`, default the service's highest), when observe told what its
package sources offer (`offers`; `validate` has none, so it skips this filter); labels; then capacity.
A node offers a version when its sources do and it runs no other version of that engine: svcctl neither
upgrades an engine nor runs a second version beside one (a second PostgreSQL major is designed, not done),
and instances placed on one node in one plan share its engine's version.

Capacity is counted per plan: a redis plan takes its memory_mb from the node's memory, a postgres or
mysql plan takes its storage_mb from the node's storage; connections are not counted. The score of a
candidate is the smaller of its two free fractions (free memory / memory capacity, free storage /
storage capacity; a zero capacity is left out) after the instance would land there: the node whose
tightest resource stays loosest wins, so a node full on one axis is not chosen for being empty on the
other. Ties go to the node whose name sorts first, and instances are placed in name order, so the
result is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from svcctl.errors import SvcctlError
from svcctl.model.spec import Environment, Location, Node, ServicePlan, version_key

ENGINE_NAMES: dict[str, str] = {"postgres": "PostgreSQL", "mysql": "MariaDB", "redis": "Redis"}
"""How messages name each engine."""


@dataclass(frozen=True)
class EngineOffer:
    """What one node can give one engine: `offered` are the versions its package sources offer (None: not
    known), `running` the version installed now (None: not installed)."""

    offered: frozenset[str] | None
    running: str | None = None


@dataclass(frozen=True)
class NodeOffers:
    """A node's release ("Debian 12 bookworm") and its offer per engine, from observe; an engine left out
    has no offer data."""

    release: str
    engines: Mapping[str, EngineOffer]
    note: str = ""  # how the offers were found, when that matters to a reader (no package lists, say)


class PlacementError(SvcctlError):
    """No node can take an instance, or the YAML asks to move one that already exists.

    `where` is the instance's declaration when known; the message then starts with it, compiler-style.
    """

    def __init__(self, detail: str, where: Location | None = None) -> None:
        super().__init__(f"{where}: {detail}" if where is not None else detail)
        self.detail = detail
        self.where = where


@dataclass(frozen=True)
class Demand:
    """What one instance takes from its node."""

    memory_mb: int
    storage_mb: int


@dataclass
class _Free:
    memory_mb: int
    storage_mb: int


def demand_of(env: Environment, instance: str) -> Demand:
    """The capacity an instance reserves: memory for redis, storage for postgres and mysql."""
    plan: ServicePlan = env.plan_of(instance)
    if env.engine_of(instance) == "redis":
        return Demand(memory_mb=plan.memory_mb or 0, storage_mb=0)
    return Demand(memory_mb=0, storage_mb=plan.storage_mb or 0)


def place(
    env: Environment, existing: Mapping[str, str], offers: Mapping[str, NodeOffers] | None = None
) -> dict[str, str]:
    """Map every instance to a node; `existing` (instance -> node, as observed) is kept as it is.

    `offers` (node -> what it offers, from observe) filters candidates by version; without it (validate)
    versions are not checked. A node missing from it has no offer data and is not filtered either.
    """
    free = {name: _Free(node.capacity.memory_mb, node.capacity.storage_mb) for name, node in env.nodes.items()}
    result: dict[str, str] = {}
    chosen: dict[tuple[str, str], str] = {}  # (node, engine) -> the version this plan gives it
    known = offers or {}

    def take(instance: str, node: str) -> None:
        result[instance] = node
        if node in free:
            need = demand_of(env, instance)
            free[node].memory_mb -= need.memory_mb
            free[node].storage_mb -= need.storage_mb
        chosen.setdefault((node, env.engine_of(instance)), env.version_of(instance))

    for instance in sorted(existing):
        if instance not in env.instances:
            continue  # no longer declared: the plan decides what to do about it
        pinned = env.instances[instance].node
        if pinned is not None and pinned != existing[instance]:
            raise PlacementError(
                f"instance {instance} exists on node {existing[instance]} but the environment pins it "
                f"to node {pinned}; svcctl does not move instances. Set node: {existing[instance]} "
                "(or remove node:), or migrate the data yourself and delete the old instance.",
                env.location(f"instance.{instance}.node"),
            )
        miss = _version_miss(env, instance, existing[instance], known, {})
        if miss is not None:
            raise PlacementError(
                f"instance {instance} exists on node {existing[instance]}, which cannot give it the version "
                f"it asks for: {miss.sentence(instance)}. svcctl never replaces or upgrades an instance "
                f'because its version changed: set version: "{miss.have}" on instance {instance}, or '
                f"create a new instance at {miss.want} ({_offering(env, instance, known, chosen)}) and move "
                "the data yourself.",
                _version_location(env, instance),
            )
        take(instance, existing[instance])

    pending = sorted(name for name in env.instances if name not in result)
    for instance in pending:
        pinned = env.instances[instance].node
        if pinned is not None:
            miss = _version_miss(env, instance, pinned, known, chosen) if pinned in env.nodes else None
            if miss is not None:
                raise PlacementError(
                    f"instance {instance} is pinned to node {pinned}, which cannot take it: "
                    f"{miss.sentence(instance)}. {_capitalized(_offering(env, instance, known, chosen))}. "
                    f"Pin it to a node that offers {miss.want}, remove node: to let svcctl choose, or set "
                    f"its version: to one {pinned} offers.",
                    env.location(f"instance.{instance}.node"),
                )
            reasons = _reasons(env, instance, pinned, free, check_labels=False)
            if reasons:
                raise PlacementError(
                    f"instance {instance} is pinned to node {pinned}, which cannot take it: "
                    f"{'; '.join(reasons)}. Pin it to another node, remove node: to let svcctl choose, "
                    f"or raise node {pinned}'s capacity.",
                    env.location(f"instance.{instance}.node"),
                )
            take(instance, pinned)

    for instance in pending:
        if instance in result:
            continue
        best: tuple[Fraction, str] | None = None
        rejected: list[str] = []
        versions_missed = False
        for node in sorted(env.nodes):
            reasons = _reasons(env, instance, node, free, check_labels=True)
            miss = _version_miss(env, instance, node, known, chosen)
            if miss is not None and env.engine_of(instance) in env.nodes[node].engines:
                reasons.insert(0, miss.reason())
                versions_missed = True
            if reasons:
                rejected.append(f"{node}: {'; '.join(reasons)}")
                continue
            score = _score(env.nodes[node], free[node], demand_of(env, instance))
            if best is None or score > best[0]:
                best = (score, node)
        if best is None:
            candidates = "\n  ".join(rejected) if rejected else "(no nodes are declared)"
            advice = "Add capacity or a node, relax placement.labels, or choose a smaller plan."
            if versions_missed:
                advice = (
                    f"Add a node that offers {ENGINE_NAMES[env.engine_of(instance)]} {env.version_of(instance)}, "
                    "set version: to one a node offers, add capacity, or relax placement.labels."
                )
            raise PlacementError(
                f"no node can take instance {instance} ({env.engine_of(instance)}, plan "
                f"{env.instances[instance].plan}):\n  {candidates}\n{advice}",
                env.location(f"instance.{instance}"),
            )
        take(instance, best[1])
    return result


@dataclass(frozen=True)
class _Miss:
    """Why a node cannot give an instance its version."""

    node: str
    release: str
    engine: str
    want: str
    offered: frozenset[str] | None
    running: str | None  # set when the node (or this plan) runs another version, the wanted one offered
    installed: str | None = None  # the version the node runs, if any
    note: str = ""  # NodeOffers.note

    @property
    def _where(self) -> str:
        return f"{self.release}; {self.note}" if self.note else self.release

    @property
    def have(self) -> str:
        """The version the node has for the engine (running, else the highest offered)."""
        if self.installed is not None:
            return self.installed
        return max(self.offered, key=version_key) if self.offered else "?"

    def _offers(self) -> str:
        label = ENGINE_NAMES.get(self.engine, self.engine)
        if self.running is not None:
            return f"runs {label} {self.running}"
        listed = ", ".join(sorted(self.offered or (), key=version_key))
        return f"offers {label} {listed}" if listed else f"offers no {label}"

    def sentence(self, instance: str) -> str:
        """`lab-3 (Debian 13 trixie) offers PostgreSQL 17; orders-db wants 15`."""
        tail = " (svcctl neither upgrades an engine nor runs a second version beside it)" if self.running else ""
        return f"{self.node} ({self._where}) {self._offers()}; {instance} wants {self.want}{tail}"

    def reason(self) -> str:
        """The same, as one of a node's reasons in a list: `offers PostgreSQL 17, not 15 (Debian 13 trixie)`."""
        return f"{self._offers()}, not {self.want} ({self._where})"


def _version_miss(
    env: Environment,
    instance: str,
    node: str,
    offers: Mapping[str, NodeOffers],
    chosen: Mapping[tuple[str, str], str],
) -> _Miss | None:
    """Why `node` cannot give `instance` its version, or None (it can, or there is no offer data)."""
    node_offers = offers.get(node)
    engine = env.engine_of(instance)
    offer = node_offers.engines.get(engine) if node_offers is not None else None
    if node_offers is None or offer is None:
        return None
    want = env.version_of(instance)
    running = offer.running or chosen.get((node, engine))
    if offer.offered is not None and want not in offer.offered and running != want:
        return _Miss(node, node_offers.release, engine, want, offer.offered, None, running, node_offers.note)
    if running is not None and running != want:
        return _Miss(node, node_offers.release, engine, want, offer.offered, running, running, node_offers.note)
    return None


def _offering(
    env: Environment, instance: str, offers: Mapping[str, NodeOffers], chosen: Mapping[tuple[str, str], str]
) -> str:
    """`nodes that offer PostgreSQL 15: lab-1, lab-2` (those that run the engine), or that none does."""
    engine = env.engine_of(instance)
    label = f"{ENGINE_NAMES.get(engine, engine)} {env.version_of(instance)}"
    others = [
        name
        for name, node in sorted(env.nodes.items())
        if engine in node.engines and name in offers and _version_miss(env, instance, name, offers, chosen) is None
    ]
    return f"nodes that offer {label}: {', '.join(others)}" if others else f"no declared node offers {label}"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _version_location(env: Environment, instance: str) -> Location | None:
    """Where the instance's version is declared, else the instance itself."""
    return env.location(f"instance.{instance}.version") or env.location(f"instance.{instance}")


def _reasons(env: Environment, instance: str, node: str, free: Mapping[str, _Free], *, check_labels: bool) -> list[str]:
    """Why `node` cannot take `instance` now; empty when it can."""
    spec = env.nodes.get(node)
    if spec is None:
        return [f"node {node} is not declared"]
    engine = env.engine_of(instance)
    reasons: list[str] = []
    if engine not in spec.engines:
        reasons.append(f"does not run {engine}")
    placement = env.instances[instance].placement
    if check_labels and placement is not None:
        wanted = sorted(placement.labels.items())
        missing = [f"{key}={value}" for key, value in wanted if spec.labels.get(key) != value]
        if missing:
            reasons.append(f"lacks label {', '.join(missing)}")
    need = demand_of(env, instance)
    have = free[node]
    if need.memory_mb > have.memory_mb:
        reasons.append(f"needs {need.memory_mb} MB memory, {max(have.memory_mb, 0)} MB free")
    if need.storage_mb > have.storage_mb:
        reasons.append(f"needs {need.storage_mb} MB storage, {max(have.storage_mb, 0)} MB free")
    return reasons


def _score(node: Node, free: _Free, need: Demand) -> Fraction:
    """The smaller free fraction of memory and storage once `need` is taken; a zero capacity is left out."""
    fractions = [
        Fraction(left, capacity)
        for left, capacity in (
            (free.memory_mb - need.memory_mb, node.capacity.memory_mb),
            (free.storage_mb - need.storage_mb, node.capacity.storage_mb),
        )
        if capacity > 0
    ]
    return min(fractions, default=Fraction(0))
