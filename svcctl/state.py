"""State: what exists (observed) or should exist (desired), as one value type so a plan is a pure diff.

A State is a set of Resources keyed by address (`engine.lab-1.postgres`, `instance.orders-db`,
`binding.web.orders-db`).  Each resource has flat, JSON-able attributes.  Observed resources also carry
`recorded`: the attributes svcctl wrote to the host's registry when it last applied that object.  That
record is how ownership survives the loss of an operator's laptop (it lives on the host), and how the diff
tells drift (live != recorded: changed outside svcctl) from a configuration change (desired != recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool | None
Attrs = dict[str, Any]


class Kind(StrEnum):
    """What a resource is; also the first part of its address and the order in which changes apply."""

    ENGINE = "engine"
    INSTANCE = "instance"
    BINDING = "binding"
    SESSION = "session"  # a temporary tunnel user
    BACKUP = "backup"  # an instance's scheduled dumps: its timer and service on the node


class Resource(BaseModel):
    """One thing svcctl manages (or sees) on a node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    name: str = Field(description="Unique within the kind: `lab-1.postgres`, `orders-db`, `web.orders-db`.")
    node: str
    engine: str
    attrs: Attrs = Field(default_factory=dict)
    managed: bool = True
    recorded: Attrs | None = Field(
        default=None, description="Observed only: the attributes svcctl recorded on the host at its last apply."
    )
    claims: dict[str, list[str]] | None = Field(
        default=None,
        description="Observed only, shared engines: the client networks each other environment that still has "
        "objects on the node declared for it (from the registry), by environment.",
    )
    owner: str | None = Field(
        default=None,
        description="Observed only, unmanaged only: the other svcctl environment whose registry record names it.",
    )

    @property
    def address(self) -> str:
        """The resource's address, as plans and error messages show it."""
        return f"{self.kind.value}.{self.name}"


class State(BaseModel):
    """A set of resources keyed by address; desired and observed state are both values of this type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resources: dict[str, Resource] = Field(default_factory=dict)

    @classmethod
    def of(cls, resources: Iterable[Resource]) -> State:
        """Build a State, refusing two resources with one address (a driver bug, not a user error)."""
        out: dict[str, Resource] = {}
        for r in resources:
            if r.address in out:
                raise ValueError(f"two resources share the address {r.address}")
            out[r.address] = r
        return cls(resources=out)

    def __iter__(self) -> Iterator[Resource]:  # type: ignore[override]
        return iter(self.resources.values())

    def __len__(self) -> int:
        return len(self.resources)

    def get(self, address: str) -> Resource | None:
        """The resource at an address, or None."""
        return self.resources.get(address)

    def on_node(self, node: str) -> list[Resource]:
        """Resources on one node, in address order."""
        return [r for a, r in sorted(self.resources.items()) if r.node == node]

    def merged(self, others: Iterable[State]) -> State:
        """This state plus others (e.g. one observed state per node)."""
        return State.of([*self, *(r for s in others for r in s)])

    def placements(self) -> Mapping[str, str]:
        """Instance name -> node for every managed instance that exists: placement must keep them there."""
        return {r.name: r.node for r in self if r.kind is Kind.INSTANCE and r.managed}
