"""Cross-checks over a schema-valid environment: references resolve, names are safe, plans fit engines.

Each problem points at the most precise place the loader recorded (the offending value if there is
one, else the entry's name), so `svcctl validate` reads like a compiler.
"""

from __future__ import annotations

from typing import Protocol

from svcctl.errors import Problem
from svcctl.model.names import name_problem, sql_ident
from svcctl.model.spec import SQL_ENGINES, Environment, Instance, Location

UNKNOWN_FILE = "<environment>"


def check_environment(env: Environment) -> list[Problem]:
    """Every cross-reference and name problem in `env`, sorted by location."""
    problems: list[Problem] = []

    def add(message: str, *addresses: str) -> None:
        where = _locate(env, addresses)
        problems.append(Problem(where.file, where.line, where.column, message))

    _check_names(env, add)
    _check_plans(env, add)
    _check_instances(env, add)
    _check_bindings(env, add)
    return sorted(problems)


class _Add(Protocol):
    def __call__(self, message: str, *addresses: str) -> None: ...


def _locate(env: Environment, addresses: tuple[str, ...]) -> Location:
    for address in addresses:
        found = env.location(address)
        if found is not None:
            return found
    return Location(UNKNOWN_FILE, 0, 0)


def _check_names(env: Environment, add: _Add) -> None:
    sections: list[tuple[str, list[str], bool]] = [
        ("node", list(env.nodes), True),
        ("service", list(env.services), False),
        ("plan", list(env.plans), False),
        ("instance", list(env.instances), True),
        ("app", list(env.apps), True),
    ]
    for kind, names, reserved in sections:
        for name in names:
            problem = name_problem(kind, name, reserved=reserved)
            if problem is not None:
                add(problem, f"{kind}.{name}")


def _check_plans(env: Environment, add: _Add) -> None:
    for name, plan in env.plans.items():
        here = f"plan.{name}"
        service = env.services.get(plan.service)
        if service is None:
            add(
                f'plan {name}: service "{plan.service}" is not declared; declared services: {_listing(env.services)}',
                f"{here}.service",
                here,
            )
            continue
        engine = service.engine
        if engine == "redis":
            if plan.storage_mb is not None:
                add(
                    f"plan {name}: storage_mb is for postgres and mysql plans; redis plans are sized with memory_mb",
                    f"{here}.storage_mb",
                    here,
                )
            if plan.memory_mb is None:
                add(f"plan {name}: redis plans need memory_mb (the instance's maxmemory)", here)
        elif engine in SQL_ENGINES:
            if plan.memory_mb is not None:
                add(
                    f"plan {name}: memory_mb is for redis plans; {engine} plans are sized with storage_mb",
                    f"{here}.memory_mb",
                    here,
                )
            if "eviction" in plan.model_fields_set:
                add(f"plan {name}: eviction is for redis plans only", f"{here}.eviction", here)
        if plan.storage_enforce and (engine not in SQL_ENGINES or plan.storage_mb is None):
            add(
                f"plan {name}: storage_enforce needs storage_mb on a postgres or mysql plan",
                f"{here}.storage_enforce",
                here,
            )


def _check_instances(env: Environment, add: _Add) -> None:
    for name, instance in env.instances.items():
        here = f"instance.{name}"
        plan = env.plans.get(instance.plan)
        if plan is None:
            add(
                f'instance {name}: plan "{instance.plan}" is not declared; declared plans: {_listing(env.plans)}',
                f"{here}.plan",
                here,
            )
            continue
        service = env.services.get(plan.service)
        if service is None:
            continue  # reported on the plan
        engine = service.engine
        if instance.version is not None and instance.version not in service.versions:
            add(
                f'instance {name}: version "{instance.version}" is not offered by service '
                f"{plan.service} (offered: {', '.join(service.versions)})",
                f"{here}.version",
                here,
            )
        runners = sorted(node for node, spec in env.nodes.items() if engine in spec.engines)
        if not runners:
            add(
                f"instance {name}: no node runs {engine}; add {engine} to some node's engines",
                here,
            )
            continue
        if instance.node is not None:
            pinned = env.nodes.get(instance.node)
            if pinned is None:
                add(
                    f'instance {name}: node "{instance.node}" is not declared; declared nodes: {_listing(env.nodes)}',
                    f"{here}.node",
                    here,
                )
            elif engine not in pinned.engines:
                add(
                    f"instance {name}: node {instance.node} does not run {engine} "
                    f"(its engines: {', '.join(pinned.engines) or 'none'}); nodes running {engine}: "
                    f"{', '.join(runners)}",
                    f"{here}.node",
                    here,
                )
        if instance.adopt is not None:
            _check_adopt(name, instance, engine, add)
        if instance.placement is not None and instance.placement.labels:
            wanted = instance.placement.labels
            if not any(_has_labels(env.nodes[node].labels, wanted) for node in runners):
                add(
                    f"instance {name}: no node running {engine} has labels {_labels(wanted)} "
                    f"(nodes running {engine}: {', '.join(runners)})",
                    f"{here}.placement",
                    here,
                )


def _check_adopt(name: str, instance: Instance, engine: str, add: _Add) -> None:
    """An adopting instance names its node and a database its own name maps to, of an engine with databases."""
    here = f"instance.{name}.adopt"
    assert instance.adopt is not None
    database = instance.adopt.database
    if engine not in SQL_ENGINES:
        add(f"instance {name}: adopt takes over a database (PostgreSQL, MariaDB); a {engine} instance has none", here)
    if instance.node is None:
        add(f"instance {name}: adopts database {database}, so it needs node: (the node that holds {database})", here)
    if sql_ident(name) != database:
        add(
            f"instance {name}: adopts database {database}, but svcctl names instance {name}'s database "
            f"{sql_ident(name)}; name the instance {database.replace('_', '-')} (instance names map to their "
            "database, - as _)",
            f"{here}.database",
            here,
        )


def _check_bindings(env: Environment, add: _Add) -> None:
    users: dict[str, tuple[str, str]] = {}
    for binding in env.bindings:
        here = f"binding.{binding.app}.{binding.instance}"
        # Engine user names join the app and instance with "_" (sv_<app>_<instance>_r<n>), so app `my-app` on
        # instance `db` and app `my` on instance `app-db` would share one user: refuse, never guess.
        user = f"{binding.app}-{binding.instance}".replace("-", "_")
        other = users.setdefault(user, (binding.app, binding.instance))
        if other != (binding.app, binding.instance):
            add(
                f"binding {binding.app} -> {binding.instance}: its engine user would be the same as that of "
                f"binding {other[0]} -> {other[1]} (sv_{user}_r<n>); rename the app or the instance",
                here,
            )
        if binding.app not in env.apps:
            add(
                f'binding: app "{binding.app}" is not declared; declared apps: {_listing(env.apps)}',
                f"{here}.app",
                here,
            )
        if binding.instance not in env.instances:
            add(
                f'binding: instance "{binding.instance}" is not declared; declared instances: '
                f"{_listing(env.instances)}",
                f"{here}.instance",
                here,
            )


def _has_labels(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _listing(names: object) -> str:
    listed = sorted(str(name) for name in names) if isinstance(names, dict) else []
    return ", ".join(listed) if listed else "none"
