"""Strict string types: the trust boundary for everything the YAML declares and every node reports.

A value becomes an SSH option, a config line, a file name, a template variable or a printed word only
after one of these types accepted it. Every type refuses control and format characters (newlines,
escapes, bidi overrides) and template markers (`{{`, `{%`, `{#`), then checks its own shape. The
same validators check what nodes report (`svcctl.drivers`), so a hostile host meets the rules the YAML
meets.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator

from svcctl.model.names import NAME_RULE

TEMPLATE_MARKERS = ("{{", "{%", "{#")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

HOST_MAX = 253
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9_])?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_LABEL_KEY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
_APP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})")
_ENVIRONMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")
PATH_MAX = 1024
TEXT_MAX = 1000


def unsafe_character(value: str) -> str | None:
    """The first character of `value` that no svcctl value may hold, shown as U+XXXX, or None."""
    if value.isascii() and value.isprintable():  # space to tilde: letters, digits, punctuation, symbols, Zs
        return None
    for char in value:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def text_problem(value: str) -> str | None:
    """What makes `value` unsafe as any svcctl string (control characters, template markers), or None."""
    bad = unsafe_character(value)
    if bad is not None:
        return f"contains the control or format character {bad}, which is never allowed"
    for marker in TEMPLATE_MARKERS:
        if marker in value:
            return f'contains "{marker}", a template marker, which is never allowed'
    return None


def _safe(value: str, what: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {_quoted(value)} {problem}")


def _quoted(value: str) -> str:
    """A value inside a message: quoted, with anything unprintable escaped, and cut to a readable length."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def check_host(value: str) -> str:
    """A host name, ssh alias, IPv4 or IPv6 address (no scope id): nothing a shell or config could split."""
    _safe(value, "host")
    if ":" in value:
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"host {_quoted(value)} is not a host name or IP address") from None
        if address.scope_id is not None:
            raise ValueError(f"host {_quoted(value)} has a scope id (%...); scope ids are not supported")
        return value
    if len(value) > HOST_MAX or not _HOSTNAME.fullmatch(value):
        raise ValueError(
            f"host {_quoted(value)} is not a host name or IP address: letters, digits, dots, hyphens and "
            f"underscores only, at most {HOST_MAX} characters, starting and ending with a letter or digit"
        )
    return value


def check_user(value: str) -> str:
    """A Unix login name as OpenSSH and useradd accept it: at most 32 of letters, digits, `_`, `.`, `-`."""
    _safe(value, "user")
    if not _USER.fullmatch(value):
        raise ValueError(
            f"user {_quoted(value)} is not a Unix user name: a letter or _ first, then letters, digits, "
            "_ . or -, at most 32 characters"
        )
    return value


def check_path(value: str) -> str:
    """A local file path from the YAML: printable, no template markers, not an option, bounded."""
    _safe(value, "path")
    if value.startswith("-"):
        raise ValueError(f"path {_quoted(value)} starts with -; write ./{value}")
    if len(value) > PATH_MAX:
        raise ValueError(f"path is longer than {PATH_MAX} characters")
    return value


def check_cidr(value: str) -> str:
    """An IP network in canonical CIDR form, exactly as Python prints it: no host bits, no scope id."""
    _safe(value, "network")
    if "%" in value:
        raise ValueError(f"network {_quoted(value)} has a scope id (%...); scope ids are not supported")
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{_quoted(value)} is not an IP network in CIDR form; write one such as 10.0.0.0/24 or fd00::/64"
        ) from None
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"{_quoted(value)} has host bits set; write the network address: {network}") from None
    if str(network) != value:
        raise ValueError(f"{_quoted(value)} is not written in canonical form; write {network}")
    return value


def check_version(value: str) -> str:
    """A version as dot-separated numbers ("15", "10.11"): at most four parts of at most four digits."""
    _safe(value, "version")
    if not _VERSION.fullmatch(value):
        raise ValueError(f'version {_quoted(value)} must be dot-separated numbers such as "15" or "10.11"')
    return value


