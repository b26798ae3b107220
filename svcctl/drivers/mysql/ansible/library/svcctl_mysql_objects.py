#!/usr/bin/python3
# svcctl's MySQL (MariaDB) instances and bindings on one node, every change of a run in one module run.
#
# Why a module of its own: the community.mysql modules run one remote process per object and task (an
# instance took 3 to 5, a binding 3 plus one per host), so ten instances took many times as long as one.
# This module makes the same objects, with the same grants, in order, over one connection; each step is
# checked before it is done, so a second run changes nothing and check mode reports what would change.
# Names are svcctl's SQL identifiers (the loader allows [a-z0-9_] only) and are backquoted all the same;
# values (users, hosts, hashes, comments) always go through pymysql's parameter binding.
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.svcctl_hostlib.registry import change_one, hold_changing, record_early
from ansible.module_utils.svcctl_hostlib.verifiers import MYSQL_NATIVE, mysql_native_hash, mysql_native_matches

DOCUMENTATION = r"""
module: svcctl_mysql_objects
short_description: Create, change and delete svcctl's MariaDB databases and binding users, in order
description:
  - An instance is a utf8mb4 database with a C(svcctl storage_mb=N connections=M) comment; when an update
    changes its connections, every binding user with a grant on it gets that MAX_USER_CONNECTIONS.  Deleting
    it dumps it first (mariadb-dump --single-transaction, gzip'd into a root-only file in a root-only
    directory), then drops the database.
  - A binding is a user at each of its hosts with a mysql_native_password hash (the password never reaches
    the server in clear), the binding's MAX_USER_CONNECTIONS and exactly its role's privileges on
    C(`db`.*) (readwrite or readonly) and nothing else; the user is dropped at hosts no longer allowed.
    Deleting it drops the user at every host.
  - After a delete succeeds its address is forgotten in the host registry; the create half of a replace is
    recorded there after its delete (apply.yml records every other change before the run).
options:
  changes: {type: list, elements: dict, required: true, description: "apply.yml's changes (instance, binding)"}
  secrets: {type: dict, default: {}, no_log: true, description: "address -> {password: ...}"}
  environment: {type: str, required: true}
  dump_dir: {type: str, default: /var/backups/svcctl}
  recorded_late: {type: list, elements: str, default: [], description: "addresses to record just before creating"}
  record_first: {type: list, elements: str, default: [], description: "addresses to record at once, first"}
  login_unix_socket: {type: str, default: /run/mysqld/mysqld.sock}
"""

RETURN = r"""
results: {description: "per change: address, action, changed and what was done", type: list}
svcctl_reports: {description: "where each deleted instance was dumped", type: list}
"""

