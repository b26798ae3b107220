"""`svcctl apply`: lock, plan, confirm, run the playbook, write manifests, observe again and verify.

Nothing here decides *what* to change (the plan did); this module only carries a plan out safely:
refuse stale saved plans and unconfirmed or undeclared destruction, hold every node's lock for the whole
run, write manifests only for apps whose bindings were all realised, and fail unless the hosts converged.

A saved plan (`plan --out`) is what was reviewed, so it is the approval: apply carries out exactly its
changes, with no question asked, once the YAML and the hosts are shown to be as they were when it was made.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svcctl.apply.contract import (
    BatchStep,
    ChangeVars,
    NodeVars,
    PlaybookAction,
    Step,
    instance_of,
    object_names,
    redis_rules,
)
from svcctl.apply.lock import locked
from svcctl.apply.manifests import BoundService, git_tracked_warning, update_manifest
from svcctl.drivers import backups, drivers, sessions
from svcctl.drivers.base import PasswordFor
from svcctl.errors import InvalidEnvironment, SvcctlError
from svcctl.model.loader import display_path, load_environment
from svcctl.model.paths import environment_root
from svcctl.model.spec import Environment
from svcctl.plan.observe import ObserveOptions, Reuse
from svcctl.plan.planfile import SavedPlan, is_plan_file, load_plan
from svcctl.plan.planner import Planned, make_plan, password_source
from svcctl.plan.render import render_text
from svcctl.plan.review import (
    desired_entries,
    entries_fingerprint,
    host_changes,
    listed,
    observed_digests,
    pinned,
    yaml_changes,
)
from svcctl.plan.targets import check_forms, warning
from svcctl.plan.types import Action, Change
from svcctl.secrets import load_key
from svcctl.ssh import Sessions, SshTarget, resolve
from svcctl.state import Kind, Resource, State

if TYPE_CHECKING:
    from svcctl.apply.runner import RunResult

Say = Callable[[str], None]
Confirm = Callable[[str], bool]

LABELS = {"postgres": "postgresql", "mysql": "mysql", "redis": "redis"}
DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


class StalePlan(SvcctlError):
    """The YAML or the hosts no longer are as they were when the saved plan was made."""


class ApplyInterrupted(SvcctlError):
    """The playbook was stopped part-way (SIGINT or SIGTERM: ansible-runner cancels the run on either)."""

    exit_code = 130


@dataclass(frozen=True)
class ApplyOptions:
    """What the operator allowed."""

    auto_approve: bool = False
    allow_destroy: bool = False
    break_lock: bool = False
    parallel: int = 8
    accept_new_host_keys: bool = False
    color: bool = False
    verbose: bool = False
    environment: Path | None = None  # where a saved plan's environment is (default: the current directory)
    targets: tuple[str, ...] = ()  # --target: plan and apply only these and their dependencies


def _change_vars(change: Change, planned: Planned) -> list[ChangeVars]:
    """The playbook's view of one change; a replace is a delete (with its dump) followed by a create."""
    want = planned.desired.get(change.address)
    have = planned.observed.get(change.address)
    have_attrs = None if have is None or have.attrs.get("missing") else dict(have.attrs)
    major = _instance_major(planned, want or have)
    if change.action is Action.REPLACE and want is not None and have is not None:
        return [change_vars("delete", have, have_attrs), change_vars("create", want, None, major)]
    if change.action is Action.DELETE and have is not None:
        # Only its record is left (an apply stopped between recording and creating it): the tasks still need
        # its names (user, database) to make sure it is gone, and those are in the record.
        old = have_attrs if have_attrs is not None else (dict(have.recorded) if have.recorded else None)
        return [change_vars("delete", have, old)]
    if want is None:
        raise SvcctlError(f"internal error: {change.address} has no desired state for a {change.action.value}")
    return [change_vars(PLAYBOOK_ACTIONS[change.action], want, have_attrs, major)]


def _instance_major(planned: Planned, res: Resource | None) -> object:
    """The major version of the instance a resource belongs to, as desired (else as observed)."""
    if res is None or res.kind not in (Kind.INSTANCE, Kind.BINDING):
        return None
    address = f"instance.{instance_of(res)}"
    found = planned.desired.get(address) or planned.observed.get(address)
    return found.attrs.get("major_version") if found is not None else None


