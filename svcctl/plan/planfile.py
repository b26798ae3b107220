"""Saved plans (`plan --out`): the plan plus what apply needs to refuse it once the hosts have changed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from svcctl.errors import SvcctlError
from svcctl.plan.types import PLAN_FORMAT_VERSION, Plan

KIND = "svcctl-plan"


def save_plan(out: Path, environment_path: Path, plan: Plan) -> None:
    """Write the plan atomically with mode 0600; it holds no secrets, but it does describe the hosts."""
    doc: dict[str, Any] = {
        "kind": KIND,
        "format_version": PLAN_FORMAT_VERSION,
        "environment_path": str(environment_path.resolve()),
        "plan": plan.model_dump(mode="json"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
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


def load_plan(path: Path) -> tuple[Path, Plan]:
    """The environment path and plan saved in a plan file."""
    try:
        doc = json.loads(path.read_text())
        if doc.get("format_version") != PLAN_FORMAT_VERSION:
            raise SvcctlError(
                f"{path} was saved by a svcctl with plan format {doc.get('format_version')}; this one reads "
                f"format {PLAN_FORMAT_VERSION}. Make the plan again with this svcctl."
            )
        return Path(doc["environment_path"]), Plan.model_validate(doc["plan"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SvcctlError(
            f"{path} is not a readable saved plan ({exc}); make it again with `svcctl plan --out`."
        ) from None
