"""Scheduled backups on a node: where they live, how they are named, listed and pruned (one rule for all).

    /etc/svcctl/backup/<instance>.json     what apply configured: {"engine", "instance", "keep", "database"
                                           (PostgreSQL, MariaDB) | "port" (Redis)}; root, 0600
    /etc/svcctl/backup/<instance>.auth     Redis only: the instance's admin password, read by the dump; 0600
    /etc/systemd/system/svcctl-backup-<instance>.{service,timer}   the unit pair apply writes
    /var/backups/svcctl/<instance>/<id>.<ext>      one dump (ext: dump, sql, rdb), root, 0600
    /var/backups/svcctl/<instance>/<id>.sha256     its checksum, as sha256sum writes it
    /var/backups/svcctl/<instance>/<id>.json       its result: {"id", "result": ok|failed, "size", "sha256", ...}

An id is the dump's start, UTC, `20261201T153000Z`. The backup program (`svcctl-backup.py`), the observe
fragment and the controller's checks all read these names from here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

CONFIG_DIR = "/etc/svcctl/backup"
BACKUP_ROOT = "/var/backups/svcctl"
UNIT_PREFIX = "svcctl-backup-"
EXTENSIONS = {"postgres": "dump", "mysql": "sql", "redis": "rdb"}
ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z"
_ID = re.compile(ID_PATTERN)
_INSTANCE = re.compile(r"[a-z](?:-?[a-z0-9])+")


def unit_name(instance: str, suffix: str) -> str:
    """`svcctl-backup-<instance>.<suffix>` (service or timer)."""
    return f"{UNIT_PREFIX}{instance}.{suffix}"


def instance_dir(instance: str, root: str = BACKUP_ROOT) -> str:
    """Where an instance's backups are kept; refuses a name svcctl would not make (it becomes a path)."""
    if not _INSTANCE.fullmatch(instance) or len(instance) > 24:
        raise ValueError(f"not an instance name: {instance!r}")
    return os.path.join(root, instance)


def is_backup_id(value: object) -> bool:
    """Whether `value` is a backup id (`20261201T153000Z`)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def read_config(instance: str, config_dir: str = CONFIG_DIR) -> dict[str, Any] | None:
    """The instance's backup configuration as apply wrote it, or None if there is none (or it is unreadable)."""
    path = os.path.join(config_dir, f"{instance}.json")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def configured(config_dir: str = CONFIG_DIR) -> list[str]:
    """The instances that have a backup configuration, by name."""
    try:
        names = os.listdir(config_dir)
    except OSError:
        return []
    found = [n[: -len(".json")] for n in names if n.endswith(".json")]
    return sorted(n for n in found if _INSTANCE.fullmatch(n))


def list_backups(instance: str, root: str = BACKUP_ROOT) -> list[dict[str, Any]]:
    """Each backup's result document, oldest first; a dump with no result yet (one being made) is left out."""
    directory = instance_dir(instance, root)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        ident = name[: -len(".json")]
        if not name.endswith(".json") or not is_backup_id(ident):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {"result": "unreadable"}
        if isinstance(doc, dict):
            doc["id"] = ident
            out.append(doc)
    return out


def to_prune(backups: list[dict[str, Any]], keep: int) -> list[str]:
    """The ids to delete so that the newest `keep` good backups stay, and no failure older than the oldest
    of them (a failure newer than every good one stays, to be seen)."""
    good = [b["id"] for b in backups if b.get("result") == "ok"]
    kept = set(good[-keep:]) if keep > 0 else set()
    oldest = min(kept) if kept else None
    out = []
    for b in backups:
        ident = b["id"]
        if ident in kept:
            continue
        if b.get("result") == "ok" or (oldest is not None and ident < oldest):
            out.append(ident)
    return out


# --- what a dump holds: its tables and their rows (a restore drill compares a restored instance with them) ---

_COPY = re.compile(r"COPY (.+?) +(?:\(.*\) +)?FROM stdin;\Z")  # a quoted name may hold spaces
_MYSQL_TABLE = re.compile(r"CREATE TABLE `((?:[^`]|``)+)` \(")
_MYSQL_INSERT = re.compile(r"INSERT INTO `((?:[^`]|``)+)` VALUES\s*")


def copy_counts(lines: Iterable[str]) -> dict[str, int]:
    """Rows per table of `pg_restore --data-only -f -` output: each `COPY schema.table ... FROM stdin;`
    block's lines up to its `\\.` (COPY data never holds a raw newline). Tables as pg_dump names them."""
    counts: dict[str, int] = {}
    table = None
    for line in lines:
        line = line.rstrip("\n")
        if table is not None:
            if line == "\\.":
                table = None
            else:
                counts[table] += 1
            continue
        m = _COPY.match(line)
        if m:
            table = m[1]
            counts.setdefault(table, 0)
    return counts


def insert_counts(lines: Iterable[str]) -> dict[str, int]:
    """Rows per table of a mariadb-dump: every `CREATE TABLE` counts 0, each extended `INSERT INTO ... VALUES`
    adds its tuples, on its own line (`(...),(...);`) or on the lines after it, one tuple each (MariaDB 10.11's
    dump), counted outside quoted strings (backslash escapes, doubled quotes) up to the statement's `;`."""
    counts: dict[str, int] = {}
    table = None
    for line in lines:
        if table is None:
            m = _MYSQL_TABLE.match(line)
            if m:
                counts.setdefault(m[1].replace("``", "`"), 0)
                continue
            m = _MYSQL_INSERT.match(line)
            if not m:
                continue
            table, line = m[1].replace("``", "`"), line[m.end() :]
        found, ended = _tuples(line)
        counts[table] = counts.get(table, 0) + found
        if ended:
            table = None
    return counts


def _tuples(values: str) -> tuple[int, bool]:
    """How many `(...)` tuples a piece of a VALUES list opens at depth 0, and whether the statement's `;` ends
    it there, quotes and escapes respected."""
    count, depth, quote, escaped = 0, 0, "", False
    for char in values:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""  # a doubled quote closes and reopens: the same count
            continue
        if char in "'\"":
            quote = char
        elif char == "(":
            if depth == 0:
                count += 1
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == ";" and depth == 0:
            return count, True
    return count, False
