"""What every engine driver provides, and the host-side observe script they share.

A driver owns one engine (pyinfra's facts are the model): a read-only Python snippet that runs on the
host as root and returns JSON-able data, a pure parser from that data to Resources, the desired
Resources for an environment, and the variables its playbook tasks need.  One observe script per host
contains every driver's snippet, so observing a node costs one SSH round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from svcctl.model.spec import Environment
from svcctl.secrets import Secret
from svcctl.state import Resource, State

REGISTRY_PATH = "/var/lib/svcctl/registry.json"

# purpose ("binding/web/orders-db/0", "instance/sessions/admin") -> the derived password
PasswordFor = Callable[[str], Secret]


@dataclass(frozen=True)
class Observed:
    """One node's raw observation: each engine's snippet output plus the host's registry."""

    node: str
    engines: Mapping[str, Any]  # engine -> whatever its snippet returned (or {"error": "..."})
    registry: Mapping[str, Any] = field(default_factory=dict)  # address -> {"attrs": {...}, ...}


@dataclass(frozen=True)
class DesiredContext:
    """What desired-state computation may look at besides the YAML."""

    env: Environment
    placement: Mapping[str, str]  # instance -> node
    observed: State  # e.g. Redis keeps the port an instance already has


class Driver(Protocol):
    """One engine: observe (snippet + pure parse), desired resources, playbook variables."""

    engine: str

    def snippet(self) -> str:
        """Python source defining `observe_<engine>() -> dict`, run as root on the host (stdlib only)."""
        ...

    def parse(self, node: str, raw: Mapping[str, Any], password_for: PasswordFor) -> list[Resource]:
        """Live resources of this engine on one node, from its snippet's output (pure; tested on recordings).

        Return every object of this engine that exists (svcctl's or not); the caller marks which are
        managed from the host's registry.  Binding verifiers are checked with `password_for` here and
        reduced to `credentials: "current" | "stale"`; no verifier leaves the driver.
        """
        ...

    def desired(self, ctx: DesiredContext) -> list[Resource]:
        """Resources this engine should have for the environment (engines, instances, bindings)."""
        ...

    def secrets_for(self, resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
        """The secrets a playbook needs to realise this resource (e.g. {"password": ...})."""
        ...


def load_script(name: str) -> str:
    """A host-side script shipped in svcctl/drivers/scripts/."""
    return resources.files("svcctl.drivers").joinpath("scripts", name).read_text()
