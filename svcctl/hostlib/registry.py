"""The registry: what svcctl manages on this node, at /var/lib/svcctl/registry.json (root, 0600).

    {"format": 1, "objects": {address: {"attrs": {...}, "environment": name, "applied_at": iso8601,
                                        "claims": {environment: [cidr, ...]}}}}   (claims: engines only)

One implementation of the format and of its lock discipline, used by apply (this module's command line,
below), the tunnel's session helper and observe. Every read-change-write holds the lock file, so an apply
and a tunnel on the same node never lose each other's records; every write is atomic (temp file, fsync,
rename), so a crash never leaves half a registry. `applied_at` changes only when a record does.

    svcctl-registry.py record ADDRESS   (JSON record on stdin: {"attrs": {...}, "environment": ...})
    svcctl-registry.py record-many      (JSON on stdin: {"environment": ..., "changes": [{"address", "attrs"}...]};
                                         an engine change may carry "claim": the environment's client networks)
    svcctl-registry.py forget ADDRESS
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

REGISTRY_PATH = "/var/lib/svcctl/registry.json"
REGISTRY_LOCK = "/var/lib/svcctl/.registry.lock"
REGISTRY_FORMAT = 1
CHANGING_LOCK = "/var/lib/svcctl/.changing.lock"
"""Held shared by every svcctl module while it runs (`hold_changing`); an apply takes it exclusively, for an
instant, before it goes on (svcctl.apply.lock)."""
_held: list[int] = []

Registry = dict[str, Any]  # the whole document


def empty_registry() -> Registry:
    """The registry of a node svcctl has not touched yet."""
    return {"format": REGISTRY_FORMAT, "objects": {}}


def read_registry(path: str = REGISTRY_PATH) -> Registry:
    """The registry as it is now, without the lock (observe only reads; a write is atomic)."""
    try:
        with open(path) as f:
            doc: Registry = json.load(f)
    except FileNotFoundError:
        return empty_registry()
    return doc


def _save(doc: Registry, path: str) -> None:
    import tempfile  # here, not above: observe only reads, and importing it costs a node 4-8 ms of CPU per run

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".registry.")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def changing_registry(path: str = REGISTRY_PATH, lock: str = REGISTRY_LOCK) -> Iterator[Registry]:
    """The registry, locked for the block; written back atomically at its end if the block changed it."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        doc = read_registry(path)
        before = json.dumps(doc, sort_keys=True)
        yield doc
        if json.dumps(doc, sort_keys=True) != before:
            _save(doc, path)


def hold_changing(fail: Callable[..., Any], path: str = CHANGING_LOCK) -> None:
    """Hold the changing lock, shared, for the rest of this process (the kernel lets it go when the process
    ends, however it ends); `fail(msg=...)` (a module's fail_json) if it cannot be taken.

    A module whose apply was killed or cut off goes on running on the node until it is done; the next apply
    waits for every holder before it observes, so it never plans against (or races) a change still being made.
    """
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError as exc:
        fail(msg=f"cannot take svcctl's changing lock {path}: {exc}")
        return
    _held.append(fd)


def now_iso() -> str:
    """The current time as the registry stamps it (UTC, seconds; timezone.utc, as 3.9 has no shorter alias)."""
    import datetime  # here, not above: observe only reads (see _save)

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def record(
    doc: Registry,
    address: str,
    attrs: dict[str, Any],
    environment: str,
    claim: list[str] | None = None,
    now: str | None = None,
) -> bool:
    """Record an object's applied attrs for `environment`; True if the record changed.

    A shared engine also keeps each environment's client networks (`claims`), so that one environment's
    apply keeps the others' networks open; a record that has claims keeps them when `claim` is not given.
    `applied_at` is stamped only on a change.
    """
    old = doc["objects"].get(address, {})
    new: dict[str, Any] = {"attrs": attrs, "environment": environment}
    if claim is not None or "claims" in old:
        new["claims"] = dict(old.get("claims", {}))
        if claim is not None:
            new["claims"][environment] = claim
    if all(old.get(k) == new.get(k) for k in ("attrs", "environment", "claims")):
        return False
    new["applied_at"] = now or now_iso()
    doc["objects"][address] = new
    return True


def forget(doc: Registry, address: str) -> bool:
    """Forget an address (after its object is gone); True if there was a record."""
    return doc["objects"].pop(address, None) is not None


def change_one(
    verb: str,
    address: str,
    attrs: dict[str, Any] | None = None,
    environment: str = "",
    path: str = REGISTRY_PATH,
    lock: str = REGISTRY_LOCK,
) -> bool:
    """Record (`verb` "record", with attrs and environment) or forget one address, under the lock, as an
    Ansible module does for each object it makes or drops; True if the registry changed."""
    with changing_registry(path, lock) as doc:
        if verb == "record":
            return record(doc, address, attrs or {}, environment)
        return forget(doc, address)


def record_all(
    changes: list[dict[str, Any]], environment: str, path: str = REGISTRY_PATH, lock: str = REGISTRY_LOCK
) -> bool:
    """Record every change ({"address", "attrs"[, "claim"]}) for `environment` in one locked write (an apply
    run's records, before any of its objects is touched); True if the registry changed."""
    changed = False
    with changing_registry(path, lock) as doc:
        for change in changes:
            changed |= record(doc, change["address"], change["attrs"], environment, change.get("claim"))
    return changed


def record_early(module: Any, addresses: list[str]) -> None:
    """An objects module's first act: record, in one write, its changes whose `addresses` the run records before
    anything is touched (when no registry task ran for them); the module fails, naming why, if it cannot."""
    early = set(addresses)
    if module.check_mode or not early:
        return
    try:
        record_all([c for c in module.params["changes"] if c["address"] in early], module.params["environment"])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        module.fail_json(msg=f"could not record this run's changes in the host registry: {exc}")


def registry_main(argv: list[str]) -> str:
    """The registry helper's command line (`record`, `record-many`, `forget`); returns changed/unchanged."""
    verb, address = (argv[0] if argv else ""), (argv[1] if len(argv) > 1 else "")
    if verb not in ("record", "record-many", "forget"):
        raise SystemExit(f"svcctl-registry: unknown verb {verb!r}; use record, record-many or forget")
    if verb == "record-many":  # one write for every object of an apply run, before any is created
        batch = json.load(sys.stdin)
        return "changed" if record_all(batch["changes"], batch["environment"]) else "unchanged"
    with changing_registry() as doc:
        if verb == "record":
            given = json.load(sys.stdin)
            changed = record(doc, address, given["attrs"], given["environment"])
        else:
            changed = forget(doc, address)
    return "changed" if changed else "unchanged"
