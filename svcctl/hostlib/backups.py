"""Scheduled backups on a node: where they live, how they are named, listed and pruned (one rule for all).

    /etc/svcctl/backup/<instance>.json     what apply configured: {"engine", "instance", "keep", "database"
                                           (PostgreSQL, MariaDB) | "port" (Redis)}; root, 0600
    /etc/credstore.encrypted/svcctl-backup-<instance>   Redis only, systemd >= 250: the password of the
                                           instance's backup user (svcctl_backup), encrypted with the host key
                                           (systemd-creds --with-key=host); the service loads it with
                                           LoadCredentialEncrypted= and the dump reads $CREDENTIALS_DIRECTORY
    /etc/credstore/svcctl-backup-<instance>     the same on systemd 247 (Debian 11), plain, root 0600, with
                                           LoadCredential=; the user can only BGSAVE, never read a key
    /etc/systemd/system/svcctl-backup-<instance>.{service,timer}   the unit pair apply writes
    /var/backups/svcctl/<instance>/<id>.<ext>      one dump (ext: dump, sql, rdb), root, 0600
    /var/backups/svcctl/<instance>/<id>.sha256     its checksum, as sha256sum writes it
    /var/backups/svcctl/<instance>/<id>.json       its result: {"id", "result": ok|failed, "size", "sha256", ...}

An id is the dump's start, UTC, `20261201T153000Z`. The backup program (`svcctl-backup.py`), the observe
fragment and the controller's checks all read these names from here. (Earlier, the Redis dump read
the instance's admin password from /etc/svcctl/backup/<instance>.auth; apply removes that file, LEGACY_AUTH.)

A restore drill of a Redis backup counts the keys of each database the RDB holds (`rdb_counts`: the header,
aux fields and every key walked, each database's RESIZEDB sizes checked against what it holds) and compares
them with the restored instance's INFO keyspace.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable
from typing import IO, Any

CONFIG_DIR = "/etc/svcctl/backup"
BACKUP_ROOT = "/var/backups/svcctl"
UNIT_PREFIX = "svcctl-backup-"
EXTENSIONS = {"postgres": "dump", "mysql": "sql", "redis": "rdb"}
ID_PATTERN = r"[0-9]{8}T[0-9]{6}Z"
_ID = re.compile(ID_PATTERN)
_INSTANCE = re.compile(r"[a-z](?:-?[a-z0-9])+")
REDIS_BACKUP_USER = "svcctl_backup"
"""A Redis instance's backup user, in its ACL file (svcctl's own, like `default`: never a binding); its rules are
svcctl.hostlib.redis_acl's `backup`."""
CREDENTIAL = "svcctl-backup"
"""The systemd credential's name: the service loads it as $CREDENTIALS_DIRECTORY/svcctl-backup."""
CREDSTORE_ENCRYPTED = "/etc/credstore.encrypted"
CREDSTORE = "/etc/credstore"
LEGACY_AUTH = "/etc/svcctl/backup/{}.auth"
REDIS_CONF = "/etc/redis/redis-{}.conf"


def credential_paths(instance: str) -> dict[str, str]:
    """Where a Redis instance's backup credential lives: `encrypted` (systemd >= 250) or `plain` (247)."""
    instance_dir(instance)  # the name becomes a path: svcctl's names only
    name = f"{CREDENTIAL}-{instance}"
    return {"encrypted": os.path.join(CREDSTORE_ENCRYPTED, name), "plain": os.path.join(CREDSTORE, name)}


def redis_rdb_path(conf_lines: Iterable[str], conf_path: str = "the config file") -> str:
    """The RDB file a Redis config file names: its one `dir` line, joined with its `dbfilename` (default
    dump.rdb). Raises ValueError when it has no single `dir`, or a `dbfilename` with a `/` (Redis refuses one)."""
    dirs: list[str] = []
    names: list[str] = []
    for line in conf_lines:
        words = line.split(None, 1)
        if len(words) == 2 and words[0].lower() in ("dir", "dbfilename"):
            value = words[1].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            (dirs if words[0].lower() == "dir" else names).append(value)
    if len(dirs) != 1 or not dirs[0].startswith("/"):
        raise ValueError(f"{conf_path} has no single absolute dir line")
    name = names[-1] if names else "dump.rdb"
    if not name or "/" in name:
        raise ValueError(f"{conf_path} has an unusable dbfilename")
    return os.path.join(dirs[0], name)


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


# --- what a Redis RDB holds: its keys per database (a Redis restore drill compares them with INFO keyspace) ---


class RdbError(ValueError):
    """The file is not an RDB svcctl can read to the end (damaged, truncated, or a type it does not know)."""


