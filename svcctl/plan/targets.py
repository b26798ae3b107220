"""`--target ADDRESS`: narrow a plan to some resources and what they depend on, as Terraform's `-target` does.

The rule (one place, applied by the planner before anything renders or applies a plan):

- a target is an address the plan prints: `engine.NODE.ENGINE`, `instance.NAME`, `binding.APP.INSTANCE`,
  `session.INSTANCE.ID`, `backup.INSTANCE`; it must name a resource the environment declares or its nodes hold;
- a target brings what it depends on: an instance its node's engine; a binding its instance (and so that
  engine) and its own previous rotations' users (`binding.APP.INSTANCE~rN`); a session or a backup schedule
  its instance;
- an instance the plan destroys also brings what depends on it and is destroyed with it (its bindings,
  sessions and backup schedule), as Terraform destroys a target's dependants;
- nothing else: errors and warnings are never narrowed (a plan with an error is not applied, targeted or not).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from svcctl.errors import SvcctlError
from svcctl.plan.escape import for_terminal
from svcctl.plan.types import Action, Plan
from svcctl.state import Kind, Resource, State

FORMS = "engine.NODE.ENGINE, instance.NAME, binding.APP.INSTANCE, session.INSTANCE.ID or backup.INSTANCE"


class UnknownTarget(SvcctlError):
    """A --target that names no resource of the environment or its nodes."""


def warning(targets: Collection[str]) -> str:
    """Terraform's warning: targeting is for exceptions, and the plan may not be everything the YAML asks."""
    shown = for_terminal(", ".join(sorted(targets)))
    return (
        f"Warning: resource targeting is in effect ({shown}). This plan covers only those "
        "resources and what they depend on, so it may not be every change the environment asks for; run plan "
        "without --target to see them all. --target is for exceptional situations, such as recovering from a "
        "mistake or an error, not for routine use."
    )


def check_forms(targets: Iterable[str]) -> None:
    """Refuse, before any SSH, a target that cannot be an address at all (no known kind before its name)."""
    kinds = {k.value for k in Kind}
    for target in targets:
        kind, dot, name = target.partition(".")
        if kind not in kinds or not dot or not name:
            raise UnknownTarget(
                f"--target {target!r} is not a resource address; give one the plan prints: {FORMS} "
                "(for example instance.orders-db)."
            )


def _instance_of(r: Resource) -> str | None:
    """The instance a binding, session or backup schedule belongs to (`binding.web.orders-db~r1` -> `orders-db`)."""
    if r.kind is Kind.BACKUP:
        return r.name
    if r.kind is Kind.BINDING:
        return r.name.split(".", 1)[-1].split("~", 1)[0]
    if r.kind is Kind.SESSION:
        return r.name.split(".", 1)[0]
    return None


def _depends_on(address: str, desired: State, observed: State) -> set[str]:
    """`address` and what it depends on, by the rule in this module's docstring."""
    out = {address}
    for side in (desired, observed):
        r = side.get(address)
        if r is None:
            continue
        if r.kind is Kind.INSTANCE:
            out.add(f"engine.{r.node}.{r.engine}")
        instance = _instance_of(r)
        if instance is not None:
            out |= _depends_on(f"instance.{instance}", desired, observed)
        if r.kind is Kind.BINDING and "~" not in r.name:
            out |= {a for a in (*desired.resources, *observed.resources) if a.startswith(f"{address}~r")}
    return out


def selected(plan: Plan, desired: State, observed: State, targets: Collection[str]) -> set[str]:
    """The addresses a targeted plan keeps: the targets, their dependencies and a destroyed instance's
    dependants. UnknownTarget names a target that is no resource, with the addresses close to it."""
    check_forms(targets)
    known = sorted(desired.resources.keys() | observed.resources.keys())
    for target in sorted(targets):
        if target not in known:
            close = difflib.get_close_matches(target, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else "no address is close to it."
            raise UnknownTarget(
                f"--target {target}: no such resource in environment {plan.environment or '(unnamed)'} or on its "
                f"nodes; {hint} Addresses are the ones `svcctl plan` prints: {FORMS}."
            )
    keep: set[str] = set()
    for target in targets:
        keep |= _depends_on(target, desired, observed)
    destroyed = {
        c.address.split(".", 1)[1] for c in plan.changes if c.kind is Kind.INSTANCE and c.action is Action.DELETE
    }
    for instance in destroyed & {a.split(".", 1)[1] for a in keep if a.startswith("instance.")}:
        keep |= {
            r.address
            for r in observed
            if r.kind in (Kind.BINDING, Kind.SESSION, Kind.BACKUP)
            and _instance_of(r) == instance
            and desired.get(r.address) is None
        }
    return keep


def narrow(plan: Plan, desired: State, observed: State, targets: Collection[str]) -> tuple[Plan, list[str]]:
    """The plan with only the targeted changes (and the targets recorded), plus the addresses of the changes
    it leaves out; without targets, the plan as it is."""
    if not targets:
        return plan, []
    keep = selected(plan, desired, observed, targets)
    kept = [c for c in plan.changes if c.address in keep]
    left_out = [c.address for c in plan.changes if c.address not in keep]
    return plan.model_copy(update={"changes": kept, "targets": sorted(set(targets))}), left_out