PLAYBOOK_ACTIONS: dict[Action, PlaybookAction] = {
    Action.CREATE: "create",
    Action.UPDATE: "update",
    Action.REPLACE: "replace",  # only when nothing is observed to delete first
    Action.DELETE: "delete",
    Action.ADOPT: "update",  # recorded first like any change, then brought to what the plan showed in place
}


def change_vars(action: PlaybookAction, res: Resource, old: dict[str, Any] | None, major: object = None) -> ChangeVars:
    """One change for the playbooks: the resource's desired (or, deleting, observed) attrs, its names and, for
    Redis, the ACL rules of its instance's version `major`."""
    out: ChangeVars = {
        "action": action,
        "address": res.address,
        "kind": res.kind.value,
        "engine": res.engine,
        "name": res.name,
        "node": res.node,
        "attrs": {k: v for k, v in res.attrs.items() if k not in ("size_mb", "missing")},
        "old": old,
        "names": object_names(res, old if action == "delete" else None),
    }
    if res.kind is Kind.ENGINE and "claimed_networks" in res.attrs:
        out["claim"] = list(res.attrs["claimed_networks"])  # the registry keeps each environment's claim
    rules = redis_rules(res, major)
    if rules is not None:
        out["acl_rules"] = rules
    return out


def hostvars(planned: Planned, password_for: PasswordFor) -> dict[str, NodeVars]:
    """Per-node variables for apply.yml: ordered changes and the secrets they need (never logged)."""
    by_driver = drivers()
    changes: dict[str, list[ChangeVars]] = {}
    secrets_of: dict[str, dict[str, dict[str, str]]] = {}
    for change in planned.plan.changes:
        changes.setdefault(change.node, []).extend(_change_vars(change, planned))
        node_secrets = secrets_of.setdefault(change.node, {})
        res = planned.desired.get(change.address) or planned.observed.get(change.address)
        if res is not None:
            if res.kind is Kind.SESSION:
                secrets = sessions.secrets_for(res, password_for)
            elif res.kind is Kind.BACKUP:
                secrets = backups.secrets_for(res, password_for)
            else:
                secrets = by_driver[res.engine].secrets_for(res, password_for)
            if secrets:
                node_secrets[res.address] = {k: v.reveal() for k, v in secrets.items()}
    return {node: node_vars(node_changes, secrets_of[node]) for node, node_changes in changes.items()}


def node_vars(changes: list[ChangeVars], secrets: dict[str, dict[str, str]]) -> NodeVars:
    """One node's variables for apply.yml from its ordered changes and their secrets: the steps, and what records
    what in its registry (the e2e tests that run the playbooks themselves build them here too)."""
    steps_ = steps(changes)
    first, late = records(changes, steps_)
    return {"svcctl_changes": changes, "svcctl_secrets": secrets, "svcctl_steps": steps_,
            "svcctl_recorded_first": first, "svcctl_recorded_late": late}  # fmt: skip


def records(changes: list[ChangeVars], steps_: list[Step]) -> tuple[list[ChangeVars], list[str]]:
    """Which changes the run's first task records in the node's registry before anything is touched, and the
    addresses the step making them records itself, just before: each is recorded before it is made.

    An address the run also deletes (a replace) is recorded late, after its delete has forgotten it. When
    every step is an objects module run, the first task is not run (one remote process less): each module
    records its share first, in one write (the steps' `record_first`)."""
    deleted = [c["address"] for c in changes if c["action"] == "delete"]
    first = [c for c in changes if c["action"] != "delete" and c["address"] not in deleted]
    if not all("batch" in step for step in steps_):
        return first, deleted
    early = {c["address"] for c in first}
    for step in steps_:
        if "batch" in step:  # always, here: narrows the type
            step["record_first"] = [c["address"] for c in step["changes"] if c["address"] in early]
    return [], deleted


BATCHED = {
    ("postgres", "instance"),
    ("postgres", "binding"),
    ("mysql", "instance"),
    ("mysql", "binding"),
    ("redis", "instance"),
    ("redis", "binding"),
}
"""(engine, kind) of the changes one module run makes together (its ansible/library/svcctl_<engine>_objects.py)."""


