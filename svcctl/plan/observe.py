"""Observe the nodes: one SSH round trip per node runs every driver's read-only snippet; fail closed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from svcctl.drivers import backups, drivers, observe_script, reported, sessions
from svcctl.drivers.base import Observed, PasswordFor
from svcctl.drivers.hostprograms import cached_program
from svcctl.drivers.ownership import mark_ownership, merge_nodes
from svcctl.errors import SvcctlError
from svcctl.model.spec import Environment
from svcctl.model.types import quoted
from svcctl.ssh import Sessions, SshSession, SshTarget, run_on_nodes
from svcctl.state import Resource, State

Progress = Callable[[str, str], None]


class NodesUnobservable(SvcctlError):
    """One or more nodes could not be observed: the plan fails closed rather than guess."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        lines = "\n".join(f"  {node}: {why}" for node, why in sorted(self.failures.items()))
        names = ", ".join(sorted(self.failures))
        super().__init__(
            f"could not observe {names}:\n{lines}\nNothing was planned: svcctl never re-places an instance "
            "or proposes a destroy on partial information. Bring the node back (or fix its SSH settings) "
            "and run the command again."
        )


@dataclass(frozen=True)
class ObserveOptions:
    """How to reach the nodes."""

    accept_new_host_keys: bool = False
    max_parallel: int = 8
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


DEFAULT_OPTIONS = ObserveOptions()
MAX_OBSERVE_OUTPUT = 16 * 1024 * 1024
"""Bytes a node's observe output may have; a few hundred kilobytes on a busy node, so more means trouble."""


def fetch(session: SshSession, script: str, timeout: float) -> dict[str, Any]:
    """Run the observe script as root on one node and return its JSON document (size and depth bounded).

    What the node printed is untrusted: the document is checked further by `reported.observation`.
    """
    program = cached_program(script, "observe")  # the node compiles each version of the script once
    # -I: nothing from the environment or the working directory (sudo's, the login user's) shapes root's python3;
    # -S: no site-packages (the script is stdlib only): 2-3 ms less of the node's CPU per run
    res = session.run(
        ["python3", "-I", "-S", "-"],
        sudo=True,
        stdin=program.encode(),
        timeout=timeout,
        max_output=MAX_OBSERVE_OUTPUT,
    )
    if res.rc != 0:
        tail = " / ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        raise SvcctlError(f"the observe script failed with exit code {res.rc}: {quoted(tail, 400)}")
    return reported.decode(session.name, res.stdout)


def parse_node(raw: Observed, environment: str, password_for: PasswordFor) -> list[Resource]:
    """All resources on one node, marked managed or not; raise if any engine could not be observed."""
    live: list[Resource] = []
    for engine, driver in drivers().items():
        data = raw.engines.get(engine)
        if not isinstance(data, Mapping):
            raise SvcctlError(f"the observe script reported nothing for {engine}")
        if "error" in data:
            raise SvcctlError(f"observing {engine} failed on the node: {quoted(str(data['error']), 400)}")
        live += driver.parse(raw.node, data, password_for)
    live += _backups(raw, password_for)
    return sessions.with_records(mark_ownership(raw.node, sessions.lift(live), raw.registry, environment))


def _backups(raw: Observed, password_for: PasswordFor) -> list[Resource]:
    """The node's backup schedules (a Redis one's credentials from the Redis report); the fragment's error fails
    the node, as an engine's does."""
    report = raw.engines.get(reported.BACKUPS)
    if isinstance(report, Mapping) and "error" in report:
        raise SvcctlError(f"observing backups failed on the node: {quoted(str(report['error']), 400)}")
    redis = raw.engines.get("redis")
    return backups.parse(raw.node, report if isinstance(report, Mapping) else None,
                         redis if isinstance(redis, Mapping) else None, password_for)  # fmt: skip


