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
import contextlib
import json
import os
import re
import sys
import tempfile

from svcctl.hostlib.redis_acl import acl_rules
from svcctl.hostlib.registry import change_one, read_registry
from svcctl.hostlib.run import sh
from svcctl.hostlib.verifiers import mysql_native_hash, redis_acl_digest, scram_verifier

MYSQL_PRIVILEGES = {
    "readwrite": "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, "
    "CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER",
    "readonly": "SELECT, SHOW VIEW",
}
MYSQL_HOSTS = ("127.0.0.1", "localhost")
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


# --- checking the request, quoting --------------------------------------------------------------------


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


def pg_ident(name):
    """A PostgreSQL quoted identifier ("name"); only checked identifiers, so it means what the bare name does."""
    return '"' + ident(name).replace('"', '""') + '"'


def pg_literal(value):
    """A PostgreSQL string literal meaning exactly `value` whatever standard_conforming_strings is: quotes
    doubled, and with a backslash the E'' form with backslashes doubled (as PostgreSQL's quote_literal)."""
    _text(value, "literal")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def my_ident(name):
    """A MariaDB quoted identifier (`name`)."""
    return "`" + ident(name).replace("`", "``") + "`"


def my_literal(value):
    """A MariaDB string literal meaning exactly `value`: quotes doubled; a backslash, whose meaning depends
    on sql_mode (NO_BACKSLASH_ESCAPES), is refused."""
    _text(value, "literal")
    if "\\" in value:
        raise BadRequest(f"refusing MariaDB literal {value!r}: it holds a backslash")
    return "'" + value.replace("'", "''") + "'"


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


# --- postgres ------------------------------------------------------------------------------------------


_PG_PORT: "list[str]" = []


def pg_port():
    """The port of the newest main cluster (asked once). `pg_lsclusters --no-header` (Ver Cluster Port Status
    ...), not --json: Debian 11's postgresql-common needs libjson-perl for JSON, which a node need not have."""
    if _PG_PORT:
        return _PG_PORT[0]
    mains = []
    for line in run(["pg_lsclusters", "--no-header"]).splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "main" and fields[0].isdigit() and fields[2].isdigit():
            mains.append((int(fields[0]), fields[2]))
    if not mains:
        fail("no PostgreSQL main cluster on this node")
    _PG_PORT.append(max(mains)[1])
    return _PG_PORT[0]


def psql(sql, database="postgres"):
    return run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", pg_port(), "-d", database], stdin=sql, user="postgres")


def pg_create_sql(user, database, verifier, expires_at, role):
    """[(database to run in, SQL)] creating a session user: login, connect, and the role's privileges."""
    u, owner = pg_ident(user), pg_ident(database + "_owner")
    sql = (
        f"CREATE ROLE {u} LOGIN PASSWORD {pg_literal(verifier)} VALID UNTIL {pg_literal(expires_at)} "
        f"CONNECTION LIMIT 16;\nGRANT CONNECT, TEMPORARY ON DATABASE {pg_ident(database)} TO {u};\n"
    )
    if role == "readwrite":
        sql += f"GRANT {owner} TO {u};\nALTER ROLE {u} SET role = {pg_literal(ident(database + '_owner'))};\n"
        return [("postgres", sql)]
    grants = (
        f"GRANT USAGE ON SCHEMA public TO {u};\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO {u};\n"
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {u};\n"
    )
    return [("postgres", sql), (ident(database), grants)]


def pg_find_sql(user, database):
    """One line `<roles named user> <databases named database>`."""
    return (
        f"SELECT (SELECT count(*) FROM pg_roles WHERE rolname = {pg_literal(ident(user))}) || ' ' || "
        f"(SELECT count(*) FROM pg_database WHERE datname = {pg_literal(ident(database))});"
    )


def pg_terminate_sql(user):
    return f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {pg_literal(ident(user))};"


def pg_reassign_sql(user, database):
    """Run in the database: what the user owns goes to the instance's owner role, then its grants go."""
    u = pg_ident(user)
    return f"REASSIGN OWNED BY {u} TO {pg_ident(database + '_owner')};\nDROP OWNED BY {u};\n"


def pg_drop_role_sql(user):
    return f"DROP ROLE IF EXISTS {pg_ident(user)};"


def pg_create(req):
    verifier = scram_verifier(req["password"])
    attrs = req["attrs"]
    for database, sql in pg_create_sql(req["user"], req["database"], verifier, attrs["expires_at"], attrs["role"]):
        psql(sql, database)


def pg_drop(req):
    user, db = req["user"], req["database"]
    found = psql(pg_find_sql(user, db)).split()
    if found[0] == "0":
        return
    psql(pg_terminate_sql(user))
    if found[1] != "0":
        psql(pg_reassign_sql(user, db), db)
    psql(pg_drop_role_sql(user))


# --- mysql (MariaDB) ------------------------------------------------------------------------------------


def mariadb(sql):
    return run(["mariadb", "--batch", "--skip-column-names", "--protocol=socket", "--user=root"], stdin=sql)


def my_account(user, host):
    """`'user'@'host'`."""
    return f"{my_literal(ident(user))}@{my_literal(host)}"


