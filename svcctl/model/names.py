"""Names of nodes, services, plans, instances and apps: one strict pattern, checked and never escaped around.

Names become SQL identifiers, Unix user names and file names on the hosts. Rather than quoting around
a bad name at each of those places, svcctl refuses it once, here. At most 24 characters keeps derived
identifiers such as `sv_<app>_<instance>_r<rotation>` inside PostgreSQL's 63 and MariaDB's 80 limits.
"""

from __future__ import annotations

import re

NAME_MIN = 2
NAME_MAX = 24
NAME_PATTERN = r"^[a-z](-?[a-z0-9])+$"
NAME_RULE = (
    f"names are {NAME_MIN} to {NAME_MAX} characters: a lowercase letter first, then lowercase letters, "
    f"digits and single hyphens, not ending in a hyphen ({NAME_PATTERN})"
)

_NAME_RE = re.compile(NAME_PATTERN)

RESERVED = frozenset(
    {
        "postgres",
        "template0",
        "template1",
        "mysql",
        "root",
        "information_schema",
        "performance_schema",
        "sys",
        "default",
        "public",
        "admin",
        "redis",
        "svcctl",
        "localhost",
        "all",
        "none",
        "user",
    }
)
_RESERVED_PREFIXES = ("pg-", "svcctl")


def name_problem(kind: str, name: object, *, reserved: bool = True) -> str | None:
    """Say what is wrong with `name` as a `kind` name, or None when it is fine.

    `reserved=False` is for catalogue names (services, plans) that never reach a host, where
    `postgres` or `pg-small` are natural names.
    """
    if not isinstance(name, str):
        return f"{kind} name {name!r} is not a string; {NAME_RULE}"
    if not NAME_MIN <= len(name) <= NAME_MAX or not _NAME_RE.fullmatch(name):
        return f'{kind} name "{name}" is not allowed; {NAME_RULE}'
    if reserved and (name in RESERVED or name.startswith(_RESERVED_PREFIXES)):
        return f'{kind} name "{name}" is reserved (it collides with engine or system names); choose another'
    return None


def is_valid_name(name: str, *, reserved: bool = True) -> bool:
    """True when `name` passes `name_problem`; for callers that only need a yes or no."""
    return name_problem("", name, reserved=reserved) is None


def sql_ident(name: str) -> str:
    """Map a valid name to an unquoted SQL identifier (hyphen to underscore; injective, names hold no `_`)."""
    problem = name_problem("identifier", name, reserved=False)
    if problem is not None:
        raise ValueError(problem)
    return name.replace("-", "_")
