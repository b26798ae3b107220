"""Engine drivers: one module per engine (postgres, mysql, redis), each owning observe, desired and apply vars."""

from __future__ import annotations

from importlib import import_module

from svcctl.drivers.base import Driver, load_script

ENGINES = ("postgres", "mysql", "redis")


def drivers() -> dict[str, Driver]:
    """Every engine's driver, by engine name (imported on first use)."""
    return {engine: import_module(f"svcctl.drivers.{engine}").DRIVER for engine in ENGINES}


def observe_script() -> str:
    """The one script a node runs to be observed: the shared frame around every driver's snippet."""
    parts = [load_script("observe_header.py")]
    parts += [d.snippet() for d in drivers().values()]
    parts.append(load_script("observe_footer.py"))
    return "\n\n".join(parts)