def my_create_sql(user, database, digest, role):
    """SQL creating a session user at each loopback host, with the role's privileges on the database."""
    if not re.match(r"\*[0-9A-F]{40}\Z", digest):
        raise BadRequest("refusing a mysql_native_password hash that is not * and 40 hex digits")
    privileges = MYSQL_PRIVILEGES[role]  # svcctl's own words, never the request's
    sql = ""
    for host in MYSQL_HOSTS:
        account = my_account(user, host)
        sql += f"CREATE USER {account} IDENTIFIED BY PASSWORD {my_literal(digest)} WITH MAX_USER_CONNECTIONS 16;\n"
        sql += f"GRANT {privileges} ON {my_ident(database)}.* TO {account};\n"
    return sql


def my_find_sql(user):
    return f"SELECT count(*) FROM mysql.user WHERE User = {my_literal(ident(user))};"


def my_processlist_sql(user):
    return f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = {my_literal(ident(user))};"


def my_drop_sql(user, ids):
    """Kill the user's connections (ids as the process list gave them; only numbers), then drop it."""
    kills = "".join(f"KILL CONNECTION {int(i)};\n" for i in ids if i.isdigit())
    return kills + f"DROP USER IF EXISTS {', '.join(my_account(user, h) for h in MYSQL_HOSTS)};\n"


def my_create(req):
    digest = mysql_native_hash(req["password"])
    mariadb(my_create_sql(req["user"], req["database"], digest, req["attrs"]["role"]))


def my_drop(req):
    user = req["user"]
    if mariadb(my_find_sql(user)).strip() == "0":
        return
    ids = mariadb(my_processlist_sql(user)).split()
    mariadb(my_drop_sql(user, ids))


# --- redis ----------------------------------------------------------------------------------------------


def redis_conf(instance):
    """(port, aclfile) of an instance from /etc/redis/redis-<name>.conf."""
    conf = {}
    with open(f"/etc/redis/redis-{_matching(NAME_RE, instance, 'instance')}.conf") as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] in ("port", "aclfile"):
                conf[words[0]] = words[1]
    if "aclfile" not in conf:
        fail(f"redis instance {instance} has no aclfile")
    return conf.get("port", "6379"), conf["aclfile"]


def redis_cli(port, admin_password, *args):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDISCLI_AUTH": admin_password}
    out = run(["redis-cli", "-h", "127.0.0.1", "-p", port, "--no-auth-warning", *args], env=env).strip()
    if out.startswith(("ERR", "WRONGPASS", "NOAUTH", "NOPERM")):
        fail(f"redis-cli {args[0]} {args[1]}: {out}")
    return out


def acl_rewrite(path, user, line):
    """Replace (or remove, line None) the user's line in the ACL file, atomically, keeping its mode."""
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith(f"user {user} ")]
    if line is not None:
        lines.append(line)
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".acl.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def acl_line(user, password, role, major=None):
    """The session user's ACL file line: on, its password's SHA-256, the role's rules for this Redis
    (svcctl's own words, `svcctl.hostlib.redis_acl`)."""
    return f"user {ident(user)} on #{redis_acl_digest(password)} {' '.join(acl_rules(role, major))}"


def redis_version():
    """This node's redis-server version (`6.0.16`), or None if it cannot say."""
    rc, out, _ = sh(["redis-server", "--version"])
    words = [w[2:] for w in out.split() if w.startswith("v=")] if rc == 0 else []
    return words[0] if words else None


def rd_create(req):
    port, acl = redis_conf(req["instance"])
    line = acl_line(req["user"], req["password"], req["attrs"]["role"], redis_version())
    acl_rewrite(acl, req["user"], line)
    redis_cli(port, req["admin_password"], "ACL", "LOAD")


def rd_drop(req):
    try:
        port, acl = redis_conf(req["instance"])
    except FileNotFoundError:
        return
    acl_rewrite(acl, req["user"], None)
    if req.get("admin_password"):
        with contextlib.suppress(SystemExit):  # a stopped instance has no live user to drop
            redis_cli(port, req["admin_password"], "ACL", "DELUSER", req["user"])


ENGINES = {"postgres": (pg_create, pg_drop), "mysql": (my_create, my_drop), "redis": (rd_create, rd_drop)}


def main():
    verb = sys.argv[1] if len(sys.argv) > 1 else ""
    if verb == "find":
        json.dump(read_registry(), sys.stdout, sort_keys=True)
        return
    if verb not in ("create", "drop"):
        fail(f"unknown verb {verb!r}; use create, drop or find")
    try:
        req = checked_request(json.load(sys.stdin), verb)
    except (BadRequest, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        fail(f"svcctl session helper: {exc}")
    create, drop = ENGINES[req["engine"]]
    if verb == "create":
        record_session(req)
        try:
            create(req)
        except BaseException:
            drop(req)
            forget_session(req)
            raise
    else:
        drop(req)
        forget_session(req)
    print("ok")


if __name__ == "__main__":  # also under `python3 -c SOURCE`; a unit test imports the pure functions
    main()
