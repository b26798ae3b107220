"""`svcctl status`, the pure part: the nodes' observation and the environment in, a health report out.

Per node: whether it could be observed, its release and its engines. Per declared instance: where it is,
whether it runs and answers, its size against its plan's storage quota, its connections in use against its
plan's limit, its bindings' credentials and its last backup. Anything wrong is a problem, and any problem
makes the environment degraded (`DEGRADED_EXIT`), so a monitoring job needs only the exit code. Nothing here
reads a host or prints; `svcctl.plan.status_render` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from svcctl.model.spec import Environment
from svcctl.state import Kind, Resource, State

STATUS_FORMAT_VERSION = 1
HEALTHY_EXIT = 0
DEGRADED_EXIT = 3
"""`svcctl status`'s exit code when something is wrong (1 stays "could not run", 2 is plan's "changes")."""


class InstanceState(StrEnum):
    """Where an instance stands: up, down (its engine or unit stopped), missing, or unknown (not observed)."""

    UP = "up"
    DOWN = "down"
    MISSING = "missing"
    UNKNOWN = "unknown"


class Credentials(StrEnum):
    """A binding's credentials: current (the derived password works), stale, missing (no user), unknown."""

    CURRENT = "current"
    STALE = "stale"
    MISSING = "missing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class EngineStatus:
    """One engine on a node. `running`: PostgreSQL's cluster unit or MariaDB's unit active; for Redis, any of
    its instances' units (None: no instance to run)."""

    engine: str
    installed: bool
    version: str | None
    running: bool | None


@dataclass(frozen=True)
class Release:
    """A node's release, as its release fragment reported it."""

    id: str | None
    version_id: str | None
    codename: str | None
    python: str | None


@dataclass(frozen=True)
class NodeStatus:
    """One declared node: observed or not (`error` says why), its release and its engines."""

    name: str
    reachable: bool
    error: str | None
    release: Release | None
    engines: tuple[EngineStatus, ...]


@dataclass(frozen=True)
class BindingStatus:
    """One declared binding of an instance."""

    app: str
    role: str
    user: str | None
    credentials: Credentials


@dataclass(frozen=True)
class BackupStatus:
    """An instance's backups (None in `InstanceStatus.backup`: none declared, none on the node). `last_at` is
    the newest good one's time, `overdue` says it is older than its schedule allows (`overdue_after`)."""

    last_at: str | None
    age_seconds: int | None
    result: str | None  # "ok" | "failed"; None: no backup yet
    schedule: str | None
    overdue: bool = False
    count: int | None = None  # good backups kept on the node
    enabled: bool | None = None  # its timer is active and enabled; None: not observed


HOUR, DAY = 3600, 86400
PERIODS = {
    "hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": 31 * DAY, "quarterly": 92 * DAY,
    "semiannually": 183 * DAY, "yearly": 366 * DAY, "annually": 366 * DAY,
}  # fmt: skip
"""The longest gap between two runs of each shorthand schedule (systemd.time(7))."""
_LATEST = "%Y%m%dT%H%M%SZ"  # a backup's id: its UTC start time


def schedule_period(schedule: str) -> int:
    """The longest gap between two runs of `schedule`, erring long: a shorthand's own; for [WEEKDAYS] [DATE]
    [TIME], a year when the date names a month or day, else a week when weekdays are named, else a day."""
    if schedule in PERIODS:
        return PERIODS[schedule]
    parts = schedule.split(" ")
    date = next((p for p in parts if "-" in p), "*-*-*")
    if any(field not in ("*", "") for field in date.split("-")[-2:]):
        return 366 * DAY
    return 7 * DAY if parts and parts[0][:1].isalpha() else DAY


def overdue_after(schedule: str) -> int:
    """Seconds after which the newest good backup is overdue: one and a half times the schedule's period (a
    dump takes a while, and a timer may fire late)."""
    return schedule_period(schedule) * 3 // 2


