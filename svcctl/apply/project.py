"""The Ansible project one apply runs: svcctl's engine-independent plays plus each engine's Ansible files.

`playbooks/` (installed as `svcctl.playbooks`) holds what every engine shares: apply.yml, tasks/change.yml,
tasks/session.yml. Each engine's tasks, modules and templates sit beside its driver, in
svcctl/drivers/<engine>/ansible/{tasks,library,templates}/, so that an engine is one folder. Per run they are
merged into one project directory inside the run's private directory; two parts shipping the same file is
refused, so no engine can shadow another's file or a shared one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from svcctl.drivers import ENGINES
from svcctl.errors import SvcctlError

_SKIP = ("__init__.py", "__pycache__")


def sources(engines: Iterable[str] = ENGINES) -> list[tuple[str, Traversable]]:
    """(label, directory) of every part of the project: the shared plays first, then each engine's `ansible/`."""
    parts: list[tuple[str, Traversable]] = [("svcctl.playbooks", resources.files("svcctl.playbooks"))]
    parts += [(f"svcctl.drivers.{e}", resources.files(f"svcctl.drivers.{e}").joinpath("ansible")) for e in engines]
    return parts


def assemble(destination: Path, parts: Iterable[tuple[str, Traversable]] | None = None) -> Path:
    """Write the merged project (of `parts`, default `sources()`) into `destination` and return it;
    $SVCCTL_PLAYBOOKS, if set, is a whole project of the user's to run instead, returned as it is."""
    override = os.environ.get("SVCCTL_PLAYBOOKS")
    if override:
        return Path(override)
    owner: dict[Path, str] = {}
    for label, root in sources() if parts is None else parts:
        if not root.is_dir():
            raise SvcctlError(
                f"svcctl's Ansible files of {label} are missing ({root}), so apply cannot run; reinstall svcctl "
                "with pip or pipx, or set SVCCTL_PLAYBOOKS to a complete Ansible project."
            )
        for relative, item in _files(root, Path()):
            if relative in owner:
                raise SvcctlError(
                    f"{label} and {owner[relative]} both ship {relative}; svcctl's installation is inconsistent: "
                    "reinstall it."
                )
            owner[relative] = label
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.read_bytes())
    return destination


def _files(root: Traversable, prefix: Path) -> Iterable[tuple[Path, Traversable]]:
    """Every file under `root`, with its path relative to it, skipping Python package markers and caches."""
    for item in sorted(root.iterdir(), key=lambda t: t.name):
        if item.name in _SKIP:
            continue
        if item.is_dir():
            yield from _files(item, prefix / item.name)
        else:
            yield prefix / item.name, item
