"""`svcctl status`'s observation: the planner's, one SSH round trip per node, but a node that cannot be observed
is reported as such instead of failing the whole command (a plan must fail closed; a health check must not)."""

from __future__ import annotations

from svcctl.drivers.base import PasswordFor
from svcctl.model.spec import Environment
from svcctl.plan.observe import Observation, ObserveOptions, Progress, observe_nodes


def scan(
    env: Environment, password_for: PasswordFor, options: ObserveOptions, progress: Progress | None
) -> Observation:
    """Observe every node as `svcctl plan` does (the same script, SSH settings, host keys and checks of what a
    node reports), keeping the nodes that answered when others do not (`Observation.failures`)."""
    return observe_nodes(env, env.name, password_for, options, progress, partial=True)
