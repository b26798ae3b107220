"""The environment as declared in YAML: pydantic models, plus lookups the later stages need.

The models describe only what the user writes, so `Environment.model_json_schema()` is the file format.
Where each entry came from (file, line, column) lives in a side table that the loader attaches, never
in the YAML-facing fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, WithJsonSchema, model_validator

from svcctl.errors import SvcctlError
from svcctl.model.names import NAME_MAX, NAME_MIN, NAME_PATTERN
from svcctl.model.schedule import Schedule
from svcctl.model.types import (
    ENVIRONMENT_PATTERN,
    AppName,
    Cidr,
    EnvironmentName,
    Host,
    Identifier,
    JumpHost,
    Labels,
    LocalPath,
    Reference,
    Text,
    User,
    Version,
)

Engine = Literal["postgres", "mysql", "redis"]
SQL_ENGINES: frozenset[str] = frozenset({"postgres", "mysql"})

Eviction = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]

SCHEMA_ID = "urn:svcctl:schema:environment:1"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True, order=True)
class Location:
    """Where something was declared: file as shown to the user, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def version_key(version: str) -> tuple[int, ...]:
    """Sort key comparing versions numerically by dot parts, so "10.11" > "10.9"."""
    return tuple(int(part) for part in version.split("."))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Capacity(_Model):
    """What a node offers to instances; placement never fills a node past it."""

    memory_mb: int = Field(
        4096,
        ge=0,
        description="Memory (MiB) available to Redis instances; each redis plan's memory_mb is taken "
        "from it. Default 4096.",
    )
    storage_mb: int = Field(
        20000,
        ge=0,
        description="Disk (MiB) available to PostgreSQL and MariaDB instances; each sql plan's "
        "storage_mb is taken from it. Default 20000.",
    )


class Node(_Model):
    """An SSH host that runs database engines."""

    host: Host = Field(min_length=1, description="Address or ~/.ssh/config alias (resolved through ssh_config if set).")
    user: User | None = Field(None, description="SSH user (sudo-capable). Default: from ssh_config.")
    port: int = Field(22, ge=1, le=65535, description="SSH port. Default 22.")
    identity_file: LocalPath | None = Field(
        None, description="Private key file, relative to this YAML file; ~ is expanded."
    )
    jump_host: JumpHost | None = Field(
        None, description="Bastion to go through, like ssh -J / ProxyJump: [user@]host[:port]."
    )
    ssh_config: LocalPath | None = Field(
        None,
        description="OpenSSH client config file to read, like ssh -F; relative to this YAML file.",
    )
    known_hosts: LocalPath | None = Field(
        None, description="known_hosts file pinning the host key, relative to this YAML file."
    )
    labels: Labels = Field(default_factory=dict, description="Free-form labels matched by instances' placement.labels.")
    engines: list[Engine] = Field(
        default_factory=list, description="Engines this node may run: postgres, mysql, redis."
    )
    capacity: Capacity = Field(
        default_factory=Capacity,
        description="Memory and storage placement may use. Default 4096 MiB memory, 20000 MiB storage.",
    )
    client_networks: list[Cidr] = Field(
        default_factory=list,
        description="IPv4/IPv6 networks (CIDR) allowed to connect to the engines directly, "
        "besides localhost and SSH tunnels.",
    )


class Service(_Model):
    """A catalogue entry: an engine and the versions offered."""

    engine: Engine = Field(description="postgres, mysql (MariaDB) or redis.")
    versions: list[Version] = Field(
        min_length=1,
        description='Versions offered, as strings such as "15", "10.11", "7"; the highest is the default.',
    )


class Backup(_Model):
    """Scheduled dumps of an instance on its node, kept in /var/backups/svcctl/<instance>/ (docs/backups.md)."""

    schedule: Schedule = Field(
        "daily",
        description="When to dump: a systemd OnCalendar expression svcctl accepts: hourly, daily, weekly, monthly, "
        "quarterly, semiannually, yearly, or [WEEKDAYS] [DATE] [TIME] such as 'Mon..Fri 02:30' or '*-*-* 03:00:00'. "
        "Default daily.",
    )
    keep: int = Field(7, ge=1, le=365, strict=True, description="How many dumps to keep, 1 to 365. Default 7.")