_RDB_MAGIC = b"REDIS"
_RDB_MAX_VERSION = 12  # Redis 7.4/8.0 write 12; a newer file may hold types this reader does not know
_OP_SLOT_INFO, _OP_FUNCTION2, _OP_FUNCTION_PRE_GA, _OP_MODULE_AUX = 0xF4, 0xF5, 0xF6, 0xF7
_OP_IDLE, _OP_FREQ, _OP_AUX, _OP_RESIZEDB = 0xF8, 0xF9, 0xFA, 0xFB
_OP_EXPIRETIME_MS, _OP_EXPIRETIME, _OP_SELECTDB, _OP_EOF = 0xFC, 0xFD, 0xFE, 0xFF
_ONE_STRING = {9, 10, 11, 12, 13, 16, 17, 20}  # zipmap, ziplists, intset, listpacks: one blob each
_STRINGS = {1: 1, 2: 1, 4: 2, 14: 1}  # list, set, hash, quicklist: a length, then that many strings (x2: pairs)
_STREAMS = {15, 19, 21}
_MODULE_FIXED = {3: 4, 4: 8}  # a module value's FLOAT, DOUBLE: bytes; SINT, UINT (1, 2) a length; STRING (5); EOF 0


class _Rdb:
    """A cursor over an RDB stream: Redis's length and string encodings (rdb.c)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.offset = 0

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise RdbError(f"the file ends inside a record at byte {self.offset + len(data)} (truncated?)")
        self.offset += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            n -= len(self.take(min(n, 1 << 20)))

    def byte(self) -> int:
        return self.take(1)[0]

    def length(self) -> tuple[int, bool]:
        """(value, is_special): the 6-, 14-, 32- or 64-bit length, or a special string encoding's number."""
        first = self.byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return int(struct.unpack(">I", self.take(4))[0]), False
        if first == 0x81:
            return int(struct.unpack(">Q", self.take(8))[0]), False
        raise RdbError(f"unknown length encoding 0x{first:02x} at byte {self.offset - 1}")

    def count(self) -> int:
        value, special = self.length()
        if special:
            raise RdbError(f"a string encoding where a length belongs, at byte {self.offset - 1}")
        return value

    def string(self, keep: bool = True) -> bytes:
        """A string: raw, an int8/16/32 written as text, or LZF-compressed (decompressed only when kept)."""
        value, special = self.length()
        if not special:
            if keep:
                return self.take(value)
            self.skip(value)
            return b""
        if value in (0, 1, 2):
            size = (1, 2, 4)[value]
            return str(int.from_bytes(self.take(size), "little", signed=True)).encode()
        if value == 3:
            packed, size = self.count(), self.count()
            if not keep:
                self.skip(packed)
                return b""
            return lzf_decompress(self.take(packed), size)
        raise RdbError(f"unknown string encoding {value} at byte {self.offset - 1}")


def lzf_decompress(data: bytes, size: int) -> bytes:
    """liblzf's decompression (lzf_d.c), as Redis compresses strings; RdbError unless it yields `size` bytes."""
    out = bytearray()
    i = 0
    try:
        while i < len(data):
            ctrl = data[i]
            i += 1
            if ctrl < 32:  # a literal run of ctrl + 1 bytes
                run = data[i : i + ctrl + 1]
                if len(run) != ctrl + 1:
                    raise RdbError("an LZF literal runs past its string")
                out += run
                i += ctrl + 1
                continue
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            back = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if back < 0:
                raise RdbError("an LZF back reference points before the string")
            for _ in range(length + 2):  # byte by byte: a reference may overlap what it writes
                out.append(out[back])
                back += 1
    except IndexError:
        raise RdbError("an LZF string ends inside a back reference") from None
    if len(out) != size:
        raise RdbError(f"an LZF string decompresses to {len(out)} bytes, not the {size} it says")
    return bytes(out)


def _skip_module(r: _Rdb) -> None:
    """A module value or aux record in the self-describing form (module API v2): opcodes up to EOF (0)."""
    while True:
        opcode = r.count()
        if opcode == 0:
            return
        if opcode in (1, 2):
            r.count()
        elif opcode == 5:
            r.string(keep=False)
        elif opcode in _MODULE_FIXED:
            r.skip(_MODULE_FIXED[opcode])
        else:
            raise RdbError(f"unknown module value opcode {opcode} at byte {r.offset}")


