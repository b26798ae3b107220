# svcctl backup program (svcctl-backup.py): dump one instance into /var/backups/svcctl/<instance>/, as root.
#
#     svcctl-backup.py run INSTANCE    (what svcctl-backup-INSTANCE.service runs): dump, checksum, result, keep N
#     svcctl-backup.py list INSTANCE   each backup's result, as JSON (what `svcctl backups` reads)
#     svcctl-backup.py restore         (request as JSON on stdin, from `svcctl restore`): check a backup's
#                                      checksum, say whether the target holds data, or restore it into the target,
#                                      or (`verify`) count each table's rows (Redis: each database's keys) in
#                                      the dump and in the target
#
# PostgreSQL: pg_dump -Fc as the postgres user over the socket; MariaDB: mariadb-dump --single-transaction as
# root over the socket; Redis: BGSAVE over 127.0.0.1 as the instance's backup user svcctl_backup (which may
# only BGSAVE, LASTSAVE, INFO and PING; its password is the service's systemd credential, read from
# $CREDENTIALS_DIRECTORY and sent on the socket only), waited for, then a copy of the RDB its config file
# names. A dump is written to a hidden temporary file and renamed once complete, then its .sha256 and last its
# .json result. Python 3.9+, stdlib.
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from svcctl.hostlib.backups import (
    CREDENTIAL,
    EXTENSIONS,
    REDIS_BACKUP_USER,
    REDIS_CONF,
    RdbError,
    copy_counts,
    insert_counts,
    instance_dir,
    is_backup_id,
    list_backups,
    rdb_counts,
    read_config,
    redis_rdb_path,
    to_prune,
)

DUMP_TIMEOUT = 6 * 3600
BGSAVE_TIMEOUT = 3600


class BackupFailed(Exception):
    """The dump could not be made; its message goes into the result document."""


def _stream(argv, path, user=None, timeout=DUMP_TIMEOUT):
    """Run argv (as `user` through runuser) with its stdout written to `path`; raise BackupFailed on failure."""
    words = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    with open(path, "wb") as out:
        try:
            done = subprocess.run(
                words, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout, cwd="/"
            )
        except FileNotFoundError as exc:
            raise BackupFailed(f"{words[0]} is not installed: {exc}") from None
        except subprocess.TimeoutExpired:
            raise BackupFailed(f"{argv[0]} did not finish within {timeout} s") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-400:]
        raise BackupFailed(f"{argv[0]} exited with {done.returncode}: {tail}")


def dump_postgres(config, path):
    """pg_dump -Fc of the instance's database, as the postgres user over the local socket."""
    _stream(["pg_dump", "-Fc", "--", config["database"]], path, user="postgres")


def dump_mysql(config, path):
    """mariadb-dump of the instance's database in one consistent snapshot, as root over the socket."""
    _stream(["mariadb-dump", "--single-transaction", "--routines", "--triggers", "--", config["database"]], path)


def _resp(words):
    """One RESP command (a list of bytes)."""
    out = b"*%d\r\n" % len(words)
    for w in words:
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out


def _reply(f):
    """Read one RESP reply from a socket file: str, int, None, a list, or RedisError's message as BackupFailed."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise BackupFailed("Redis closed the connection")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise BackupFailed(f"Redis answered {body.decode('utf-8', 'replace')[:200]}")
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = f.read(size + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_reply(f) for _ in range(count)]
    raise BackupFailed("Redis sent an unreadable reply")


def _redis_ask(f, sock, *words):
    sock.sendall(_resp([w.encode() for w in words]))
    return _reply(f)


def _redis_info(f, sock):
    text = _redis_ask(f, sock, "INFO", "persistence") or ""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _backup_password():
    """The backup user's password, from the systemd credential the service loads (never a path of svcctl's)."""
    where = os.environ.get("CREDENTIALS_DIRECTORY")
    if not where:
        raise BackupFailed(f"no systemd credential {CREDENTIAL}: run the backup through its service (svcctl backup),"
                           " and apply again if the service has no LoadCredential line")  # fmt: skip
    try:
        with open(os.path.join(where, CREDENTIAL), encoding="utf-8") as secret:
            return secret.read().strip()
    except OSError as exc:
        raise BackupFailed(f"cannot read the systemd credential {CREDENTIAL} ({exc.strerror}); apply again") from None


def _rdb_path(instance):
    """The instance's RDB file, from its own config file (dir and dbfilename)."""
    path = REDIS_CONF.format(instance)
    try:
        with open(path, encoding="utf-8") as f:
            return redis_rdb_path(f, path)
    except ValueError as exc:
        raise BackupFailed(str(exc)) from None


