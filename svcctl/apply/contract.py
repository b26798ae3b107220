"""The contract between the controller and the playbooks: the variables apply.yml gets, as types.

`svcctl.apply.execute.hostvars` builds them, and the e2e tests that run the playbooks directly build them
the same way (`change_vars`, `steps`). Each change carries its object's engine names (`names`), derived
here once, so that no module or task derives a database, owner or user name itself.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, final

from svcctl.drivers.postgres.driver import owner_role
from svcctl.drivers.sessions import user_name as session_user
from svcctl.hostlib.redis_acl import acl_rules
from svcctl.model.names import sql_ident
from svcctl.state import Kind, Resource

PlaybookAction = Literal["create", "update", "replace", "delete"]


class ObjectNames(TypedDict, total=False):
    """The engine names of the object a change is about (those its kind has)."""

    instance: str  # the svcctl instance a binding or session belongs to
    database: str  # the instance's database (PostgreSQL, MariaDB)
    owner: str  # the NOLOGIN role owning it (PostgreSQL)
    user: str  # a binding's or a session's engine user


class ChangeVars(TypedDict):
    """One change as the playbooks see it (`svcctl_changes`); a replace arrives as a delete and a create."""

    action: PlaybookAction
    address: str
    kind: str  # engine | instance | binding | session
    engine: str
    name: str
    node: str
    attrs: dict[str, Any]  # desired attributes (the registry records these)
    old: dict[str, Any] | None  # observed attributes, or the record of an object that is missing
    names: ObjectNames
    claim: NotRequired[list[str]]  # engines: this environment's client networks (the registry's claims)
    acl_rules: NotRequired[str]  # Redis instances (their admin) and bindings: the ACL rules, for its version


@final  # so that `"batch" in step` tells the two kinds of step apart
class OneStep(TypedDict):
    """A change made by tasks/change.yml."""

    change: ChangeVars
    label: str


@final
class BatchStep(TypedDict):
    """Consecutive instance and binding changes of one engine, made by one module run."""

    batch: Literal[True]
    engine: str
    changes: list[ChangeVars]
    label: str
    record_first: list[str]  # addresses the module records at once, first (when no registry task ran for them)


Step = OneStep | BatchStep


class NodeVars(TypedDict):
    """The per-node variables of one apply run (in the inventory)."""

    svcctl_changes: list[ChangeVars]
    svcctl_secrets: dict[str, dict[str, str]]  # address -> {password, admin_password}; never logged
    svcctl_steps: list[Step]
    svcctl_recorded_first: list[ChangeVars]  # recorded by the run's first task, before anything is touched
    svcctl_recorded_late: list[str]  # addresses the step that makes them records, just before (`records`)


def instance_of(res: Resource) -> str:
    """The instance a resource belongs to: its own name, a binding's `<app>.<instance>[~r<n>]`, a session's
    `<instance>.<id>`."""
    if res.kind is Kind.BINDING:
        return res.name.split("~", 1)[0].split(".", 1)[1]
    if res.kind is Kind.SESSION:
        return res.name.split(".", 1)[0]
    return res.name


def object_names(res: Resource, attrs: dict[str, Any] | None = None) -> ObjectNames:
    """The engine names of a resource's object; `attrs` (the observed or recorded ones of something being
    deleted) give the user it really has."""
    if res.kind is Kind.ENGINE:
        return {}
    given = attrs or res.attrs
    instance = instance_of(res)
    names: ObjectNames = {"instance": instance}
    if res.engine in ("postgres", "mysql"):
        names["database"] = sql_ident(instance)
    if res.engine == "postgres":
        names["owner"] = owner_role(instance)
    if res.kind is Kind.BINDING:
        names["user"] = str(given["user"])
    elif res.kind is Kind.SESSION:
        names["user"] = str(given.get("user") or session_user(instance, res.name.split(".", 1)[1]))
    return names


def redis_rules(res: Resource, major: object) -> str | None:
    """The ACL rules a Redis instance's admin or a binding's user gets on Redis `major`; None otherwise."""
    if res.engine != "redis" or res.kind not in (Kind.INSTANCE, Kind.BINDING):
        return None
    role = "admin" if res.kind is Kind.INSTANCE else str(res.attrs.get("role", "readwrite"))
    return " ".join(acl_rules(role, major)) if role in ("admin", "readwrite", "readonly") else None