def check_label_key(value: str) -> str:
    """A label key: letters, digits, `.`, `_`, `-` and `/`, at most 63, alphanumeric at both ends."""
    _safe(value, "label key")
    if not _LABEL_KEY.fullmatch(value):
        raise ValueError(
            f"label key {_quoted(value)} must be 1 to 63 letters, digits, . _ - or /, starting and ending "
            "with a letter or digit"
        )
    return value


def check_label_value(value: str) -> str:
    """A label value: empty, or letters, digits, `.`, `_` and `-`, at most 63, alphanumeric at both ends."""
    _safe(value, "label value")
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            f"label value {_quoted(value)} must be at most 63 letters, digits, . _ or -, starting and ending "
            "with a letter or digit"
        )
    return value


def check_app_name(value: str) -> str:
    """An application name inside a cf manifest: letters, digits, `.`, `_`, `-`, at most 63."""
    _safe(value, "application name")
    if not _APP_NAME.fullmatch(value):
        raise ValueError(
            f"application name {_quoted(value)} must be 1 to 63 letters, digits, . _ or -, starting with a "
            "letter or digit"
        )
    return value


def check_text(value: str) -> str:
    """Free text (a plan's description): printable, no template markers, at most 1000 characters."""
    _safe(value, "text")
    if len(value) > TEXT_MAX:
        raise ValueError(f"text is longer than {TEXT_MAX} characters")
    return value


def check_environment_name(value: str) -> str:
    """An environment's name, as hosts' registries record it and key files are named: at most 64 of
    letters, digits, `.`, `_` and `-`, starting with a letter or digit."""
    _safe(value, "environment name")
    if not _ENVIRONMENT.fullmatch(value):
        raise ValueError(
            f"environment name {_quoted(value)} must be 1 to 64 letters, digits, . _ or -, starting with a "
            "letter or digit"
        )
    return value


def check_reference(value: str) -> str:
    """A reference to a declared name (plan, node, service, app, instance); the loader checks it exists."""
    _safe(value, "name")
    if not _REFERENCE.fullmatch(value):
        raise ValueError(f"{_quoted(value)} is not a name: {NAME_RULE}")
    return value


def check_jump_host(value: str) -> str:
    """A ProxyJump value: comma-separated hops `[ssh://][user@]host[:port]`, each part a valid user/host/port."""
    _safe(value, "jump host")
    for hop in value.split(","):
        problem = _hop_problem(hop.strip().removeprefix("ssh://"))
        if problem:
            raise ValueError(f"jump host {_quoted(value)} is not [user@]host[:port] (like ssh -J): {problem}")
    return value


def _hop_problem(hop: str) -> str | None:
    if not hop:
        return "a hop is empty"
    if any(char.isspace() for char in hop):
        return "it contains a space"
    user, at, rest = hop.rpartition("@")
    if at and not user:
        return "the user before @ is empty"
    port: str | None
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return "an IPv6 address needs [brackets] closed before :port"
        port = after[1:] if after else None
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, None
    if not host:
        return "the host is empty"
    if port == "":
        return "the port after : is empty"
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f'port "{port}" is not a number from 1 to 65535'
    for check, part in ((check_user, user), (check_host, host)):
        if part:
            try:
                check(part)
            except ValueError as exc:
                return str(exc)
    return None