def dump_redis(config, path):
    """BGSAVE (waited for) as the instance's backup user, then a copy of the RDB it wrote. Only the password
    goes over the socket; the user may run BGSAVE, LASTSAVE, INFO and PING, and read no key."""
    password = _backup_password()
    rdb = _rdb_path(config["instance"])
    with socket.create_connection(("127.0.0.1", int(config["port"])), timeout=60) as sock:
        f = sock.makefile("rb")
        _redis_ask(f, sock, "AUTH", REDIS_BACKUP_USER, password)
        before = _redis_ask(f, sock, "LASTSAVE")
        # LASTSAVE counts seconds: a save finishing in the second of the previous one would not be told apart
        settle = time.monotonic() + 2
        while int(time.time()) <= before and time.monotonic() < settle:
            time.sleep(0.05)
        try:
            _redis_ask(f, sock, "BGSAVE")
        except BackupFailed as exc:
            if "in progress" not in str(exc):
                raise
        deadline = time.monotonic() + BGSAVE_TIMEOUT
        while True:
            info = _redis_info(f, sock)
            if info.get("rdb_bgsave_in_progress") == "0" and _redis_ask(f, sock, "LASTSAVE") > before:
                break
            if info.get("rdb_bgsave_in_progress") == "0" and info.get("rdb_last_bgsave_status") == "err":
                raise BackupFailed("BGSAVE failed: rdb_last_bgsave_status is err (see the instance's journal)")
            if time.monotonic() > deadline:
                raise BackupFailed(f"BGSAVE did not finish within {BGSAVE_TIMEOUT} s")
            time.sleep(0.2)
        if info.get("rdb_last_bgsave_status") != "ok":
            raise BackupFailed(f"BGSAVE failed: rdb_last_bgsave_status is {info.get('rdb_last_bgsave_status')}")
    shutil.copyfile(rdb, path)


DUMPS = {"postgres": dump_postgres, "mysql": dump_mysql, "redis": dump_redis}


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path, text):
    """Write a small file atomically (temp file, fsync, rename), root-only."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def run(instance):
    """Make one backup of `instance`, record its result, prune to `keep`; return 0 if it succeeded."""
    config = read_config(instance)
    if config is None or config.get("engine") not in DUMPS:
        print(f"svcctl-backup: no backup is configured for {instance}", file=sys.stderr)
        return 2
    directory = instance_dir(instance)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    started = _now()
    ident = started.strftime("%Y%m%dT%H%M%SZ")
    while os.path.exists(os.path.join(directory, f"{ident}.json")):  # two in one second
        time.sleep(1)
        started = _now()
        ident = started.strftime("%Y%m%dT%H%M%SZ")
    name = f"{ident}.{EXTENSIONS[config['engine']]}"
    final = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.tmp")
    result = {"id": ident, "instance": instance, "engine": config["engine"], "file": name,
              "started_at": started.isoformat(timespec="seconds")}  # fmt: skip
    old_umask = os.umask(0o077)
    try:
        DUMPS[config["engine"]](config, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
        digest = _sha256(final)
        _write(os.path.join(directory, f"{ident}.sha256"), f"{digest}  {name}\n")
        result.update(result="ok", size=os.path.getsize(final), sha256=digest)
    except (BackupFailed, OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        result.update(result="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        for leftover in (tmp, final):
            if os.path.exists(leftover):
                os.unlink(leftover)
    finally:
        os.umask(old_umask)
    result["finished_at"] = _now().isoformat(timespec="seconds")
    _write(os.path.join(directory, f"{ident}.json"), json.dumps(result, sort_keys=True) + "\n")
    keep = config.get("keep")
    if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 1:
        for old in to_prune(list_backups(instance), keep):
            for suffix in (".json", ".sha256", *(f".{ext}" for ext in EXTENSIONS.values())):
                path = os.path.join(directory, old + suffix)
                if os.path.exists(path):
                    os.unlink(path)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["result"] == "ok" else 1


_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PASSWORD = re.compile(r"[A-Za-z0-9_-]{32}")  # svcctl's derived passwords


class BadRestore(Exception):
    """A restore request svcctl would not send, or a backup that fails its checksum."""


def checked_restore(req):
    """The restore request, each field checked: instance names, id, engine, identifiers (decide, then do)."""
    if not isinstance(req, dict) or req.get("engine") not in EXTENSIONS:
        raise BadRestore("not a restore request")
    for key in ("source", "target"):
        name = req.get(key)
        instance_dir(name if isinstance(name, str) else "")
    if not is_backup_id(req.get("id")):
        raise BadRestore("not a backup id")
    password = req.get("admin_password")
    if (
        req["engine"] == "redis"
        and req.get("verify")
        and not (isinstance(password, str) and _PASSWORD.fullmatch(password))
    ):
        raise BadRestore("a Redis drill needs its target's admin password")
    if req["engine"] in ("postgres", "mysql"):
        for key in ("database", "owner") if req["engine"] == "postgres" else ("database",):
            if not isinstance(req.get(key), str) or not _IDENT.fullmatch(req[key]):
                raise BadRestore(f"{key} is not an identifier")
    return req


def backup_file(req):
    """The backup's path, once its sha256 matches its checksum file."""
    name = f"{req['id']}.{EXTENSIONS[req['engine']]}"
    directory = instance_dir(req["source"])
    path = os.path.join(directory, name)
    try:
        with open(os.path.join(directory, f"{req['id']}.sha256"), encoding="utf-8") as f:
            recorded = f.read().split()
    except OSError as exc:
        raise BadRestore(f"backup {req['id']} has no checksum file: {exc}") from None
    if len(recorded) != 2 or recorded[1] != name or not os.path.exists(path):
        raise BadRestore(f"backup {req['id']}: its dump or checksum file is missing or not svcctl's")
    if _sha256(path) != recorded[0]:
        raise BadRestore(f"backup {req['id']}: its sha256 does not match its checksum file; it is damaged")
    return path


