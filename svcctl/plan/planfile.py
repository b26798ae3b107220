"""Saved plans (`plan --out`): what was reviewed, and what apply needs to refuse it once anything moved.

The file holds the changes, the environment's name, the svcctl version that made it, and digests of the
desired environment and of the observed state the plan rests on (`svcctl.plan.review`). It holds no
absolute path, no YAML value and no secret: apply finds the environment's files itself (`--env`), in this
checkout or another.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from svcctl import __version__
from svcctl.errors import SvcctlError
from svcctl.model.spec import Environment
from svcctl.plan.planner import Planned
from svcctl.plan.review import Entries, desired_entries, entries_fingerprint, observed_digests, pinned
from svcctl.plan.types import Plan

KIND = "svcctl-plan"
FORMAT_VERSION = 2
"""The saved plan file's format (1: the plan and an absolute environment path); the plan inside it is a
plan document of its own `format_version` (docs/plan-json.md)."""


@dataclass(frozen=True)
class SavedPlan:
    """A plan as `plan --out` saved it: the changes and what they were made from."""

    plan: Plan
    environment: str
    svcctl_version: str
    desired_fingerprint: str
    desired: Entries
    observed: dict[str, str]

    @property
    def observed_fingerprint(self) -> str:
        """The fingerprint of the observed state the plan rests on (the plan's own `fingerprint`)."""
        return self.plan.fingerprint


def saved_plan(planned: Planned, env: Environment, root: Path) -> SavedPlan:
    """What `plan --out` saves for `planned`, made from `env` whose files are in the directory `root`."""
    entries = desired_entries(env, root)
    return SavedPlan(
        plan=planned.plan,
        environment=env.name,
        svcctl_version=__version__,
        desired_fingerprint=entries_fingerprint(entries),
        desired=entries,
        observed=observed_digests(pinned(planned.observed, planned.desired, {c.address for c in planned.plan.changes})),
    )


def save_plan(out: Path, saved: SavedPlan) -> None:
    """Write the plan atomically with mode 0600; it holds no secrets, but it does describe the hosts."""
    doc: dict[str, Any] = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "svcctl_version": saved.svcctl_version,
        "environment": saved.environment,
        "desired": {"fingerprint": saved.desired_fingerprint, "entries": saved.desired},
        "observed": {"fingerprint": saved.observed_fingerprint, "resources": saved.observed},
        "plan": saved.plan.model_dump(mode="json"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o600)
        Path(tmp).replace(out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_plan_file(path: Path) -> bool:
    """True if PATH is a file saved by `plan --out` (rather than an environment)."""
    if not path.is_file():
        return False
    try:
        with path.open() as f:
            head = f.read(1)
            if head != "{":
                return False
            f.seek(0)
            return json.load(f).get("kind") == KIND  # type: ignore[no-any-return]
    except (OSError, ValueError, AttributeError):
        return False


def load_plan(path: Path) -> SavedPlan:
    """The saved plan in PATH; refused when another format version or another svcctl version wrote it."""
    again = "Make the plan again with this svcctl (`svcctl plan --out`) and review it; nothing was changed."
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SvcctlError(f"{path} is not a readable saved plan ({exc}). {again}") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise SvcctlError(f"{path} is not a plan saved by `svcctl plan --out`. {again}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise SvcctlError(
            f"{path} is a saved plan of format {_shown(version)}; this svcctl ({__version__}) reads only format "
            f"{FORMAT_VERSION}. {again}"
        )
    made_by = doc.get("svcctl_version")
    if made_by != __version__:
        raise SvcctlError(
            f"{path} was made by svcctl {_shown(made_by)}, and this is svcctl {__version__}: a plan is applied by "
            f"the svcctl that made it, which decides what its changes do. {again}"
        )
    try:
        plan = Plan.model_validate(doc["plan"])
        saved = SavedPlan(
            plan=plan,
            environment=_string(doc["environment"]),
            svcctl_version=made_by,
            desired_fingerprint=_string(doc["desired"]["fingerprint"]),
            desired={
                _string(address): {_string(k): _string(v) for k, v in fields.items()}
                for address, fields in doc["desired"]["entries"].items()
            },
            observed={_string(k): _string(v) for k, v in doc["observed"]["resources"].items()},
        )
        consistent = (
            _string(doc["observed"]["fingerprint"]) == plan.fingerprint and saved.environment == plan.environment
        )
    except (ValidationError, KeyError, TypeError, AttributeError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise SvcctlError(f"{path} is not a readable saved plan ({reason}). {again}") from None
    if not consistent:
        raise SvcctlError(f"{path} is not a readable saved plan (its parts disagree). {again}")
    return saved


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, found {type(value).__name__}")
    return value


def _shown(value: object) -> str:
    """A value read from the file, for a message: JSON, cut short."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."
