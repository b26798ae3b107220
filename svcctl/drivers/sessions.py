"""Temporary tunnel users (`session.<instance>.<id>`): names, the host helper's requests, and observing them.

A session user is created by `svcctl tunnel` on the instance's node over plain SSH (one round trip, no
Ansible) and dropped when the tunnel closes. The helper (`svcctl.drivers.hostprograms.session_program`: the
host library, host/session_*.py and each engine's session.py; apply installs the same program) records it in the host's
registry before creating it and forgets it after dropping it, so a crashed tunnel's leftover shows in `svcctl
plan` as a managed session and `svcctl apply` deletes it once it has expired. Every engine's observe already
lists its users; the `svs_*` ones are lifted here into session resources, so no driver has to know about
sessions.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from svcctl.drivers.base import PasswordFor
from svcctl.drivers.hostprograms import cached_program, session_program
from svcctl.errors import SvcctlError
from svcctl.model.names import is_valid_name, sql_ident
from svcctl.model.types import check_environment_name, check_identifier, unsafe_character
from svcctl.secrets import Secret
from svcctl.state import Attrs, Kind, Resource

USER_RE = re.compile(r"svs_([a-z0-9_]+)_([0-9a-f]{6})")
"""A session user's name, matched whole (`fullmatch`: a `$` would let a trailing newline through)."""
SESSION_ID_RE = re.compile(r"[0-9a-f]{6}")
ROLES = ("readonly", "readwrite")
LIVE_ATTRS = ("engine", "user")
"""What observing the engine tells about a session user; the rest (role, expires_at) is in the registry."""


def new_id() -> str:
    """A fresh session id: 6 hex digits, as in `svs_<instance>_<id>`."""
    return secrets.token_hex(3)


def user_name(instance: str, session_id: str) -> str:
    """The engine user of a session: `svs_<instance sql ident>_<6 hex>`."""
    return f"svs_{sql_ident(instance)}_{session_id}"


def address(instance: str, session_id: str) -> str:
    """The registry address of a session: `session.<instance>.<id>`."""
    return f"{Kind.SESSION.value}.{instance}.{session_id}"


def purpose(instance: str, session_id: str) -> str:
    """The derivation purpose of a session's password (as secrets.session_password)."""
    return f"session/{instance}/{session_id}"


def expires_at(ttl: datetime.timedelta, now: datetime.datetime | None = None) -> str:
    """The expiry of a session starting now, as ISO 8601 UTC to the second (what the registry holds)."""
    start = now or datetime.datetime.now(datetime.UTC)
    return (start + ttl).astimezone(datetime.UTC).isoformat(timespec="seconds")


def is_expired(attrs: Attrs, now: datetime.datetime | None = None) -> bool:
    """Whether a session's recorded expiry has passed (an unreadable or absent one counts as expired)."""
    try:
        expiry = datetime.datetime.fromisoformat(str(attrs["expires_at"]))
    except (KeyError, ValueError):
        return True
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return expiry <= (now or datetime.datetime.now(datetime.UTC))


def host_script() -> str:
    """The session helper, built from the host library (svcctl-session.py's text, as apply installs it)."""
    return session_program()


CODE_NAME = "session"
"""The name its compiled code is kept under on a node (`cached_program`: /var/cache/svcctl/session.<tag>.code)."""


@functools.cache
def _cached_script() -> str:
    return cached_program(session_program(), CODE_NAME)


def helper_argv(verb: str) -> list[str]:
    """The session helper's command on a node: `python3 -I -S -c LOADER VERB`, request on stdin.

    The loader runs the code the node compiled and kept for this very source (the helper is 31 kB: compiling it
    cost every find, create and drop 15-30 ms on the node); -I -S: no site, no environment, no user paths.
    """
    return ["python3", "-I", "-S", "-c", _cached_script(), verb]


def request(
    *,
    engine: str,
    instance: str,
    session_id: str,
    database: str,
    role: str,
    expiry: str,
    environment: str,
    password: Secret | None = None,
    admin_password: Secret | None = None,
) -> bytes:
    """The helper's stdin: what to create or drop, with the secrets (stdin is the only place they go).

    Every field is checked first (the database comes from the node's registry): the helper checks them
    again on the node, and builds its SQL from quoted identifiers and escaped literals only.
    """
    _check_request(engine, instance, session_id, database, role, expiry, environment)
    user = user_name(instance, session_id)
    doc: dict[str, Any] = {
        "engine": engine,
        "instance": instance,
        "database": database,
        "user": user,
        "address": address(instance, session_id),
        "environment": environment,
        "attrs": {"engine": engine, "user": user, "role": role, "expires_at": expiry, "environment": environment},
    }
    if password is not None:
        doc["password"] = password.reveal()
    if admin_password is not None:
        doc["admin_password"] = admin_password.reveal()
    return json.dumps(doc).encode()


def _check_request(
    engine: str, instance: str, session_id: str, database: str, role: str, expiry: str, environment: str
) -> None:
    problems = []
    if engine not in ("postgres", "mysql", "redis"):
        problems.append(f"unknown engine {engine!r}")
    if not is_valid_name(instance, reserved=False):
        problems.append(f"instance {instance!r} is not a name")
    if not SESSION_ID_RE.fullmatch(session_id):
        problems.append(f"session id {session_id!r} is not 6 hex digits")
    if role not in ROLES:
        problems.append(f"role {role!r} is not readonly or readwrite")
    checks = [(check_environment_name, environment)]
    if database or engine != "redis":
        checks.append((check_identifier, database))
    for check, value in checks:
        try:
            check(value)
        except ValueError as exc:
            problems.append(str(exc))
    try:
        if "T" not in expiry or unsafe_character(expiry) is not None:
            raise ValueError
        datetime.datetime.fromisoformat(expiry)
    except ValueError:
        problems.append(f"expiry {expiry!r} is not an ISO 8601 date and time")
    if problems:
        raise SvcctlError(f"refusing to ask for temporary user svs_{instance}_{session_id}: " + "; ".join(problems))


def lift(live: Iterable[Resource]) -> list[Resource]:
    """Turn the `svs_*` users a driver reported (as unmanaged bindings) into `session.<instance>.<id>`."""
    out: list[Resource] = []
    for res in live:
        m = USER_RE.fullmatch(str(res.attrs.get("user", ""))) if res.kind is Kind.BINDING else None
        instance = m[1].replace("_", "-") if m else ""
        if m is None or not is_valid_name(instance, reserved=False):
            out.append(res)
            continue
        attrs = {"engine": res.engine, "user": m[0]}
        out.append(
            Resource(kind=Kind.SESSION, name=f"{instance}.{m[2]}", node=res.node, engine=res.engine, attrs=attrs)
        )
    return out


def with_records(resources: Iterable[Resource]) -> list[Resource]:
    """Give managed sessions their recorded attributes (role, expiry): the engine cannot tell them."""
    out: list[Resource] = []
    for res in resources:
        if res.kind is Kind.SESSION and res.recorded and not res.attrs.get("missing"):
            res = res.model_copy(update={"attrs": {**res.recorded, **{k: res.attrs[k] for k in LIVE_ATTRS}}})
        out.append(res)
    return out


def secrets_for(resource: Resource, password_for: PasswordFor) -> dict[str, Secret]:
    """What apply needs to delete a session: Redis's admin password (to drop the live user); else nothing."""
    if resource.kind is Kind.SESSION and resource.engine == "redis":
        return {"admin_password": password_for(f"instance/{resource.name.rsplit('.', 1)[0]}/admin")}
    return {}
