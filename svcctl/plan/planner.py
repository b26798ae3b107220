"""From an environment to a Plan: observe, place, compute desired state, diff.  Reads hosts, writes nothing."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from svcctl.drivers.base import PasswordFor
from svcctl.drivers.versions import all_offers
from svcctl.model.placement import place
from svcctl.model.spec import Environment
from svcctl.plan.desired import desired_state
from svcctl.plan.diff import diff, fingerprint
from svcctl.plan.observe import DEFAULT_OPTIONS, Observation, ObserveOptions, Progress, Reuse, observe_nodes
from svcctl.plan.review import pinned
from svcctl.plan.targets import narrow
from svcctl.plan.types import Plan
from svcctl.secrets import derive_password
from svcctl.ssh import Sessions
from svcctl.state import Kind, State


def password_source(key: bytes) -> PasswordFor:
    """Derive any purpose's password from the environment's key."""
    return lambda purpose: derive_password(key, purpose)


@dataclass(frozen=True)
class Planned:
    """A plan with the states it was made from (apply needs both)."""

    plan: Plan
    desired: State
    observed: State
    placement: dict[str, str]
    left_out: frozenset[str] = frozenset()
    """With --target: the addresses of the changes the targets left out (still to do, never done by it)."""
    observation: Observation | None = None
    """What the nodes reported, node by node (apply's verification asks again only the nodes it changed)."""


def relevant(observed: State, desired: State) -> State:
    """Drop engines nobody wants: svcctl installs engines but never removes one."""
    return State.of(r for r in observed if r.kind is not Kind.ENGINE or desired.get(r.address) is not None)


def make_plan(
    env: Environment,
    key: bytes,
    options: ObserveOptions = DEFAULT_OPTIONS,
    progress: Progress | None = None,
    sessions: Sessions | None = None,
    targets: Collection[str] = (),
    reuse: Reuse | None = None,
) -> Planned:
    """Observe the nodes, place the instances (filtered by what the nodes offer) and diff them against the
    environment (through `sessions`' connections if given).

    The environment's declared name is the owner its objects are recorded under on the hosts. The plan's
    fingerprint is that of the observed state it rests on (`review.pinned`). With `targets`, the plan holds
    only their changes and their dependencies' (`svcctl.plan.targets`, the one place a plan is narrowed).
    With `reuse`, only its nodes are observed again (`svcctl.plan.observe.Reuse`).
    """
    name = env.name
    observation = observe_nodes(env, name, password_source(key), options, progress, sessions, reuse=reuse)
    observed = observation.state
    placement = place(env, observed.placements(), all_offers(observation.releases, observed))
    desired = desired_state(env, placement, observed)
    seen = relevant(observed, desired)
    protected = {n for n, inst in env.instances.items() if inst.protect}
    plan, left_out = narrow(diff(desired, seen, protected=protected, environment=name), desired, seen, targets)
    changing = {c.address for c in plan.changes}
    plan = plan.model_copy(update={"fingerprint": fingerprint(pinned(seen, desired, changing))})
    return Planned(plan=plan, desired=desired, observed=seen, placement=placement, left_out=frozenset(left_out),
                   observation=observation)  # fmt: skip