def _skip_stream(r: _Rdb, kind: int) -> None:
    for _ in range(r.count()):  # listpacks: master id, listpack
        r.string(keep=False)
        r.string(keep=False)
    r.count()  # length
    r.count(), r.count()  # last id
    if kind >= 19:
        for _ in range(5):  # first id, max deleted id, entries added
            r.count()
    for _ in range(r.count()):  # consumer groups
        r.string(keep=False)
        r.count(), r.count()  # last delivered id
        if kind >= 19:
            r.count()  # entries read
        for _ in range(r.count()):  # pending entries: raw id, delivery time, delivery count
            r.skip(16 + 8)
            r.count()
        for _ in range(r.count()):  # consumers: name, seen time, (active time), their pending ids
            r.string(keep=False)
            r.skip(8 if kind < 21 else 16)
            r.skip(16 * r.count())


def _skip_value(r: _Rdb, kind: int) -> None:
    """One value of type `kind`, read past without keeping it."""
    if kind == 0 or kind in _ONE_STRING:
        r.string(keep=False)
    elif kind in _STRINGS:
        for _ in range(r.count() * _STRINGS[kind]):
            r.string(keep=False)
    elif kind == 3:  # zset: member, score as a length-prefixed text (253-255: nan, +inf, -inf)
        for _ in range(r.count()):
            r.string(keep=False)
            size = r.byte()
            if size < 253:
                r.skip(size)
    elif kind == 5:  # zset: member, binary double
        for _ in range(r.count()):
            r.string(keep=False)
            r.skip(8)
    elif kind == 18:  # quicklist 2: nodes of (container, blob)
        for _ in range(r.count()):
            r.count()
            r.string(keep=False)
    elif kind in _STREAMS:
        _skip_stream(r, kind)
    elif kind == 7:
        r.count()  # module id
        _skip_module(r)
    else:
        raise RdbError(f"a value of type {kind}, which this reader does not know, at byte {r.offset - 1}")


def rdb_counts(f: IO[bytes]) -> dict[str, Any]:
    """What an RDB holds: {"version", "aux": {name: text}, "dbs": {"db0": {"keys", "volatile"}, ...}}, every key
    walked (`volatile`: those with an expire time) and each database's RESIZEDB sizes checked against it."""
    r = _Rdb(f)
    head = r.take(9)
    if head[:5] != _RDB_MAGIC or not head[5:].isdigit():
        raise RdbError("not an RDB file (no REDIS header)")
    version = int(head[5:])
    if not 1 <= version <= _RDB_MAX_VERSION:
        raise RdbError(f"RDB version {version} is newer than this reader knows ({_RDB_MAX_VERSION})")
    aux: dict[str, str] = {}
    dbs: dict[str, dict[str, int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    db: dict[str, int] | None = None
    current = ""
    volatile = False
    while True:
        kind = r.byte()
        if kind == _OP_EOF:
            break
        if kind == _OP_AUX:
            name = r.string().decode("utf-8", "replace")
            aux[name] = r.string().decode("utf-8", "replace")
        elif kind in (_OP_FUNCTION2, _OP_FUNCTION_PRE_GA):
            r.string(keep=False)  # a function library's code
        elif kind == _OP_MODULE_AUX:
            r.count(), r.count(), r.count()  # module id, when opcode, when
            _skip_module(r)
        elif kind == _OP_SELECTDB:
            current = f"db{r.count()}"
            if current in dbs:
                raise RdbError(f"{current} is selected twice")
            db = dbs[current] = {"keys": 0, "volatile": 0}
        elif kind == _OP_RESIZEDB:
            if db is None:
                raise RdbError("a RESIZEDB before any SELECTDB")
            sizes[current] = (r.count(), r.count())
        elif kind == _OP_SLOT_INFO:
            r.count(), r.count(), r.count()
        elif kind == _OP_EXPIRETIME_MS:
            r.skip(8)
            volatile = True
        elif kind == _OP_EXPIRETIME:
            r.skip(4)
            volatile = True
        elif kind == _OP_FREQ:
            r.skip(1)
        elif kind == _OP_IDLE:
            r.count()
        else:
            if db is None:
                raise RdbError(f"a key before any SELECTDB, at byte {r.offset - 1}")
            r.string(keep=False)  # the key
            _skip_value(r, kind)
            db["keys"] += 1
            db["volatile"] += volatile
            volatile = False
    if version >= 5:
        r.take(8)  # its CRC64 (the dump's sha256 is what svcctl checks)
    if f.read(1):
        raise RdbError("bytes after the RDB's end")
    for name, (keys, expires) in sizes.items():
        if (keys, expires) != (dbs[name]["keys"], dbs[name]["volatile"]):
            raise RdbError(
                f"{name}: RESIZEDB says {keys} keys ({expires} with a TTL), the file holds {dbs[name]['keys']} "
                f"({dbs[name]['volatile']})"
            )
    return {"version": version, "aux": aux, "dbs": dbs}