PRIVILEGES = {
    "readwrite": (
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "INDEX", "REFERENCES",
        "CREATE TEMPORARY TABLES", "LOCK TABLES", "CREATE VIEW", "SHOW VIEW", "TRIGGER",
    ),
    "readonly": ("SELECT", "SHOW VIEW"),
}  # fmt: skip
_GRANT_RE = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<object>.+?) TO [`'\"]")


def ident(name):
    """A backquoted identifier (svcctl's names never hold a backquote; doubled anyway)."""
    return "`" + name.replace("`", "``") + "`"


def grant_object(db):
    """The grant's `db`.* with `_` escaped: a grant on `a_b`.* would also cover database `aXb`."""
    return ident(db.replace("_", "\\_")) + ".*"


class Failed(Exception):
    """A change cannot be made; the message names why (never a secret)."""


class Objects:
    """One connection, opened on first use; every step checks, then acts (unless checking)."""

    def __init__(self, module):
        import pymysql

        self.module = module
        self.pymysql = pymysql
        self.check = module.check_mode
        self._conn = None
        self.did = []

    # --- plumbing -----------------------------------------------------------------------------------------

    def conn(self):
        if self._conn is None:
            self._conn = self.pymysql.connect(
                unix_socket=self.module.params["login_unix_socket"],
                user="root",
                charset="utf8mb4",
                autocommit=True,
            )
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def query(self, statement, args=None):
        with self.conn().cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall()) if cur.description else []

    def one(self, statement, args=None):
        rows = self.query(statement, args)
        return rows[0][0] if rows else None

    def act(self, what, statement, args=None):
        """Run a change (not in check mode) and note it; `what` is shown, never a secret."""
        self.did.append(what)
        if not self.check:
            with self.conn().cursor() as cur:
                cur.execute(statement, args)

    # --- facts ----------------------------------------------------------------------------------------

    def database_comment(self, db):
        """The database's comment ('' when it has none), or None when there is no such database."""
        rows = self.query("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,))
        return (rows[0][0] or "") if rows else None

    def account(self, user, host):
        """(plugin, authentication_string, max_user_connections) of user@host, or None."""
        rows = self.query(
            "SELECT plugin, authentication_string, max_user_connections FROM mysql.user WHERE User = %s AND Host = %s",
            (user, host),
        )
        return rows[0] if rows else None

    def hosts(self, user):
        return sorted(r[0] for r in self.query("SELECT Host FROM mysql.user WHERE User = %s", (user,)))

    def grants(self, user, host):
        """object -> privileges of user@host, from SHOW GRANTS (roles and PROXY left out, as mysql_user does)."""
        out = {}
        for (line,) in self.query("SHOW GRANTS FOR %s@%s", (user, host)):
            m = _GRANT_RE.match(line)
            if m is None or m["privs"] == "PROXY":
                continue
            privs = out.setdefault(m["object"], set())
            privs.update(p.strip() for p in m["privs"].split(","))
            if " WITH GRANT OPTION" in line:
                privs.add("GRANT OPTION")
        return out

    # --- instances ------------------------------------------------------------------------------------

    def instance(self, change):
        attrs = change["attrs"]
        db = change["names"]["database"]
        comment = "svcctl"
        if attrs.get("storage_mb"):
            comment += f" storage_mb={int(attrs['storage_mb'])}"
        if attrs.get("connections"):
            comment += f" connections={int(attrs['connections'])}"
        now = self.database_comment(db)
        if now is None and attrs.get("adopted"):
            raise Failed(f"database {db} is gone: there is nothing to adopt; plan again")
        if now is None:
            self.act(f"create database {db}", f"CREATE DATABASE {ident(db)} CHARACTER SET utf8mb4")
            now = ""
        if now != comment:
            self.act(f"database {db}: comment {comment!r}", f"ALTER DATABASE {ident(db)} COMMENT = %s", (comment,))
        if change["action"] != "update":
            return
        # the instance's connections are its binding users' MAX_USER_CONNECTIONS
        limit = int(attrs.get("connections") or 0)
        users = self.query(
            r"SELECT DISTINCT u.User, u.Host, u.max_user_connections FROM mysql.db d JOIN mysql.user u"
            r" ON u.User = d.User AND u.Host = d.Host WHERE d.Db IN (%s, %s) AND d.User LIKE 'sv\\_%%'"
            r" ORDER BY u.User, u.Host",
            (db, db.replace("_", "\\_")),
        )
        for user, host, now_limit in users:
            if int(now_limit) != limit:
                self.act(f"{user}@{host}: MAX_USER_CONNECTIONS {limit}",
                         f"ALTER USER %s@%s WITH MAX_USER_CONNECTIONS {limit}", (user, host))  # fmt: skip

    def instance_delete(self, change, reports):
        db = change["names"]["database"]
        if (change.get("old") or {}).get("adopted") or change["attrs"].get("adopted"):
            reports.append(f"{change['address']} released: svcctl forgot it; database {db} and its data stay")
            return
        if self.database_comment(db) is None:
            return
        path = self.dump(change, db)
        reports.append(f"{change['address']} dumped to {path}")
        self.act(f"drop database {db}", f"DROP DATABASE IF EXISTS {ident(db)}")

    def dump(self, change, db):
        """mariadb-dump --single-transaction of db, gzip'd into a root-only file in the root-only dump directory."""
        directory = self.module.params["dump_dir"]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = os.path.join(directory, f"{change['name']}-{stamp}.sql.gz")
        self.did.append(f"dump {db} to {path}")
        if self.check:
            return path
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o700)
        dumper = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        gzip = shutil.which("gzip")
        if dumper is None or gzip is None:
            raise Failed(f"dump of {db}: {'gzip' if dumper else 'mariadb-dump'} is not installed; nothing was dropped")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with tempfile.TemporaryFile() as errors:
                dump = subprocess.Popen(
                    [dumper, "--user=root", f"--socket={self.module.params['login_unix_socket']}",
                     "--single-transaction", "--quick", db],
                    stdout=subprocess.PIPE, stderr=errors, cwd="/",
                )  # fmt: skip
                zipped = subprocess.run([gzip, "-c"], stdin=dump.stdout, stdout=fd, stderr=subprocess.PIPE, check=False)
                dump.stdout.close()
                rc = dump.wait()
                errors.seek(0)
                err = errors.read().decode(errors="replace")
        finally:
            os.close(fd)
        if rc != 0 or zipped.returncode != 0:
            why = err.strip() or zipped.stderr.decode(errors="replace").strip()
            raise Failed(f"dump of {db} failed ({rc}, gzip {zipped.returncode}): {why[-400:]}; nothing was dropped")
        return path

    # --- bindings -------------------------------------------------------------------------------------

    def binding(self, change, secret):
        attrs = change["attrs"]
        user, db = change["names"]["user"], change["names"]["database"]
        role = attrs.get("role")
        if role not in PRIVILEGES:
            raise Failed(f"role {role!r} is neither readwrite nor readonly")
        hosts = attrs.get("hosts")
        if not hosts:
            raise Failed("no hosts to create the user at")
        password = secret.get("password")
        if not password:
            raise Failed("no password was passed for it")
        limit = int(attrs.get("connections") or 0)
        digest = mysql_native_hash(password)
        obj = grant_object(db)
        wanted = set(PRIVILEGES[role])
        for host in hosts:
            account = self.account(user, host)
            if account is None:
                self.act(f"create user {user}@{host}",
                         f"CREATE USER %s@%s IDENTIFIED BY PASSWORD %s WITH MAX_USER_CONNECTIONS {limit}",
                         (user, host, digest))  # fmt: skip
                have = {"*.*": {"USAGE"}}
            else:
                plugin, stored, now_limit = account
                if plugin != MYSQL_NATIVE or not mysql_native_matches(password, stored or ""):
                    self.act(f"{user}@{host}: password",
                             "ALTER USER %s@%s IDENTIFIED BY PASSWORD %s", (user, host, digest))  # fmt: skip
                if int(now_limit) != limit:
                    self.act(f"{user}@{host}: MAX_USER_CONNECTIONS {limit}",
                             f"ALTER USER %s@%s WITH MAX_USER_CONNECTIONS {limit}", (user, host))  # fmt: skip
                have = self.grants(user, host)
            others = {o: p for o, p in have.items() if o not in ("*.*", obj)}
            if others or have.get("*.*", {"USAGE"}) != {"USAGE"}:
                self.act(f"{user}@{host}: revoke every privilege",
                         "REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", (user, host))  # fmt: skip
                have = {}
            if have.get(obj) != wanted:
                if have.get(obj):
                    # (MariaDB takes `ALL PRIVILEGES, GRANT OPTION` only without ON, for every object at once)
                    self.act(f"{user}@{host}: revoke its privileges on {db}",
                             f"REVOKE ALL PRIVILEGES ON {obj} FROM %s@%s", (user, host))  # fmt: skip
                    if "GRANT OPTION" in have[obj]:
                        self.act(f"{user}@{host}: revoke GRANT OPTION on {db}",
                                 f"REVOKE GRANT OPTION ON {obj} FROM %s@%s", (user, host))  # fmt: skip
                self.act(f"{user}@{host}: grant {role} on {db}",
                         f"GRANT {', '.join(PRIVILEGES[role])} ON {obj} TO %s@%s", (user, host))  # fmt: skip
        for host in self.hosts(user):
            if host not in hosts:
                self.act(f"drop user {user}@{host}", "DROP USER IF EXISTS %s@%s", (user, host))

    def binding_delete(self, change):
        user = change["names"]["user"]
        for host in self.hosts(user):
            self.act(f"drop user {user}@{host}", "DROP USER IF EXISTS %s@%s", (user, host))