class ServicePlan(_Model):
    """A size of a service: quotas the instance gets and placement reserves."""

    service: Reference = Field(description="Name of the service (catalogue entry) this plan sizes.")
    connections: int | None = Field(None, ge=1, description="Maximum client connections (all engines).")
    storage_mb: int | None = Field(None, ge=1, description="Disk quota in MiB; postgres and mysql plans only.")
    storage_enforce: bool = Field(
        False,
        strict=True,
        description="Enforce storage_mb, as Cloud Foundry's MySQL node did: while an instance is over it, apply turns "
        "its readwrite bindings read-only (the plan shows quota_exceeded), and gives the writes back once it is "
        "under. Default false: over quota is a plan warning only.",
    )
    memory_mb: int | None = Field(None, ge=1, description="maxmemory in MiB; redis plans only, required.")
    eviction: Eviction = Field(
        "noeviction", description="Redis maxmemory-policy; redis plans only. Default noeviction."
    )
    description: Text | None = Field(None, description="Free text shown to people choosing a plan.")
    backup: Backup | None = Field(
        None, description="Scheduled dumps of every instance of this plan; an instance's own backup: replaces it."
    )


class Placement(_Model):
    """Constraints on where a new instance may go."""

    labels: Labels = Field(default_factory=dict, description="Labels the node must have (all of them, same values).")


class Adopt(_Model):
    """An existing database this instance takes over, data, users and all, instead of creating one."""

    database: Identifier = Field(
        description="The database on the instance's node (its node: is required). Its name is the instance's "
        "name with - as _ (instance legacy-orders adopts legacy_orders)."
    )


class Instance(_Model):
    """A database (or Redis server) the environment wants to exist."""

    plan: Reference = Field(description="Name of the plan; the service and engine follow from it.")
    version: Version | None = Field(None, description="One of the service's versions. Default: the highest offered.")
    node: Reference | None = Field(None, description="Pin to this node. Not together with placement.")
    placement: Placement | None = Field(
        None, description="Let svcctl choose a node with these labels. Not together with node."
    )
    protect: bool = Field(
        True, description="Never destroyed by apply while true (the default), even with --allow-destroy."
    )
    adopt: Adopt | None = Field(
        None,
        description="Take over an existing database on the pinned node instead of creating one: apply records it "
        "as this environment's without touching its data, users or grants; removing it later releases it "
        "(svcctl forgets it, the database stays). PostgreSQL and MariaDB.",
    )
    backup: Backup | None = Field(
        None, description="Scheduled dumps of this instance, replacing its plan's backup: (docs/backups.md)."
    )

    @model_validator(mode="after")
    def _node_or_placement(self) -> Instance:
        if self.node is not None and self.placement is not None:
            raise ValueError("give either node or placement, not both")
        return self


class App(_Model):
    """An application whose manifest receives the credentials of its bindings."""

    manifest: LocalPath = Field(description="Path of the app's manifest, relative to this YAML file.")
    format: Literal["cf", "dotenv", "json"] = Field(
        "cf", description="Manifest format: cf (Cloud Foundry manifest), dotenv or json. Default cf."
    )
    name: AppName | None = Field(None, description="Application name inside a cf manifest. Default: this app's key.")


class Binding(_Model):
    """Credentials for one app on one instance: a user of its own with least privilege."""

    app: Reference = Field(description="Name of the app.")
    instance: Reference = Field(description="Name of the instance.")
    role: Literal["readwrite", "readonly"] = Field(
        "readwrite", description="readwrite or readonly (Redis: read commands only). Default readwrite."
    )
    rotation: int = Field(
        0, ge=0, description="Bump to rotate the password: it is derived from the key and this counter."
    )

    @property
    def name(self) -> str:
        """The binding's identity, `<app>-<instance>`."""
        return f"{self.app}-{self.instance}"


