"""svcctl's Redis ACL rules, by role and Redis major version: one table for apply, the tunnel and observe.

Redis 7 gives a new user no pub/sub channel unless its rules say `&*`; Redis 6.0 (Debian 11, Ubuntu 22.04)
does not know `&` at all (an ACL file holding it does not load) and lets every user use every channel.
So a Redis 6 user gets the same rules without `&*`, which mean the same there.

`backup` is each instance's scheduled-backup user (`svcctl_backup`, svcctl.hostlib.backups.REDIS_BACKUP_USER):
no keys, no channels, and only the commands a dump needs (BGSAVE, LASTSAVE to see it finish, INFO for whether
it failed, PING). Redis 6.0 knows no `resetchannels` either; there `-@all` already keeps it from every pub/sub
command.
"""

from __future__ import annotations

_RULES = {
    "admin": ("~*", "&*", "+@all"),
    "readwrite": ("~*", "&*", "+@all", "-@admin", "-@dangerous"),
    "readonly": ("~*", "&*", "-@all", "+@read", "+@connection", "-@admin", "-@dangerous"),
    "backup": ("resetkeys", "resetchannels", "-@all", "+bgsave", "+lastsave", "+info", "+ping"),
}
_NOT_IN_REDIS_6 = ("&*", "resetchannels")

ACL_ROLES = ("readwrite", "readonly")


def redis_major(version: object) -> int | None:
    """The major of a Redis version as svcctl meets it (`7`, `6.0.16`, `5:7.0.15-1~deb12u1`), or None."""
    text = str(version or "").split(":", 1)[-1]
    head = text.split(".", 1)[0].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def acl_rules(role: str, major: object = None) -> tuple[str, ...]:
    """The rules of `role` (admin, readwrite, readonly, backup) for Redis `major` (unknown: the newest form)."""
    rules = _RULES[role]
    found = redis_major(major)
    if found is not None and found < 7:
        rules = tuple(rule for rule in rules if rule not in _NOT_IN_REDIS_6)
    return rules