def steps(changes: list[ChangeVars]) -> list[Step]:
    """The playbook's steps: within each run of consecutive batchable changes, one step per engine (one remote
    process for all of its changes), in the order the engines first appear; every other change a step of its
    own, where it was. One engine's objects never depend on another's, so each engine keeps its own order
    and a run that alternates engines (instances sorted by name) is still one module run per engine."""
    out: list[Step] = []
    run: dict[str, BatchStep] = {}  # engine -> its batch in the current run of batchable changes
    for change in changes:
        engine = change["engine"]
        if (engine, change["kind"]) not in BATCHED:
            out.append({"change": change, "label": f"{change['action']} {change['address']}"})
            run = {}
        elif engine in run:
            run[engine]["changes"].append(change)
        else:
            run[engine] = {"batch": True, "engine": engine, "changes": [change], "label": "", "record_first": []}
            out.append(run[engine])
    for step in out:
        if "batch" in step:
            counts: dict[str, int] = {}
            for c in step["changes"]:
                counts[c["action"]] = counts.get(c["action"], 0) + 1
            step["label"] = ", ".join(f"{n} {action}" for action, n in counts.items()) + " (instances, bindings)"
    return out


def bound_services(
    env: Environment, app: str, desired: State, addresses: dict[str, str], password_for: PasswordFor
) -> list[BoundService]:
    """What an app's manifest should hold: one entry per binding, with its derived credentials."""
    out: list[BoundService] = []
    by_driver = drivers()
    for b in env.bindings_of_app(app):
        binding = desired.get(f"binding.{b.app}.{b.instance}")
        instance = desired.get(f"instance.{b.instance}")
        if binding is None or instance is None:
            continue
        engine = instance.engine
        password = by_driver[engine].secrets_for(binding, password_for)["password"]
        out.append(
            BoundService(
                binding_name=b.name,
                instance=b.instance,
                engine=engine,  # type: ignore[arg-type]
                label=LABELS[engine],
                plan=env.instances[b.instance].plan,
                tags=[engine, "svcctl"],
                host=addresses[instance.node],
                port=int(instance.attrs.get("port") or DEFAULT_PORTS[engine]),
                database=instance.attrs.get("database"),
                username=str(binding.attrs["user"]),
                password=password,
                role=b.role,
            )
        )
    return out


def write_manifests(
    env: Environment,
    planned: Planned,
    password_for: PasswordFor,
    addresses: dict[str, str],
    failed_nodes: set[str],
    say: Say,
    root: Path,
    pending: frozenset[str] = frozenset(),
) -> None:
    """Update each app's manifest atomically, inside the environment's directory `root`; skip any app
    with a binding on a node where apply failed, or whose binding or instance is still `pending` (planned
    after the run): a manifest only ever holds credentials that work."""
    for app_name, app in sorted(env.apps.items()):
        bindings = env.bindings_of_app(app_name)
        nodes = {planned.placement.get(b.instance, "") for b in bindings}
        if nodes & failed_nodes:
            say(f"Manifest of app {app_name} left as it was: its bindings on {', '.join(sorted(nodes & failed_nodes))} "
                "were not all realised.")  # fmt: skip
            continue
        left = sorted(
            a for b in bindings for a in (f"binding.{b.app}.{b.instance}", f"instance.{b.instance}") if a in pending
        )
        if left:
            say(f"Manifest of app {app_name} left as it was: {', '.join(left)} not realised.")
            continue
        services = bound_services(env, app_name, planned.desired, addresses, password_for)
        path = Path(app.manifest)
        if update_manifest(path, app.format, app.name or app_name, services, root=root):
            say(f"Wrote the credentials of {len(services)} binding(s) to {path} (mode 0600).")
            warning = git_tracked_warning(path)
            if warning:
                say(f"Warning: {warning}")


def _summary(result: RunResult) -> str:
    """What failed, per node and task; when no task did (the run failed as a whole), Ansible's last words."""
    lines = []
    for f in result.failures:
        lines.append(f"  {f.host}: task '{f.task}' failed: {f.message}")
    for host, why in sorted(result.unreachable.items()):
        lines.append(f"  {host}: unreachable: {why}")
    if not lines:
        lines = ["  Ansible failed before any task did:", *(f"    {line}" for line in result.reason.splitlines())]
    if result.log_file is not None:
        lines.append(f"  The run's whole output (secrets masked) is in {result.log_file}.")
    return "\n".join(lines)


def retiring(change: Change) -> bool:
    """A planned delete of a previous rotation's user: kept on purpose until the apply after a rotation."""
    return change.action is Action.DELETE and change.kind is Kind.BINDING and "~r" in change.address


def check_manifest_dirs(env: Environment) -> None:
    """Refuse up front an app whose manifest could not be written, rather than fail after changing hosts."""
    for name, app in sorted(env.apps.items()):
        directory = Path(app.manifest).parent
        if not directory.is_dir():
            where = env.location(f"app.{name}")
            raise SvcctlError(
                f"{where or 'app ' + name}: the manifest of app {name} is to be written to {app.manifest}, but "
                f"the directory {directory} does not exist. Create it or fix the path; nothing was changed."
            )


