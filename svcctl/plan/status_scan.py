"""`svcctl status`'s observation: the planner's, one SSH round trip per node, but a node that cannot be observed
is reported as such instead of failing the whole command (a plan must fail closed; a health check must not)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from svcctl.drivers import observe_script, reported
from svcctl.drivers.base import PasswordFor
from svcctl.drivers.ownership import merge_nodes
from svcctl.errors import SvcctlError
from svcctl.model.spec import Environment
from svcctl.plan.observe import ObserveOptions, Progress, fetch, parse_node
from svcctl.plan.observe import _release as release_of
from svcctl.ssh import SshSession, SshTarget, run_on_nodes
from svcctl.state import Resource, State


@dataclass(frozen=True)
class Scan:
    """What the nodes reported: the observed state of those that answered, each one's release report, and why
    each of the others could not be observed (node -> message)."""

    state: State
    releases: Mapping[str, Mapping[str, Any] | None]
    failures: Mapping[str, str]


def scan(env: Environment, password_for: PasswordFor, options: ObserveOptions, progress: Progress | None) -> Scan:
    """Observe every node as `svcctl plan` does (the same script, SSH settings, host keys and checks of what a
    node reports), keeping the nodes that answered when others do not."""
    script = observe_script()
    targets = [
        SshTarget.from_node(
            name, node, accept_new_host_keys=options.accept_new_host_keys, connect_timeout=options.connect_timeout
        )
        for name, node in sorted(env.nodes.items())
    ]

    def one(session: SshSession) -> dict[str, Any]:
        return fetch(session, script, options.command_timeout)

    results = run_on_nodes(targets, one, max_parallel=options.max_parallel, progress=progress)
    failures: dict[str, str] = {}
    resources: list[Resource] = []
    releases: dict[str, Mapping[str, Any] | None] = {}
    for node, result in sorted(results.items()):
        if isinstance(result, SvcctlError):
            failures[node] = result.message
            continue
        try:
            raw = reported.observation(node, result)  # nothing unchecked from the node goes further
            found = parse_node(raw, env.name, password_for)
            releases[node] = release_of(raw)
        except SvcctlError as exc:
            failures[node] = exc.message
            continue
        resources += found
    try:
        state = State.of(merge_nodes(resources))
    except SvcctlError as exc:
        raise SvcctlError(f"the nodes disagree: {exc.message}") from None
    return Scan(state=state, releases=releases, failures=failures)
