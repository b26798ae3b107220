"""`svcctl import`'s side effects: observe the nodes it scans (the planner's observation) and write its file."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Collection
from pathlib import Path

from svcctl.errors import SvcctlError
from svcctl.model.spec import Environment
from svcctl.plan.observe import ObserveOptions, Progress, observe_nodes
from svcctl.plan.planner import password_source
from svcctl.state import State


def narrowed(env: Environment, nodes: Collection[str]) -> Environment:
    """The environment with only `nodes` (all of them when empty); an undeclared name is an error naming them."""
    if not nodes:
        return env
    unknown = sorted(set(nodes) - set(env.nodes))
    if unknown:
        raise SvcctlError(
            f"--node {', '.join(unknown)}: not a node of environment {env.name} (its nodes: "
            f"{', '.join(sorted(env.nodes)) or 'none'}); name a node its YAML declares."
        )
    return env.model_copy(update={"nodes": {name: env.nodes[name] for name in sorted(set(nodes))}})


def scan(env: Environment, options: ObserveOptions, progress: Progress | None = None) -> State:
    """Observe the environment's nodes exactly as `svcctl plan` does (NodesUnobservable if any fails).

    Import reads no binding's credentials, so it needs no key: the verifiers are checked against a random
    one, and nothing of that check reaches its output.
    """
    throwaway = password_source(secrets.token_bytes(32))
    return observe_nodes(env, env.name, throwaway, options, progress).state


def write_new(out: Path, text: str, *, force: bool) -> None:
    """Write `text` to `out` atomically: complete or not at all; an existing file is kept unless `force`."""
    if out.exists() and not force:
        raise SvcctlError(f"{out} exists; choose another file, or pass --force to replace it.")
    directory = out.parent if str(out.parent) else Path()
    if not directory.is_dir():
        raise SvcctlError(f"{out}: the directory {directory} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o644)
        if force:
            Path(tmp).replace(out)
        else:
            os.link(tmp, out)  # fails if `out` appeared meanwhile: never replaced without --force
            Path(tmp).unlink()
    except FileExistsError:
        Path(tmp).unlink(missing_ok=True)
        raise SvcctlError(f"{out} exists; choose another file, or pass --force to replace it.") from None
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SvcctlError(f"cannot write {out}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