def _names(kind: str) -> dict[str, Any]:
    names = {"pattern": NAME_PATTERN, "minLength": NAME_MIN, "maxLength": NAME_MAX}
    return {"propertyNames": names, "description": kind}


class Environment(_Model):
    """Everything one environment declares: nodes, the service catalogue, instances, apps, bindings."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="svcctl environment",
        json_schema_extra={"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID},
    )

    environment: Annotated[
        EnvironmentName | None,
        WithJsonSchema({"type": "string", "pattern": ENVIRONMENT_PATTERN, "minLength": 1, "maxLength": 64}),
    ] = Field(
        None,
        description='The environment\'s name, such as "prod"; exactly one of its files declares it. Hosts record '
        "its objects under this name and its key file is named after it, so it stays the same however the path "
        "is typed or wherever the files are checked out. 1 to 64 letters, digits, . _ or -, starting with a "
        "letter or digit.",
    )
    nodes: dict[str, Node] = Field(
        default_factory=dict,
        json_schema_extra=_names("SSH hosts that run engines, by name."),
    )
    services: dict[str, Service] = Field(
        default_factory=dict,
        json_schema_extra=_names("The service catalogue: engine and offered versions, by name."),
    )
    plans: dict[str, ServicePlan] = Field(
        default_factory=dict,
        json_schema_extra=_names("Sizes of services: quotas and connection limits, by name."),
    )
    instances: dict[str, Instance] = Field(
        default_factory=dict,
        json_schema_extra=_names("Databases and Redis servers that should exist, by name."),
    )
    apps: dict[str, App] = Field(
        default_factory=dict,
        json_schema_extra=_names("Applications that receive credentials, by name."),
    )
    bindings: list[Binding] = Field(
        default_factory=list, description="Which app gets credentials for which instance, and how."
    )

    _locations: dict[str, Location] = PrivateAttr(default_factory=dict)

    @property
    def name(self) -> str:
        """The declared name (`environment:`), which registries, key files and messages use; the loader
        refuses an environment without one."""
        if self.environment is None:
            raise SvcctlError(
                'the environment declares no name; add a top-level "environment: NAME" to one of its files.'
            )
        return self.environment

    def located(self, locations: Mapping[str, Location]) -> Environment:
        """Return a copy that knows where each address was declared (the loader calls this)."""
        copy = self.model_copy()
        copy._locations = dict(locations)
        return copy

    def location(self, address: str) -> Location | None:
        """Where `address` (node.NAME, instance.NAME.version, binding.APP.INSTANCE, ...) was declared."""
        return self._locations.get(address)

    def plan_of(self, instance: str) -> ServicePlan:
        """The plan of an instance; KeyError if the instance or its plan is not declared."""
        return self.plans[self.instances[instance].plan]

    def service_of(self, instance: str) -> Service:
        """The service of an instance (through its plan); KeyError if any link is missing."""
        return self.services[self.plan_of(instance).service]

    def engine_of(self, instance: str) -> Engine:
        """The engine an instance runs on, through plan and service."""
        return self.service_of(instance).engine

    def version_of(self, instance: str) -> str:
        """The instance's version: as declared, else the highest its service offers."""
        declared = self.instances[instance].version
        if declared is not None:
            return declared
        return max(self.service_of(instance).versions, key=version_key)

    def backup_of(self, instance: str) -> Backup | None:
        """The instance's backup schedule: its own `backup:`, else its plan's, else None (no backups)."""
        own = self.instances[instance].backup
        return own if own is not None else self.plan_of(instance).backup

    def bindings_of_instance(self, instance: str) -> list[Binding]:
        """Bindings on one instance, in declaration order."""
        return [b for b in self.bindings if b.instance == instance]

    def bindings_of_app(self, app: str) -> list[Binding]:
        """Bindings of one app, in declaration order."""
        return [b for b in self.bindings if b.app == app]