def backup_status(env: Environment, name: str, state: State, now: datetime) -> BackupStatus | None:
    """An instance's backups from its observed `backup.<instance>` (the backups fragment's schedule, timer,
    count of good backups and the newest one's id); None when none is declared and the node has none."""
    declared = env.backup_of(name)
    r = _ours(state, f"backup.{name}")
    if declared is None and r is None:
        return None
    attrs = r.attrs if r is not None and r.attrs.get("missing") is not True else {}
    schedule = declared.schedule if declared is not None else _text(attrs.get("schedule"))
    latest = _text(attrs.get("latest"))
    last = datetime.strptime(latest, _LATEST).replace(tzinfo=UTC) if latest else None
    age = int((now - last).total_seconds()) if last is not None else None
    count = attrs.get("backups")
    return BackupStatus(
        last_at=last.isoformat() if last is not None else None,
        age_seconds=age,
        result="ok" if last is not None else None,
        schedule=schedule,
        overdue=age is not None and schedule is not None and age > overdue_after(schedule),
        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        enabled=attrs.get("enabled") is True if attrs else None,
    )


@dataclass(frozen=True)
class InstanceStatus:
    """One declared instance, as observed."""

    name: str
    node: str | None
    engine: str
    version: str | None
    plan: str
    state: InstanceState
    running: bool | None
    answering: bool | None
    size_mb: int | float | None
    storage_mb: int | None
    memory_mb: int | None
    connections_in_use: int | None
    connections: int | None
    bindings: tuple[BindingStatus, ...]
    backup: BackupStatus | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Status:
    """The environment's health: every node, every instance, and every problem (each naming what it is about)."""

    environment: str
    observed_at: str
    nodes: tuple[NodeStatus, ...]
    instances: tuple[InstanceStatus, ...]
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 healthy, DEGRADED_EXIT otherwise."""
        return HEALTHY_EXIT if self.healthy else DEGRADED_EXIT


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ours(state: State, address: str) -> Resource | None:
    """The environment's own resource at `address` (an object another environment or nobody recorded is not)."""
    r = state.get(address)
    return r if r is not None and r.managed else None


def node_status(name: str, state: State, release: Mapping[str, Any] | None, error: str | None) -> NodeStatus:
    """One node: its engines as observed (every engine installed there, this environment's or not)."""
    if error is not None:
        return NodeStatus(name=name, reachable=False, error=error, release=None, engines=())
    engines = []
    for r in state.on_node(name):
        if r.kind is not Kind.ENGINE:
            continue
        running: bool | None = r.attrs.get("running") if isinstance(r.attrs.get("running"), bool) else None
        if running is None:  # Redis: each instance is its own unit
            instances = [i for i in state.on_node(name) if i.kind is Kind.INSTANCE and i.engine == r.engine]
            units = [i.attrs.get("running") is True for i in instances]
            running = any(units) if units else None
        engines.append(
            EngineStatus(
                engine=r.engine,
                installed=r.attrs.get("installed") is True,
                version=_text(r.attrs.get("version")),
                running=running,
            )
        )
    rel = None
    if release is not None:
        os_release = release.get("os") or {}
        rel = Release(
            id=_text(os_release.get("id")),
            version_id=_text(os_release.get("version_id")),
            codename=_text(os_release.get("version_codename")),
            python=_text(release.get("python")),
        )
    return NodeStatus(name=name, reachable=True, error=None, release=rel, engines=tuple(engines))


def _binding(state: State, app: str, instance: str, role: str, observable: bool) -> BindingStatus:
    r = _ours(state, f"binding.{app}.{instance}")
    if r is None:
        credentials = Credentials.MISSING if observable else Credentials.UNKNOWN
    elif r.attrs.get("missing") is True:
        credentials = Credentials.UNKNOWN if r.attrs.get("hidden_by") else Credentials.MISSING
    else:
        credentials = Credentials.CURRENT if r.attrs.get("credentials") == "current" else Credentials.STALE
    user = _text(r.attrs.get("user") or (r.recorded or {}).get("user")) if r is not None else None
    return BindingStatus(app=app, role=role, user=user, credentials=credentials)


def backup_problem(backup: BackupStatus | None) -> str | None:
    """What is wrong with an instance's backups: the last one failed, the newest good one is older than its
    schedule allows, or the timer that makes them is not running; None when nothing is (no backup yet is
    not a problem: the timer has not fired since apply made it)."""
    if backup is None:
        return None
    if backup.result == "failed":
        return f"its last backup failed ({backup.last_at or 'time unknown'})"
    if backup.overdue:
        return f"its last backup ({backup.last_at}) is older than its schedule ({backup.schedule}) allows"
    if backup.enabled is False:
        return "its backup timer is not active: run svcctl plan"
    return None