def _sql(argv, user=None):
    words = ["runuser", "-u", user, "--", *argv] if user else list(argv)
    done = subprocess.run(words, capture_output=True, text=True, timeout=300, cwd="/")
    if done.returncode != 0:
        raise BackupFailed(f"{argv[0]} exited with {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout.strip()


def has_data(req):
    """Whether the target holds anything a restore would replace (Redis: its data file has keys or is unknown)."""
    engine, db = req["engine"], req.get("database")
    if engine == "postgres":
        sql = ("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN"
               " ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND c.relkind IN"
               " ('r', 'p', 'v', 'm', 'S', 'f')")  # fmt: skip
        return int(_sql(["psql", "-XAtq", "-d", db, "-c", sql], user="postgres") or "0") > 0
    if engine == "mysql":
        sql = f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{db}'"  # db: an identifier
        return int(_sql(["mariadb", "-N", "-B", "-e", sql]) or "0") > 0
    path = _rdb_path(req["target"])
    return not os.path.exists(path) or os.path.getsize(path) > 0


def restore(req, path):
    """Restore the checked backup at `path` into the target (its bindings' users and grants are untouched)."""
    engine, target = req["engine"], req["target"]
    if engine == "postgres":
        # As the instance's owner role, so every restored object is the owner's, as svcctl's grants expect.
        argv = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-acl", "--exit-on-error",
                f"--role={req['owner']}", "-d", req["database"]]  # fmt: skip
        _feed(["runuser", "-u", "postgres", "--", *argv], path)
    elif engine == "mysql":
        _feed(["mariadb", "--", req["database"]], path)
    else:
        unit = f"redis-server@{target}.service"
        rdb = _rdb_path(target)
        _sql(["systemctl", "stop", unit])
        try:
            tmp = os.path.join(os.path.dirname(rdb), ".svcctl-restore.rdb")
            shutil.copyfile(path, tmp)
            shutil.chown(tmp, "redis", "redis")
            os.chmod(tmp, 0o660)
            os.replace(tmp, rdb)
        finally:
            _sql(["systemctl", "start", unit])