def load_for_plan(path: Path, saved: SavedPlan, env_path: Path) -> Environment:
    """The environment a saved plan is applied to, refused unless its YAML is the one the plan was made from.

    Nothing but the files is read: a plan refused here has touched no host, not even to lock it.
    """
    try:
        env = load_environment(env_path)
    except InvalidEnvironment:
        raise
    except SvcctlError as exc:  # no such path, or no YAML in it
        raise SvcctlError(
            f"{exc.message} {path} is a saved plan of environment {saved.environment}: give the directory (or file) "
            "of that environment's YAML with --env PATH (default: the current directory). Nothing was changed."
        ) from None
    if env.name != saved.environment:
        raise StalePlan(
            f"{path} is a plan of environment {saved.environment}, but {display_path(env_path)} is environment "
            f"{env.name}; give the files of {saved.environment} with --env PATH. Nothing was changed."
        )
    entries = desired_entries(env, environment_root(env_path))
    if entries_fingerprint(entries) != saved.desired_fingerprint:
        changes = yaml_changes(saved.desired, entries, env) or ["the entries' digests differ"]
        raise StalePlan(
            f"the saved plan {path} is not what the YAML says now: {listed(changes)}. Nothing was changed. Undo "
            "the change to apply this plan, or make a new plan with `svcctl plan --out` and review it."
        )
    return env


def check_still_current(path: Path, saved: SavedPlan, planned: Planned) -> None:
    """Refuse a saved plan whose observed state moved, or whose changes would now come out different."""
    changing = {c.address for c in saved.plan.changes}
    moved = host_changes(saved.observed, observed_digests(pinned(planned.observed, planned.desired, changing)))
    if moved:
        raise StalePlan(
            f"the saved plan {path} is stale: the hosts changed since it was made: {listed(moved)}. Nothing was "
            "changed. Make a new plan with `svcctl plan --out` and review it."
        )
    if planned.plan.changes != saved.plan.changes:
        then = {c.address: c for c in saved.plan.changes}
        now = {c.address: c for c in planned.plan.changes}
        differ = sorted(a for a in then.keys() | now.keys() if then.get(a) != now.get(a))
        raise StalePlan(
            f"the saved plan {path} is stale: planned now, the changes differ at {listed(differ)}. Nothing was "
            "changed. Make a new plan with `svcctl plan --out` and review it."
        )
    if planned.plan.errors != saved.plan.errors or planned.plan.fingerprint != saved.observed_fingerprint:
        raise StalePlan(
            f"the saved plan {path} is stale: planned now, its errors or the hosts' fingerprint differ. Nothing was "
            "changed. Make a new plan with `svcctl plan --out` and review it."
        )