def registry(module, verb, change):
    """Record or forget one address in the host registry (not in check mode), in this process."""
    if module.check_mode:
        return
    try:
        change_one(verb, change["address"], change["attrs"], module.params["environment"])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise Failed(f"could not {verb} it in the host registry: {exc}") from exc


def main():
    module = AnsibleModule(
        argument_spec={
            "changes": {"type": "list", "elements": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "environment": {"type": "str", "required": True},
            "dump_dir": {"type": "str", "default": "/var/backups/svcctl"},
            "recorded_late": {"type": "list", "elements": "str", "default": []},
            "record_first": {"type": "list", "elements": "str", "default": []},
            "login_unix_socket": {"type": "str", "default": "/run/mysqld/mysqld.sock"},
        },
        supports_check_mode=True,
    )
    hold_changing(module.fail_json)  # for the whole run: the next apply waits until this process ends
    try:
        objects = Objects(module)
    except ImportError:
        module.fail_json(msg="python3-pymysql is not installed on this node (svcctl needs it to manage MariaDB)")
    results, reports = [], []
    record_early(module, module.params["record_first"])  # when no registry task recorded them for this run
    late = set(module.params["recorded_late"])
    change = None
    try:
        for change in module.params["changes"]:
            objects.did = []
            kind, action = change["kind"], change["action"]
            if action != "delete" and change["address"] in late:
                registry(module, "record", change)
            if kind == "instance" and action == "delete":
                objects.instance_delete(change, reports)
            elif kind == "instance":
                objects.instance(change)
            elif kind == "binding" and action == "delete":
                objects.binding_delete(change)
            elif kind == "binding":
                objects.binding(change, module.params["secrets"].get(change["address"], {}))
            else:
                raise Failed("not a MySQL instance or binding change")
            if action == "delete":
                registry(module, "forget", change)
            results.append({"address": change["address"], "action": action, "changed": bool(objects.did),
                            "did": objects.did})  # fmt: skip
    except (objects.pymysql.Error, Failed, OSError) as exc:
        who = "MySQL refused" if isinstance(exc, objects.pymysql.Error) else "could not apply"
        module.fail_json(
            msg=f"{who} {change['address'] if change else 'the changes'} "
            f"({'; '.join(objects.did) or 'checking it'}): {str(exc).strip()[:400]}",
            results=results,
            done=[r["address"] for r in results],
            svcctl_reports=reports,
        )
    finally:
        objects.close()
    module.exit_json(changed=any(r["changed"] for r in results), results=results, svcctl_reports=reports)


if __name__ == "__main__":
    main()
