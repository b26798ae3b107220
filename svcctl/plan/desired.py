"""Desired state: what the environment's YAML asks for, in the same Resource shape drivers observe."""

from __future__ import annotations

from collections.abc import Mapping

from svcctl.drivers import backups, drivers, sessions
from svcctl.drivers.base import DesiredContext
from svcctl.model.spec import Environment
from svcctl.state import Kind, Resource, State


def desired_state(env: Environment, placement: Mapping[str, str], observed: State) -> State:
    """Every driver's desired resources; instances also carry `protect`, which only the registry keeps."""
    ctx = DesiredContext(env=env, placement=placement, observed=observed)
    out: list[Resource] = []
    for driver in drivers().values():
        for res in driver.desired(ctx):
            if res.kind is Kind.INSTANCE and res.name in env.instances:
                res = res.model_copy(update={"attrs": {**res.attrs, "protect": env.instances[res.name].protect}})
            out.append(res)
    out += backups.desired(env, placement, {r.name: r for r in out if r.kind is Kind.INSTANCE})
    # A live tunnel's temporary user stays until it expires; an expired one (a crashed tunnel's) is deleted.
    out += [
        r
        for r in observed
        if r.kind is Kind.SESSION and r.managed and not r.attrs.get("missing") and not sessions.is_expired(r.attrs)
    ]
    return State.of(out)