def apply(path: Path, opts: ApplyOptions, say: Say, confirm: Confirm, progress: Say | None = None) -> int:
    """Carry out the plan for an environment, or exactly a saved plan's changes; return the exit code."""
    saved: SavedPlan | None = None
    env_path = path
    if is_plan_file(path):
        saved = load_plan(path)
        env_path = opts.environment if opts.environment is not None else Path()
        env = load_for_plan(path, saved, env_path)
    elif opts.environment is not None:
        raise SvcctlError(
            f"--env names the environment of a saved plan, and {display_path(path)} is not a plan saved by "
            "`svcctl plan --out`; to apply an environment, give its path alone."
        )
    else:
        env = load_environment(env_path)
    if saved is not None and opts.targets:
        raise SvcctlError(
            f"--target cannot narrow the saved plan {path}: its targets were fixed when it was made "
            f"({', '.join(saved.plan.targets) or 'none'}). Make a new plan with `svcctl plan --target ... --out`, "
            "or apply the environment with --target. Nothing was changed."
        )
    only = tuple(saved.plan.targets) if saved is not None else opts.targets
    check_forms(only)
    if only:
        print(warning(only), file=sys.stderr, flush=True)
    check_manifest_dirs(env)
    name = env.name
    key = load_key(name)
    password_for = password_source(key)
    options = ObserveOptions(accept_new_host_keys=opts.accept_new_host_keys, max_parallel=opts.parallel)
    targets = [SshTarget.from_node(n, node, accept_new_host_keys=opts.accept_new_host_keys,
                                   connect_timeout=options.connect_timeout)
               for n, node in sorted(env.nodes.items())]  # fmt: skip
    # Per-node connection progress only on a terminal; task results (changed, failed) always.
    node_progress = (lambda node, status: progress(f"  {node}: {status}")) if progress and sys.stderr.isatty() else None

    # One connection per node for the whole command: lock, observe, observe again, release.
    with Sessions() as ssh, locked(targets, break_lock=opts.break_lock, sessions=ssh):
        planned = make_plan(env, key, options, node_progress, ssh, targets=only)
        if saved is not None:
            check_still_current(path, saved, planned)
            planned = dataclasses.replace(planned, plan=saved.plan)  # exactly what was reviewed
        plan = planned.plan
        say(render_text(plan, color=opts.color))
        if plan.errors:
            say("Apply refused: the plan has errors (above); nothing was changed.")
            return 1
        resolved = {t.name: resolve(t) for t in targets}
        addresses = {n: r.hostname for n, r in resolved.items()}
        if not plan.has_changes:
            untouched = planned.left_out  # a manifest only holds credentials that work
            write_manifests(env, planned, password_for, addresses, set(), say, environment_root(env_path), untouched)
            return 0
        destroying = [c.address for c in plan.changes if c.destroys_data]
        if destroying and not opts.allow_destroy:
            raise SvcctlError(
                f"this plan destroys data ({', '.join(destroying)}); apply refuses without --allow-destroy. "
                "Each destroyed instance is dumped on its node first. Nothing was changed."
            )
        if saved is None and not opts.auto_approve:  # a saved plan was reviewed: applying it is the approval
            if not sys.stdin.isatty():
                raise SvcctlError(
                    "apply needs confirmation and there is no terminal to ask on; review the plan and run "
                    "again with --auto-approve (or apply a saved plan file). Nothing was changed."
                )
            if not confirm("Do you want to perform these actions? Only 'yes' will be accepted: "):
                say("Apply cancelled; nothing was changed.")
                return 1
        vars_ = hostvars(planned, password_for)
        from svcctl.apply.runner import run_apply  # ansible_runner costs ~0.1 s to import: not when converged

        result = run_apply(
            {n: resolved[n] for n in vars_},
            vars_,
            {"svcctl_environment": name},
            progress,
            forks=opts.parallel,
            verbose=opts.verbose,
        )
        for report in result.reports:
            say(report)
        if result.status == "canceled":
            raise ApplyInterrupted(
                "apply interrupted: the playbook was stopped part-way, so the apps' manifests were left as they "
                "were. Every change is recorded on its node before it is made: `svcctl plan` shows what is left "
                "and `svcctl apply` resumes."
            )
        failed = {f.host for f in result.failures} | set(result.unreachable)
        if not result.succeeded and not failed:  # the run failed as a whole: no node is known to be done
            failed = set(vars_)
        if not result.succeeded:
            root = environment_root(env_path)
            write_manifests(env, planned, password_for, addresses, failed, say, root, planned.left_out)
            done = sorted(set(vars_) - failed)
            say(
                f"Apply failed:\n{_summary(result)}\nNodes that completed: {', '.join(done) or 'none'}. "
                "Every change is recorded on its node before it is made, so running `svcctl plan` shows "
                "what is left and `svcctl apply` resumes; no data was dropped."
            )
            return 1
        # Verified where the playbook ran; the other nodes were observed under these same locks moments ago.
        again = Reuse(planned.observation, frozenset(vars_)) if planned.observation is not None else None
        after = make_plan(env, key, options, None, ssh, targets=only, reuse=again)
        left = [c for c in after.plan.changes if not retiring(c)]
        pending = frozenset(c.address for c in left) | after.left_out
        write_manifests(env, planned, password_for, addresses, set(), say, environment_root(env_path), pending)
        if left or after.plan.errors:
            say("Apply ran, but the nodes have not converged; still planned:\n" + render_text(after.plan))
            return 1
        add, change, destroy = plan.counts()
        adopted = f"{plan.adoptions} adopted, " if plan.adoptions else ""
        say(
            f"Apply complete! Resources: {adopted}{add} added, {change} changed, {destroy} destroyed. "
            "Verified: no changes left."
        )
        kept = sorted(c.address for c in after.plan.changes if retiring(c))
        if kept:
            say(
                f"Old credentials kept so running apps keep working until they restart: {', '.join(kept)}. "
                "The next apply removes them."
            )
        return 0
