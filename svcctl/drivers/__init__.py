"""Engine drivers: one module per engine (postgres, mysql, redis), each owning observe, desired and apply vars."""

from __future__ import annotations

from importlib import import_module

from svcctl.drivers.base import Driver, load_script
from svcctl.drivers.hostprograms import observe_program

ENGINES = ("postgres", "mysql", "redis")


def drivers() -> dict[str, Driver]:
    """Every engine's driver, by engine name (imported on first use)."""
    return {engine: import_module(f"svcctl.drivers.{engine}").DRIVER for engine in ENGINES}


def observe_script() -> str:
    """The one script a node runs to be observed: the shared frame around every driver's snippet, and the
    release fragment (the node's OS release and what its package sources offer each engine)."""
    fragments = [(f"observe_{engine}.py", d.snippet()) for engine, d in drivers().items()]
    fragments.append(("observe_release.py", load_script("observe_release.py")))
    return observe_program(fragments)
