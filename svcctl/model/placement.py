"""Choose a node for each instance: existing ones stay, pinned ones go where pinned, others go to the
node with the most free capacity.

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
from svcctl.model.spec import Environment, Location, Node, ServicePlan


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


def place(env: Environment, existing: Mapping[str, str]) -> dict[str, str]:
    """Map every instance to a node; `existing` (instance -> node, as observed) is kept as it is."""
    free = {name: _Free(node.capacity.memory_mb, node.capacity.storage_mb) for name, node in env.nodes.items()}
    result: dict[str, str] = {}

    def take(instance: str, node: str) -> None:
        result[instance] = node
        if node in free:
            need = demand_of(env, instance)
            free[node].memory_mb -= need.memory_mb
            free[node].storage_mb -= need.storage_mb

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
        take(instance, existing[instance])

    pending = sorted(name for name in env.instances if name not in result)
    for instance in pending:
        pinned = env.instances[instance].node
        if pinned is not None:
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
        for node in sorted(env.nodes):
            reasons = _reasons(env, instance, node, free, check_labels=True)
            if reasons:
                rejected.append(f"{node}: {'; '.join(reasons)}")
                continue
            score = _score(env.nodes[node], free[node], demand_of(env, instance))
            if best is None or score > best[0]:
                best = (score, node)
        if best is None:
            candidates = "\n  ".join(rejected) if rejected else "(no nodes are declared)"
            raise PlacementError(
                f"no node can take instance {instance} ({env.engine_of(instance)}, plan "
                f"{env.instances[instance].plan}):\n  {candidates}\n"
                "Add capacity or a node, relax placement.labels, or choose a smaller plan.",
                env.location(f"instance.{instance}"),
            )
        take(instance, best[1])
    return result


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
