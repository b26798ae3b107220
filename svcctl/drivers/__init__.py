"""Engine drivers: one folder per engine (postgres, mysql, redis), each owning its controller side (`driver.py`:
observe's parse, desired state, apply's vars), its host parts (`observe.py`, `session.py`) and its Ansible files
(`ansible/`: tasks, modules, templates)."""

from __future__ import annotations

from importlib import import_module

from svcctl.drivers.base import Driver
from svcctl.drivers.hostprograms import ENGINES, observe_program, script_source

__all__ = ["ENGINES", "Driver", "drivers", "observe_script"]


def drivers() -> dict[str, Driver]:
    """Every engine's driver, by engine name (imported on first use)."""
    return {engine: import_module(f"svcctl.drivers.{engine}.driver").DRIVER for engine in ENGINES}


def observe_script() -> str:
    """The one script a node runs to be observed: the shared frame around every driver's snippet, and the
    release fragment (the node's OS release and what its package sources offer each engine)."""
    fragments = [(f"{engine}/observe.py", d.snippet()) for engine, d in drivers().items()]
    fragments.append(("observe_release.py", script_source("observe_release.py")))
    fragments.append(("observe_backups.py", script_source("observe_backups.py")))
    return observe_program(fragments)
