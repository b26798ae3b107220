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
import base64
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

REGISTRY = "/var/lib/svcctl/registry.json"
REGISTRY_LOCK = "/var/lib/svcctl/.registry.lock"
REDIS_RULES = {
    "readwrite": "~* &* +@all -@admin -@dangerous",
    "readonly": "~* &* -@all +@read +@connection -@admin -@dangerous",
}
MYSQL_PRIVILEGES = {
    "readwrite": "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, "
    "CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER",
    "readonly": "SELECT, SHOW VIEW",
}
MYSQL_HOSTS = ("127.0.0.1", "localhost")


def fail(message):
    sys.stderr.write(message.rstrip() + "\n")
    sys.exit(1)


def run(argv, stdin=None, user=None, env=None):
    """Run argv (no shell); fail with its stderr unless it succeeds; return stdout."""
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30, cwd="/", env=env)
    except FileNotFoundError:
        fail(f"{argv[0]} is not installed on this node")
    if p.returncode != 0:
        fail(f"{argv[0]} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p.stdout


# --- registry (svcctl-registry.py's format) ------------------------------------------------------------


@contextlib.contextmanager
def registry():
    """The registry document, locked; saved atomically (temp file, fsync, rename) if changed."""
    os.makedirs(os.path.dirname(REGISTRY), mode=0o700, exist_ok=True)
    with open(REGISTRY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(REGISTRY) as f:
                doc = json.load(f)
        except FileNotFoundError:
            doc = {"format": 1, "objects": {}}
        before = json.dumps(doc, sort_keys=True)
        yield doc
        if json.dumps(doc, sort_keys=True) != before:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(REGISTRY), prefix=".registry.")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, REGISTRY)


def record(req):
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with registry() as doc:
        doc["objects"][req["address"]] = {"attrs": req["attrs"], "environment": req["environment"], "applied_at": now}


def forget(req):
    with registry() as doc:
        doc["objects"].pop(req["address"], None)


# --- postgres ------------------------------------------------------------------------------------------


_PG_PORT = []


def pg_port():
    """The port of the newest main cluster (asked once)."""
    if _PG_PORT:
        return _PG_PORT[0]
    clusters = json.loads(run(["pg_lsclusters", "--json"]))
    mains = [c for c in clusters if c["cluster"] == "main"]
    if not mains:
        fail("no PostgreSQL main cluster on this node")
    _PG_PORT.append(str(max(mains, key=lambda c: int(c["version"]))["port"]))
    return _PG_PORT[0]


def psql(sql, database="postgres"):
    return run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", pg_port(), "-d", database], stdin=sql, user="postgres")


def scram(password):
    """A SCRAM-SHA-256 verifier (RFC 7677), so the clear password never reaches the server."""
    salt, rounds = os.urandom(16), 4096
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${rounds}:{b64(salt)}${b64(hashlib.sha256(client).digest())}:{b64(server)}"


def pg_create(req):
    user, db, owner = req["user"], req["database"], req["database"] + "_owner"
    sql = (
        f"CREATE ROLE {user} LOGIN PASSWORD '{scram(req['password'])}' VALID UNTIL '{req['attrs']['expires_at']}' "
        f"CONNECTION LIMIT 16;\nGRANT CONNECT, TEMPORARY ON DATABASE {db} TO {user};\n"
    )
    if req["attrs"]["role"] == "readwrite":
        sql += f"GRANT {owner} TO {user};\nALTER ROLE {user} SET role = '{owner}';\n"
        psql(sql)
    else:
        psql(sql)
        psql(
            f"GRANT USAGE ON SCHEMA public TO {user};\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO {user};\n"
            f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {user};\n",
            db,
        )


def pg_drop(req):
    user, db, owner = req["user"], req["database"], req["database"] + "_owner"
    found = psql(
        f"SELECT (SELECT count(*) FROM pg_roles WHERE rolname = '{user}') || ' ' || "
        f"(SELECT count(*) FROM pg_database WHERE datname = '{db}');"
    ).split()
    if found[0] == "0":
        return
    psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{user}';")
    if found[1] != "0":
        psql(f"REASSIGN OWNED BY {user} TO {owner};\nDROP OWNED BY {user};\n", db)
    psql(f"DROP ROLE IF EXISTS {user};")


# --- mysql (MariaDB) ------------------------------------------------------------------------------------


def mariadb(sql):
    return run(["mariadb", "--batch", "--skip-column-names", "--protocol=socket", "--user=root"], stdin=sql)


def my_create(req):
    user, db = req["user"], req["database"]
    digest = "*" + hashlib.sha1(hashlib.sha1(req["password"].encode()).digest()).hexdigest().upper()
    privileges = MYSQL_PRIVILEGES[req["attrs"]["role"]]
    sql = ""
    for host in MYSQL_HOSTS:
        sql += f"CREATE USER '{user}'@'{host}' IDENTIFIED BY PASSWORD '{digest}' WITH MAX_USER_CONNECTIONS 16;\n"
        sql += f"GRANT {privileges} ON `{db}`.* TO '{user}'@'{host}';\n"
    mariadb(sql)


def my_drop(req):
    user = req["user"]
    if mariadb(f"SELECT count(*) FROM mysql.user WHERE User = '{user}';").strip() == "0":
        return
    ids = mariadb(f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}';").split()
    hosts = ", ".join(f"'{user}'@'{h}'" for h in MYSQL_HOSTS)
    mariadb("".join(f"KILL CONNECTION {int(i)};\n" for i in ids) + f"DROP USER IF EXISTS {hosts};\n")


# --- redis ----------------------------------------------------------------------------------------------


def redis_conf(instance):
    """(port, aclfile) of an instance from /etc/redis/redis-<name>.conf."""
    conf = {}
    with open(f"/etc/redis/redis-{instance}.conf") as f:
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


def rd_create(req):
    port, acl = redis_conf(req["instance"])
    digest = hashlib.sha256(req["password"].encode()).hexdigest()
    acl_rewrite(acl, req["user"], f"user {req['user']} on #{digest} {REDIS_RULES[req['attrs']['role']]}")
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
    verb = sys.argv[1]
    if verb == "find":
        try:
            with open(REGISTRY) as f:
                sys.stdout.write(f.read())
        except FileNotFoundError:
            sys.stdout.write('{"format": 1, "objects": {}}')
        return
    req = json.load(sys.stdin)
    create, drop = ENGINES[req["engine"]]
    if verb == "create":
        record(req)
        try:
            create(req)
        except BaseException:
            drop(req)
            forget(req)
            raise
    elif verb == "drop":
        drop(req)
        forget(req)
    else:
        fail(f"unknown verb {verb}")
    print("ok")


main()