# The restored instance's tables and rows, named as the dump names them (pg_dump: quote_ident of each part).
PG_COUNTS_SQL = (
    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name), (xpath('/row/c/text()', query_to_xml("
    "format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)
_MYSQL_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}")  # a table name that can be named in SQL as it is


def expected_counts(req, path):
    """Rows per table the dump at `path` holds: its COPY blocks (PostgreSQL) or INSERT tuples (MariaDB); keys per
    database (Redis: every key of the RDB walked), with `volatile` the keys of each that have a TTL."""
    if req["engine"] == "redis":
        try:
            with open(path, "rb") as f:
                dbs = rdb_counts(f)["dbs"]
        except RdbError as exc:
            raise BackupFailed(f"the backup's RDB is unreadable: {exc}") from None
        return {n: d["keys"] for n, d in dbs.items()}, {n: d["volatile"] for n, d in dbs.items()}
    if req["engine"] == "postgres":
        proc = subprocess.Popen(["pg_restore", "--data-only", "-f", "-", path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", cwd="/")  # fmt: skip
        assert proc.stdout is not None
        counts = copy_counts(proc.stdout)
        _, err = proc.communicate(timeout=DUMP_TIMEOUT)
        if proc.returncode != 0:
            raise BackupFailed(f"pg_restore could not read the dump ({proc.returncode}): {err.strip()[-400:]}")
        return counts, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        return insert_counts(f), {}


REDIS_LOAD_TIMEOUT = 600


def _redis_keyspace(req):
    """Keys per database of the restored Redis target, from INFO keyspace, asked as its admin (the drill's
    request carries the password on stdin); a target still loading its data is waited for."""
    port = _redis_port(req["target"])
    deadline = time.monotonic() + REDIS_LOAD_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        f = sock.makefile("rb")
        _redis_ask(f, sock, "AUTH", "default", req["admin_password"])
        while True:
            try:
                text = _redis_ask(f, sock, "INFO", "keyspace") or ""
                break
            except BackupFailed as exc:
                if "LOADING" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    out = {}
    for line in text.splitlines():
        name, _, fields = line.partition(":")
        if re.fullmatch(r"db[0-9]{1,5}", name):
            values = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
            out[name] = int(values.get("keys", "-1"))
    return out


def _redis_port(instance):
    """The instance's port, from its config file's one `port` line."""
    with open(REDIS_CONF.format(instance), encoding="utf-8") as f:
        ports = [ln.split()[1] for ln in f if ln.startswith("port ") and len(ln.split()) == 2]
    if len(ports) != 1 or not ports[0].isdigit() or not 0 < int(ports[0]) < 65536:
        raise BackupFailed(f"{REDIS_CONF.format(instance)} has no single port line")
    return int(ports[0])


def actual_counts(req):
    """Rows per table of the restored target, named as in `expected_counts` (Redis: keys per database)."""
    if req["engine"] == "redis":
        return _redis_keyspace(req)
    db = req["database"]
    if req["engine"] == "postgres":
        out = _sql(["psql", "-XAtq", "-F", "\t", "-d", db, "-c", PG_COUNTS_SQL], user="postgres")
        return {name: int(n) for name, n in (line.split("\t") for line in out.splitlines() if line)}
    sql = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' AND table_type = 'BASE TABLE'"
    names = [n for n in _sql(["mariadb", "-N", "-B", "-e", sql]).splitlines() if n]
    counts = {n: -1 for n in names if not _MYSQL_NAME.fullmatch(n)}  # -1: cannot be counted, so never matches
    countable = [n for n in names if _MYSQL_NAME.fullmatch(n)]
    if countable:
        union = " UNION ALL ".join(f"SELECT '{n}', COUNT(*) FROM `{db}`.`{n}`" for n in countable)
        for line in _sql(["mariadb", "-N", "-B", "-e", union]).splitlines():
            name, n = line.split("\t")
            counts[name] = int(n)
    return counts


def _feed(argv, path):
    with open(path, "rb") as f:
        done = subprocess.run(argv, stdin=f, capture_output=True, timeout=DUMP_TIMEOUT, cwd="/")
    if done.returncode != 0:
        raise BackupFailed(f"{argv[0]} exited with {done.returncode}: {done.stderr.decode('utf-8', 'replace')[-600:]}")


def restore_main():
    """`restore`: the request on stdin; prints {"has_data": ...} (check) or {"restored": id} as JSON."""
    try:
        req = checked_restore(json.load(sys.stdin))
        path = backup_file(req)
        if req.get("verify"):
            expected, volatile = expected_counts(req, path)
            out = {"expected": expected, "actual": actual_counts(req)}
            if req["engine"] == "redis":
                out["volatile"] = volatile
        elif req.get("check"):
            out = {"has_data": has_data(req)}
        else:
            restore(req, path)
            out = {"restored": req["id"]}
    except (BadRestore, BackupFailed, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"svcctl-backup: {exc}", file=sys.stderr)
        sys.exit(1)
    json.dump(out, sys.stdout)


def main():
    verb, instance = [*sys.argv[1:3], "", ""][:2]
    if verb == "restore":
        restore_main()
        return
    try:
        instance_dir(instance)
    except ValueError as exc:
        print(f"svcctl-backup: {exc}", file=sys.stderr)
        sys.exit(2)
    if verb == "run":
        sys.exit(run(instance))
    if verb == "list":
        json.dump({"backups": list_backups(instance), "configured": read_config(instance) is not None},
                  sys.stdout, sort_keys=True)  # fmt: skip
        return
    print(f"svcctl-backup: unknown verb {verb!r}; use run or list", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
