"""The Plan: small typed records of what apply would do; rendering only prints them, never computes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from svcctl.state import Kind

PLAN_FORMAT_VERSION = 1


class Action(StrEnum):
    """What happens to a resource; the symbol is Terraform's."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    ADOPT = "adopt"  # an existing object becomes this environment's, as Terraform's import

    @property
    def symbol(self) -> str:
        """`+`, `~`, `-/+`, `-`, or `<=` for an adoption (brought in as it is)."""
        return {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "adopt": "<="}[self.value]


class Cause(StrEnum):
    """Why a change is planned: the YAML changed, or the host changed behind svcctl's back."""

    CONFIG = "config"
    DRIFT = "drift"


class AttrChange(BaseModel):
    """One attribute's before and after.  Sensitive values are never stored, only that they change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    old: Any = None
    new: Any = None
    cause: Cause = Cause.CONFIG
    sensitive: bool = False
    forces_replace: bool = False


class Change(BaseModel):
    """One planned change to one resource."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    address: str
    kind: Kind
    node: str
    engine: str
    cause: Cause = Cause.CONFIG
    attrs: list[AttrChange] = Field(default_factory=list)
    restarts_service: bool = False
    destroys_data: bool = False
    reason: str | None = Field(default=None, description="Why, in words, when the attributes do not say it.")


class Plan(BaseModel):
    """Ordered changes plus what the plan saw but will not touch; a pure function of (desired, observed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = PLAN_FORMAT_VERSION
    environment: str = ""
    changes: list[Change] = Field(default_factory=list)
    unmanaged: list[str] = Field(default_factory=list, description="Objects on the hosts svcctl did not create.")
    warnings: list[str] = Field(default_factory=list, description="E.g. an instance over its storage quota.")
    errors: list[str] = Field(default_factory=list, description="Why this plan must not be applied.")
    fingerprint: str = Field(default="", description="Hash of the observed state the plan was made from.")
    targets: list[str] = Field(
        default_factory=list, description="The --target addresses it was narrowed to (svcctl.plan.targets); none: all."
    )

    @property
    def has_changes(self) -> bool:
        """True when applying would change something."""
        return bool(self.changes)

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to destroy); a replace counts as one add and one destroy, as in Terraform.
        Adoptions are counted apart (`adoptions`); a release (an adopted instance no longer declared) is
        a destroy that keeps the data, counted as one."""
        add = sum(c.action in (Action.CREATE, Action.REPLACE) for c in self.changes)
        change = sum(c.action is Action.UPDATE for c in self.changes)
        destroy = sum(c.action in (Action.DELETE, Action.REPLACE) for c in self.changes)
        return add, change, destroy

    @property
    def adoptions(self) -> int:
        """How many existing objects this plan adopts."""
        return sum(c.action is Action.ADOPT for c in self.changes)

    @property
    def config_changes(self) -> list[Change]:
        """Changes caused by edits to the YAML."""
        return [c for c in self.changes if c.cause is Cause.CONFIG]

    @property
    def drift(self) -> list[Change]:
        """Changes that repair objects changed or deleted outside svcctl."""
        return [c for c in self.changes if c.cause is Cause.DRIFT]