Host = Annotated[str, AfterValidator(check_host)]
User = Annotated[str, AfterValidator(check_user)]
LocalPath = Annotated[str, AfterValidator(check_path)]
Cidr = Annotated[str, AfterValidator(check_cidr)]
Version = Annotated[str, AfterValidator(check_version)]
LabelKey = Annotated[str, AfterValidator(check_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
AppName = Annotated[str, AfterValidator(check_app_name)]
Text = Annotated[str, AfterValidator(check_text)]
Labels = dict[LabelKey, LabelValue]
Reference = Annotated[str, AfterValidator(check_reference)]
JumpHost = Annotated[str, AfterValidator(check_jump_host)]
EnvironmentName = Annotated[str, AfterValidator(check_environment_name)]
ENVIRONMENT_PATTERN = f"^{_ENVIRONMENT.pattern}$"
"""check_environment_name's shape as a JSON Schema pattern (which the rule's other checks only narrow)."""


def is_unsafe_char(char: str) -> bool:
    """Whether `char` is of a category no svcctl value may hold (control, format, line or paragraph separator,
    surrogate, private use, unassigned): the characters that printing makes visible as escapes."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


IDENTIFIER_MAX = 63
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(value: str) -> str:
    """An SQL or Redis identifier as svcctl names databases and users (`orders_db`, `sv_web_orders_db_r0`):
    lowercase letters, digits and `_`, not starting with a digit, at most 63 (PostgreSQL's limit), so it
    means the same unquoted or quoted in PostgreSQL, MariaDB and a Redis ACL."""
    _safe(value, "identifier")
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"identifier {_quoted(value)} must be 1 to {IDENTIFIER_MAX} lowercase letters, digits or _, "
            "not starting with a digit"
        )
    return value


Identifier = Annotated[str, AfterValidator(check_identifier)]


# --- what nodes report: names of objects svcctl did not create, config words, timestamps, package versions --

REPORTED_NAME_MAX = 128
TOKEN_MAX = 255
_TIMESTAMP_MAX = 40
_PACKAGE_VERSION = re.compile(r"(?:[0-9]{1,9}:)?[0-9][A-Za-z0-9.+~-]{0,127}")


def check_reported_name(value: str) -> str:
    """A database, role, user or instance name an engine reports, svcctl's or not: 1 to 128 printable
    characters, no template markers. Engines accept almost any name, and svcctl lists foreign objects by
    theirs, so only what could act on a terminal, a file or a template is refused."""
    _safe(value, "name")
    if not 1 <= len(value) <= REPORTED_NAME_MAX:
        raise ValueError(f"name {_quoted(value)} must be 1 to {REPORTED_NAME_MAX} characters")
    return value


def check_token(value: str) -> str:
    """One word of a config file or an ACL as a node reports it (`127.0.0.1`, `+@read`, `10.0.0.0/255.0.0.0`):
    1 to 255 printable characters, no whitespace, no template markers."""
    _safe(value, "word")
    if not 1 <= len(value) <= TOKEN_MAX or any(char.isspace() for char in value):
        raise ValueError(f"word {_quoted(value)} must be 1 to {TOKEN_MAX} characters without spaces")
    return value


def check_timestamp(value: str) -> str:
    """An ISO 8601 date and time (`2025-01-31T12:00:00+00:00`), as registries record `applied_at`/`expires_at`."""
    import datetime  # here, so that every addition for node reports stays in this section

    _safe(value, "timestamp")
    try:
        if len(value) > _TIMESTAMP_MAX or "T" not in value:
            raise ValueError
        datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"timestamp {_quoted(value)} is not an ISO 8601 date and time") from None
    return value


def check_package_version(value: str) -> str:
    """A Debian package version (`1:10.11.19-0+deb12u1`): an optional epoch, then digits first, letters,
    digits and `.+~-` only, at most 128 characters."""
    _safe(value, "package version")
    if not _PACKAGE_VERSION.fullmatch(value):
        raise ValueError(f"package version {_quoted(value)} is not a Debian version such as 1:10.11.19-0+deb12u1")
    return value


def quoted(value: str, limit: int = 80) -> str:
    """`value` for a message: in double quotes, anything unprintable escaped (`\\x1b`, `\\n`), cut to `limit`."""
    shown = value if len(value) <= limit else value[: limit - 3] + "..."
    return '"' + shown.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


ReportedName = Annotated[str, AfterValidator(check_reported_name)]
Token = Annotated[str, AfterValidator(check_token)]
Timestamp = Annotated[str, AfterValidator(check_timestamp)]
PackageVersion = Annotated[str, AfterValidator(check_package_version)]