def instance_status(
    env: Environment, name: str, state: State, failures: Mapping[str, str], backup: BackupStatus | None = None
) -> InstanceStatus:
    """One declared instance from the observed state and its backups; `failures` are the nodes that could not
    be observed."""
    spec, plan = env.instances[name], env.plan_of(name)
    engine = str(env.engine_of(name))
    r = _ours(state, f"instance.{name}")
    node = r.node if r is not None else spec.node
    running: bool | None = None
    answering: bool | None = None
    problems: list[str] = []
    if r is None:
        unseen = sorted(failures) if node is None else [node] if node in failures else []
        if unseen:
            instance_state = InstanceState.UNKNOWN
            where = f"node {node}" if node is not None else f"node(s) {', '.join(unseen)} (it may be there)"
            problems.append(f"not observed: {where} could not be observed")
        else:
            instance_state = InstanceState.MISSING
            problems.append("does not exist on any node (not applied yet, or deleted outside svcctl): run svcctl plan")
    elif r.attrs.get("missing") is True and r.attrs.get("hidden_by"):
        instance_state, running = InstanceState.DOWN, False
        problems.append(f"{r.attrs['hidden_by']} is not running on {r.node}")
    elif r.attrs.get("missing") is True:
        instance_state = InstanceState.MISSING
        problems.append(f"deleted outside svcctl on {r.node}: run svcctl plan")
    else:
        if engine == "redis":  # its own unit; svcctl cannot ask the server without its admin's password
            running = r.attrs.get("running") is True
            answering = running
        else:
            e = state.get(f"engine.{r.node}.{r.engine}")
            running = e is not None and e.attrs.get("running") is True
            answering = True  # the database was listed by the server itself
        instance_state = InstanceState.UP if running and answering else InstanceState.DOWN
        if not running:
            unit = f"redis-server@{name}" if engine == "redis" else f"engine.{r.node}.{r.engine}"
            problems.append(f"{unit} is not running on {r.node}")
    attrs = r.attrs if r is not None else {}
    size = _number(attrs.get("size_mb"))
    if size is not None and plan.storage_mb is not None and size > plan.storage_mb:
        problems.append(f"over quota: uses {size} MB of its {plan.storage_mb} MB (plan {spec.plan})")
    observable = instance_state in (InstanceState.UP, InstanceState.MISSING) or (
        engine == "redis" and instance_state is InstanceState.DOWN
    )
    bindings = tuple(_binding(state, b.app, name, b.role, observable) for b in env.bindings if b.instance == name)
    for b in bindings:
        if b.credentials is Credentials.STALE:
            problems.append(f"binding {b.app}: credentials stale (the engine's password is not the derived one)")
        elif b.credentials is Credentials.MISSING and instance_state is not InstanceState.MISSING:
            problems.append(f"binding {b.app}: its user does not exist")
    seen = instance_state in (InstanceState.UP, InstanceState.DOWN)
    backup_issue = backup_problem(backup)
    if backup is not None and backup.enabled is None and seen and env.backup_of(name) is not None:
        backup_issue = "its backup schedule is not on its node: run svcctl plan"
    if backup_issue is not None and seen:
        problems.append(backup_issue)
    in_use = attrs.get("connections_in_use")
    return InstanceStatus(
        name=name,
        node=node,
        engine=engine,
        version=_text(attrs.get("major_version")) or env.version_of(name),
        plan=spec.plan,
        state=instance_state,
        running=running,
        answering=answering,
        size_mb=size,
        storage_mb=plan.storage_mb,
        memory_mb=plan.memory_mb,
        connections_in_use=in_use if isinstance(in_use, int) and not isinstance(in_use, bool) else None,
        connections=plan.connections,
        bindings=bindings,
        backup=backup,
        problems=tuple(problems),
    )


def build_status(
    env: Environment,
    state: State,
    releases: Mapping[str, Mapping[str, Any] | None],
    failures: Mapping[str, str],
    now: datetime,
) -> Status:
    """The environment's status from what its nodes reported (`failures`: node -> why it was not observed)."""
    nodes = tuple(node_status(n, state, releases.get(n), failures.get(n)) for n in sorted(env.nodes))
    instances = tuple(
        instance_status(env, name, state, failures, backup_status(env, name, state, now))
        for name in sorted(env.instances)
    )
    problems = [f"node {n.name}: could not be observed: {n.error}" for n in nodes if not n.reachable]
    problems += [f"instance.{i.name}: {p}" for i in instances for p in i.problems]
    return Status(
        environment=env.name,
        observed_at=now.isoformat(timespec="seconds"),
        nodes=nodes,
        instances=instances,
        problems=tuple(problems),
    )
