"""`svcctl import`: the unmanaged databases an observation found, as instances that adopt them (pure).

From the observed State and the Environment to a list of instance entries, then to YAML text. Only what no
environment's registry records is offered (an object another environment owns is not); what cannot be
adopted is kept as a note saying why, so the output explains every unmanaged object it saw. Names come from
a node: an entry carries only a name that passed svcctl's name rule (so its scalars are plain words), and a
note quotes the node's name with everything unprintable or non-ASCII escaped, so no name can leave its comment.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from svcctl.model.names import NAME_MAX, NAME_MIN, name_problem, sql_ident
from svcctl.model.placement import ENGINE_NAMES, PlacementError, place
from svcctl.model.spec import SQL_ENGINES, Adopt, Environment, Instance
from svcctl.model.types import quoted
from svcctl.state import Kind, Resource, State

NOTHING = "nothing to import"
SHORT_RULE = f"{NAME_MIN} to {NAME_MAX} lowercase letters, digits and single hyphens, a letter first"


@dataclass(frozen=True)
class Adoption:
    """One instance entry to paste: it adopts database `database` on `node`."""

    name: str
    plan: str
    node: str
    version: str
    database: str
    engine: str
    notes: tuple[str, ...] = ()
    """Comments above the entry (over its plan's quota, an owner that blocks adoption)."""

    def instance(self) -> Instance:
        """The entry as the model's Instance (what the loader would read back from the YAML)."""
        return Instance(plan=self.plan, node=self.node, version=self.version, adopt=Adopt(database=self.database))


@dataclass(frozen=True)
class NotOffered:
    """An unmanaged object the scan found but cannot offer as an entry, and why (svcctl's words)."""

    node: str
    engine: str
    name: str
    """As the node reports it: untrusted, only ever shown through `quoted`."""
    reason: str


@dataclass(frozen=True)
class Imported:
    """What `svcctl import` prints: the entries and the objects it could not offer."""

    environment: str
    nodes: tuple[str, ...]
    adoptions: tuple[Adoption, ...] = ()
    not_offered: tuple[NotOffered, ...] = field(default_factory=tuple)


def importable(env: Environment, observed: State, nodes: Collection[str] | None = None) -> Imported:
    """The unmanaged databases of `observed` on the environment's nodes (or only `nodes`), as adoptions.

    Left out: whatever some environment's registry records (this one's is managed, another's has an owner),
    engines and bindings, and databases the environment already declares as that instance on that node.
    Each adoption is checked to fit its node's capacity beside everything already declared, so the YAML with
    the entries merged in still places (`svcctl validate`).
    """
    scanned = tuple(sorted(nodes if nodes is not None else env.nodes))
    found = sorted(
        (r for r in observed if _unmanaged_instance(r) and r.node in scanned and r.node in env.nodes),
        key=lambda r: (r.node, r.engine, _reported_name(r)),
    )
    adoptions: list[Adoption] = []
    skipped: list[NotOffered] = []
    taken: dict[str, Adoption] = {}
    for r in found:
        outcome = _consider(env, r, taken)
        if isinstance(outcome, NotOffered):
            skipped.append(outcome)
            continue
        reason = _does_not_fit(env, [*adoptions, outcome])
        if reason is not None:
            skipped.append(NotOffered(r.node, r.engine, outcome.database, reason))
            continue
        adoptions.append(outcome)
        taken[outcome.name] = outcome
    return Imported(env.name, scanned, tuple(adoptions), tuple(skipped))


def _unmanaged_instance(r: Resource) -> bool:
    """An instance (database or Redis server) that no environment records and that exists."""
    return r.kind is Kind.INSTANCE and not r.managed and r.owner is None and r.attrs.get("missing") is not True


def _reported_name(r: Resource) -> str:
    """The object's own name on its node: the database for PostgreSQL and MariaDB, the server's for Redis."""
    database = r.attrs.get("database")
    if isinstance(database, str):
        return database
    return r.name.split("@", 1)[0]  # `merge_nodes` appends `@<node>/<engine>` to look-alikes


def _consider(env: Environment, r: Resource, taken: dict[str, Adoption]) -> Adoption | NotOffered:
    """The entry adopting `r`, or why there can be none."""
    database = _reported_name(r)
    label = ENGINE_NAMES.get(r.engine, r.engine)

    def refuse(reason: str) -> NotOffered:
        return NotOffered(r.node, r.engine, database, reason)

    if r.engine not in SQL_ENGINES:
        return refuse(f"adopting a {label} server is not supported yet (only PostgreSQL and MariaDB databases)")
    name = database.replace("_", "-")
    problem = _name_problem(database, name)
    if problem is not None:
        return refuse(f"cannot be adopted: {problem}; rename the database on the node (or leave it unmanaged)")
    declared = env.instances.get(name)
    if declared is not None:
        if declared.node == r.node and env.engine_of(name) == r.engine:
            return refuse("already declared")  # dropped from the output: the environment has it
        return refuse(
            f"cannot be adopted as instance {name}: the environment already declares an instance of that name "
            f"({'on node ' + declared.node if declared.node else 'placed by svcctl'}, "
            f"{ENGINE_NAMES.get(env.engine_of(name), env.engine_of(name))}); rename one of them"
        )
    if name in taken:
        first = taken[name]
        return refuse(
            f"cannot be adopted as instance {name} too: the entry above adopts the database of that name on "
            f"{first.node} ({ENGINE_NAMES[first.engine]}), and an instance name holds one database; adopt this "
            "one from another environment, or rename it on the node"
        )
    if r.engine not in env.nodes[r.node].engines:
        return refuse(
            f"node {r.node} does not list {r.engine} in its engines: add it to node {r.node}'s engines, then "
            "run svcctl import again"
        )
    version = str(r.attrs.get("major_version") or "")
    plans = _plans_offering(env, r.engine, version)
    if not plans:
        return refuse(_no_plan(env, r.engine, version, r.node))
    size = r.attrs.get("size_mb")
    size_mb = size if isinstance(size, int) and not isinstance(size, bool) else 0
    fitting = [p for p in plans if _quota(env, p) >= size_mb]
    notes: list[str] = []
    if fitting:
        plan = fitting[0]
    else:
        plan = plans[-1]
        notes.append(
            f"uses {size_mb} MB, over plan {plan}'s storage_mb ({env.plans[plan].storage_mb} MB), "
            f"the largest {label} {version} plan: add a bigger plan or raise that one's quota"
        )
    owner = r.attrs.get("owner")
    if r.attrs.get("owner_superuser") is True and isinstance(owner, str):
        notes.append(
            f"its owner {quoted(owner, 40)} is a superuser, which svcctl plan refuses to adopt: first run "
            f"ALTER DATABASE {database} OWNER TO a role that is not a superuser"
        )
    return Adoption(name, plan, r.node, version, database, r.engine, tuple(notes))


def _name_problem(database: str, name: str) -> str | None:
    """Why `database` cannot be an instance's (whose database is its name with - as _), in svcctl's words with
    the node's name quoted; None when instance `name` adopts it."""
    shown = quoted(name, 40)
    if "-" in database:
        return "it holds a hyphen, and an instance's database is its name with every - as _"
    if name_problem("instance", name, reserved=False) is not None:
        return f"instance name {shown} breaks svcctl's name rule ({SHORT_RULE})"
    if name_problem("instance", name) is not None:
        return f"instance name {shown} is reserved (it collides with engine or system names)"
    if sql_ident(name) != database:
        return f"instance name {shown} would not map back to it"
    return None


def _plans_offering(env: Environment, engine: str, version: str) -> list[str]:
    """The environment's plans for a service of `engine` offering `version`, smallest quota first (a plan
    without storage_mb has no quota: the largest), then by name."""
    names = [
        name
        for name, plan in env.plans.items()
        if (service := env.services.get(plan.service)) is not None
        and service.engine == engine
        and version in service.versions
    ]
    return sorted(names, key=lambda n: (_quota(env, n), n))


def _quota(env: Environment, plan: str) -> float:
    storage = env.plans[plan].storage_mb
    return float("inf") if storage is None else storage


def _no_plan(env: Environment, engine: str, version: str, node: str) -> str:
    """What to add when no plan fits an engine and version: a plan, or the version in a service."""
    label = ENGINE_NAMES.get(engine, engine)
    services = sorted(name for name, s in env.services.items() if s.engine == engine)
    with_plans = sorted({p.service for p in env.plans.values() if p.service in services})
    if with_plans:
        return (
            f'no plan\'s service offers {label} {version}, which node {node} runs: add "{version}" to the '
            f"versions of service {with_plans[0]} (or declare a service offering it and a plan for that "
            "service), then run svcctl import again"
        )
    if services:
        return (
            f"the environment has no plan for service {services[0]} ({label}): declare one, such as "
            f"plans: {{{engine}-small: {{service: {services[0]}, storage_mb: 1024}}}}, then run svcctl import again"
        )
    return (
        f"the environment has no {label} service or plan: declare both, such as services: {{{engine}: {{engine: "
        f'{engine}, versions: ["{version}"]}}}} and plans: {{{engine}-small: {{service: {engine}, storage_mb: '
        "1024}}, then run svcctl import again"
    )


def _does_not_fit(env: Environment, adoptions: list[Adoption]) -> str | None:
    """Why the last of `adoptions` makes the environment unplaceable (node capacity), or None when it fits.

    An environment that does not place even without them is not this command's to judge: None.
    """
    try:
        place(env, {})
    except PlacementError:
        return None
    last = adoptions[-1]
    merged = {**env.instances, **{a.name: a.instance() for a in adoptions}}
    try:
        place(env.model_copy(update={"instances": merged}), {})
    except PlacementError:
        return (
            f"cannot be adopted with plan {last.plan} ({env.plans[last.plan].storage_mb} MB): node {last.node}'s "
            f"capacity.storage_mb ({env.nodes[last.node].capacity.storage_mb} MB) cannot take it beside the "
            "instances already declared and the entries above; raise it, then run svcctl import again"
        )
    return None


# -- output -------------------------------------------------------------------------------------------------


def offered(result: Imported) -> list[NotOffered]:
    """The objects shown as not offered: every one but the databases the environment already declares."""
    return [n for n in result.not_offered if n.reason != "already declared"]


def render_yaml(result: Imported) -> str:
    """The entries as a YAML document (`instances:` and block style), everything else as comments above it.

    Every value goes through ruamel's representer; notes are comments whose untrusted parts are `quoted`.
    """
    root = CommentedMap()
    instances = CommentedMap()
    root["instances"] = instances
    for a in result.adoptions:
        entry = CommentedMap()
        entry["plan"] = a.plan
        entry["node"] = a.node
        entry["version"] = a.version
        entry["adopt"] = CommentedMap(database=a.database)
        instances[a.name] = entry
        notes = [f"{a.database} on {a.node} ({ENGINE_NAMES[a.engine]}): {note}" for note in a.notes]
        if notes:
            instances.yaml_set_comment_before_after_key(a.name, before="\n".join(_comment(n) for n in notes), indent=2)
    root.yaml_set_start_comment("\n".join(_comment(line) for line in _header(result)))
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096  # one comment line per note, however long: a wrapped line would lose its '#'
    out = io.StringIO()
    yaml.dump(root, out)
    return out.getvalue()


def _header(result: Imported) -> list[str]:
    nodes = ", ".join(result.nodes) or "none"
    lines = [f"svcctl import: environment {result.environment}, nodes {nodes}"]
    if result.adoptions:
        lines += [
            "Unmanaged databases as instances that adopt them. Save this file in the environment's directory,",
            "or paste the entries under its instances:; review each plan, then svcctl validate and svcctl plan.",
        ]
    elif not offered(result):
        lines.append(f"{NOTHING}: no unmanaged database on these nodes")
    else:
        lines.append(f"{NOTHING}: no unmanaged database these nodes hold can be adopted (see below)")
    not_offered = offered(result)
    if not_offered:
        lines.append("Not offered:")
        lines += [
            f"  {n.node} {ENGINE_NAMES.get(n.engine, n.engine)} {quoted(n.name, 80)}: {n.reason}" for n in not_offered
        ]
    return lines


def _comment(text: str) -> str:
    """One comment line: nothing unprintable, no line break, ASCII only (the untrusted parts are quoted
    already; this is the last guard, so a bug elsewhere still cannot end the comment)."""
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\r", "\\r").replace("\n", "\\n")


def render_json(result: Imported) -> str:
    """The same as JSON: {environment, nodes, instances: {name: entry}, not_offered: [...]}."""
    doc = {
        "environment": result.environment,
        "nodes": list(result.nodes),
        "instances": {
            a.name: {"plan": a.plan, "node": a.node, "version": a.version, "adopt": {"database": a.database}}
            | ({"notes": list(a.notes)} if a.notes else {})
            for a in result.adoptions
        },
        "not_offered": [
            {"node": n.node, "engine": n.engine, "name": n.name, "reason": n.reason} for n in offered(result)
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def summary(result: Imported) -> str:
    """One line for stderr: how many entries, how many objects not offered."""
    count = len(result.adoptions)
    skipped = len(offered(result))
    entries = f"{count} instance{'' if count == 1 else 's'} to adopt" if count else NOTHING
    return entries + (f"; {skipped} unmanaged object(s) not offered (see the comments)" if skipped else "")


def unknown_nodes(env: Environment, wanted: Iterable[str]) -> list[str]:
    """The names of `wanted` the environment does not declare."""
    return sorted(set(wanted) - set(env.nodes))