@dataclass(frozen=True)
class Observation:
    """The observed state, each node's checked release report (None: the node reported none), and, when
    observed with `partial`, why each node that could not be observed could not (node -> message).

    `by_node` keeps each observed node's own resources, so a later observation can take a node's from this
    one instead of asking it again (`Reuse`)."""

    state: State
    releases: Mapping[str, Mapping[str, Any] | None]
    failures: Mapping[str, str] = field(default_factory=dict)
    by_node: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reuse:
    """Observe only the nodes `again`; every other node's report is `earlier`'s.

    Apply's verification uses it: under the apply's locks, a node the run did not touch cannot have changed
    through svcctl since the plan observed it, so only the nodes the playbook ran on are asked again."""

    earlier: Observation
    again: frozenset[str]


def observe(
    env: Environment,
    environment: str,
    password_for: PasswordFor,
    options: ObserveOptions = DEFAULT_OPTIONS,
    progress: Progress | None = None,
    sessions: Sessions | None = None,
) -> State:
    """Observe every node of the environment in parallel; NodesUnobservable if any node fails.

    With `sessions`, the command's open connections are used (apply's lock already made them).
    """
    return observe_nodes(env, environment, password_for, options, progress, sessions).state


def observe_nodes(
    env: Environment,
    environment: str,
    password_for: PasswordFor,
    options: ObserveOptions = DEFAULT_OPTIONS,
    progress: Progress | None = None,
    sessions: Sessions | None = None,
    partial: bool = False,
    reuse: Reuse | None = None,
) -> Observation:
    """`observe`, keeping each node's release report too (placement filters by what nodes offer).

    A plan fails closed: any node that cannot be observed is NodesUnobservable. With `partial` (a health
    check, which must not), the nodes that answered are kept and the others' failures returned. With
    `reuse`, only its `again` nodes are asked; the others' reports are taken from its earlier observation.
    """
    script = observe_script()
    targets = [
        SshTarget.from_node(
            name,
            node,
            accept_new_host_keys=options.accept_new_host_keys,
            connect_timeout=options.connect_timeout,
        )
        for name, node in sorted(env.nodes.items())
        if reuse is None or name in reuse.again or name not in reuse.earlier.by_node
    ]

    def one(session: SshSession) -> dict[str, Any]:
        return fetch(session, script, options.command_timeout)

    t0 = time.monotonic()
    results = run_on_nodes(targets, one, max_parallel=options.max_parallel, progress=progress, sessions=sessions)
    failures: dict[str, str] = {}
    by_node: dict[str, tuple[Resource, ...]] = {}
    releases: dict[str, Mapping[str, Any] | None] = {}
    if reuse is not None:
        kept = set(env.nodes) - {t.name for t in targets}
        by_node.update({n: reuse.earlier.by_node[n] for n in kept})
        releases.update({n: reuse.earlier.releases.get(n) for n in kept})
    for node, result in sorted(results.items()):
        if isinstance(result, SvcctlError):
            failures[node] = result.message
            continue
        try:
            raw = reported.observation(node, result)  # nothing unchecked from the node goes further
            by_node[node] = tuple(parse_node(raw, environment, password_for))
            releases[node] = _release(raw)
        except SvcctlError as exc:
            failures[node] = exc.message
            by_node.pop(node, None)
            continue
    if failures and not partial:
        raise NodesUnobservable(failures)
    if progress:
        progress("*", f"observed {len(targets)} node(s) in {time.monotonic() - t0:.1f} s")
    resources = [r for node in sorted(by_node) for r in by_node[node]]
    try:
        state = State.of(merge_nodes(resources))
        return Observation(state=state, releases=releases, failures=failures, by_node=by_node)
    except SvcctlError as exc:
        raise SvcctlError(f"the nodes disagree: {exc.message}") from None


def _release(raw: Observed) -> Mapping[str, Any] | None:
    """The node's checked release report; its fragment's error fails the node, as an engine's does."""
    release = raw.engines.get(reported.RELEASE)
    if isinstance(release, Mapping) and "error" in release:
        raise SvcctlError(f"observing the release failed on the node: {quoted(str(release['error']), 400)}")
    return release if isinstance(release, Mapping) else None
