#!/usr/bin/python3
# svcctl session helper: create or drop one temporary tunnel user on this node, as root, stdlib only.
#
#     svcctl-session.py create|drop|find     (request as JSON on stdin; secrets only ever travel there)
#
# `create` records the session in the host's registry *before* creating the user, `drop` forgets it only
# *after* the user is gone (apply's order), so a crash in between leaves a record `svcctl plan` shows.
# Passwords never reach a command line or the engine's logs: PostgreSQL gets a SCRAM verifier, MariaDB a
# mysql_native_password hash, Redis a SHA-256 in its ACL file.  `find` prints the registry (to locate an
# instance without running the whole observe script).
#
# Decide, then do: every request field is checked against a strict pattern first (`checked_request`), and
# SQL is built only by the pure `*_sql` functions below from quoted identifiers (`pg_ident`, `my_ident`) and
# escaped literals (`pg_literal`, `my_literal`), never by pasting a value in.  Python 3.9+, stdlib only.
import re
import sys

from svcctl.hostlib.registry import change_one
from svcctl.hostlib.run import sh

ROLES = ("readonly", "readwrite")
ENGINE_NAMES = ("postgres", "mysql", "redis")
# `\Z`, not `$`: `$` also matches before a trailing newline.
NAME_RE = re.compile(r"[a-z](?:-?[a-z0-9])+\Z")  # an instance name (svcctl.model.names)
IDENT_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")  # a database or user (svcctl.model.types.check_identifier)
SESSION_ID_RE = re.compile(r"[0-9a-f]{6}\Z")
ENVIRONMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[+-][0-9]{2}:[0-9]{2}|Z)?\Z"
)


def fail(message):
    sys.stderr.write(message.rstrip() + "\n")
    sys.exit(1)


def run(argv, stdin=None, user=None, env=None):
    """Run argv (no shell); fail with its stderr unless it succeeds; return stdout."""
    rc, out, err = sh(argv, input=stdin, user=user, env=env)
    if rc == 127:
        fail(f"{argv[0]} is not installed on this node")
    if rc != 0:
        fail(f"{argv[0]} failed ({rc}): {err.strip()[-400:]}")
    return out


# --- checking the request --------------------------------------------------------------------


class BadRequest(ValueError):
    """A request field svcctl would never send: refused before anything is changed."""


def _matching(pattern, value, what):
    if not isinstance(value, str) or not pattern.match(value):
        raise BadRequest(f"refusing {what} {value!r}")
    return value


def ident(value):
    """`value` if it is an identifier as svcctl names databases and users, else BadRequest."""
    return _matching(IDENT_RE, value, "identifier")


def _text(value, what, secret=False):
    if not isinstance(value, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        shown = "" if secret else f" {value!r}"  # a secret is never echoed back to the controller's terminal
        raise BadRequest(f"refusing {what}{shown}: not a string, or it holds a control character")
    return value


def checked_request(req, verb):
    """The request's fields, each checked (a hostile or broken request changes nothing), as a new dict."""
    if not isinstance(req, dict):
        raise BadRequest("refusing a request that is not a JSON object")
    engine = req.get("engine")
    if engine not in ENGINE_NAMES:
        raise BadRequest(f"refusing engine {engine!r}")
    instance = _matching(NAME_RE, req.get("instance"), "instance")
    if len(instance) > 24:
        raise BadRequest(f"refusing instance {instance!r}: longer than 24 characters")
    address = req.get("address")
    prefix = f"session.{instance}."
    if not isinstance(address, str) or not address.startswith(prefix):
        raise BadRequest(f"refusing address {address!r}: not a session of instance {instance}")
    session_id = _matching(SESSION_ID_RE, address[len(prefix) :], "session id")
    user = req.get("user")
    if user != f"svs_{instance.replace('-', '_')}_{session_id}":
        raise BadRequest(f"refusing user {user!r}: not the session user of {address}")
    out = {"engine": engine, "instance": instance, "address": address, "user": ident(user)}
    if engine in ("postgres", "mysql"):
        out["database"] = ident(req.get("database"))
    admin = req.get("admin_password") or ""
    out["admin_password"] = _text(admin, "admin password", secret=True)
    if verb == "create":
        attrs = req.get("attrs")
        if not isinstance(attrs, dict) or attrs.get("role") not in ROLES:
            raise BadRequest(f"refusing attrs {attrs!r}: no readonly or readwrite role")
        _matching(TIMESTAMP_RE, attrs.get("expires_at"), "expiry")
        out["attrs"] = attrs
        out["environment"] = _matching(ENVIRONMENT_RE, req.get("environment"), "environment")
        out["password"] = _text(req.get("password"), "password", secret=True)
        if engine == "redis" and not admin:
            raise BadRequest("refusing a Redis session without the instance's admin password")
    return out


# --- registry ---------------------------------------------------------------------------------------------


def record_session(req):
    """Record the session before its user exists (apply's order: record, then create)."""
    change_one("record", req["address"], req["attrs"], req["environment"])


def forget_session(req):
    """Forget the session once its user is gone."""
    change_one("forget", req["address"])
