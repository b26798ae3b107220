#!/usr/bin/python3
# svcctl's PostgreSQL instances and bindings on one node, every change of a run in one module run.
#
# Why a module of its own: the community.postgresql modules run one remote process per object and task
# (an instance took 3, a binding 5 to 7), so ten instances took 5x as long as one.  This module makes the
# same objects, with the same grants, in order, over at most two connections (`Connections`: the maintenance
# database's and the one it is working in); each step is checked before it is done, so a second run
# changes nothing and check mode reports what would change.  Names are svcctl's SQL identifiers (the loader
# allows [a-z0-9_] only) and still go through psycopg2.sql.Identifier.
from __future__ import annotations

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.svcctl_hostlib.registry import change_one, hold_changing, record_early
from ansible.module_utils.svcctl_hostlib.verifiers import scram_matches, scram_verifier

DOCUMENTATION = r"""
module: svcctl_postgres_objects
short_description: Create, change and delete svcctl's PostgreSQL databases and binding roles, in order
description:
  - An instance is a database owned by a NOLOGIN role C(<database>_owner), closed to PUBLIC, with the plan's
    connection limit and a C(svcctl storage_mb=N) comment.  Deleting it dumps it first (pg_dump -Fc, root-only
    file in a root-only directory), then drops the database and its owner.
  - A binding is a LOGIN role with a SCRAM verifier (the password never reaches the server in clear), the
    binding's connection limit and CONNECT on its database; readwrite acts as the owner (member, C(SET role)) and
    may create in schema public; readonly may use schema public and read every table, present and future.
    Deleting it hands what it owns to the owner, revokes its privileges and drops it.
  - After a delete succeeds its address is forgotten in the host registry; the create half of a replace is
    recorded there after its delete (apply.yml records every other change before the run).
options:
  changes: {type: list, elements: dict, required: true, description: "apply.yml's changes (instance, binding)"}
  secrets: {type: dict, default: {}, no_log: true, description: "address -> {password: ...}"}
  environment: {type: str, required: true}
  dump_dir: {type: str, default: /var/backups/svcctl}
  recorded_late: {type: list, elements: str, default: [], description: "addresses to record just before creating"}
  record_first: {type: list, elements: str, default: [], description: "addresses to record at once, first"}
  login_unix_socket: {type: str, default: /var/run/postgresql}
  port: {type: int, default: 5432}
"""

RETURN = r"""
results: {description: "per change: address, action, changed and what was done", type: list}
svcctl_reports: {description: "where each deleted instance was dumped", type: list}
connections_peak: {description: "the most connections the run held open at once (at most 2)", type: int}
"""

DEFAULT_ROLE = "readwrite"
CLIENTS_ROLE = "svcctl_clients"  # every svcctl user is a member: svcctl's pg_hba.conf rules name only it


class Connections:
    """At most two open connections whatever the number of objects: one to the maintenance database, and
    one to the database being worked in, closed before the next one is opened.

    One connection per database kept open to the end (as before) ran a node out of slots on a first apply of
    many instances (`too many clients already`); these two fit in the superuser's reserved slots, so a module
    run takes none of the applications'.
    """

    def __init__(self, connect, maintenance="postgres"):
        self._connect = connect  # database name -> an open connection
        self.maintenance = maintenance
        self._open = {}  # database -> connection: the maintenance one and at most one other
        self.peak = 0  # the most connections open at once (returned, and checked by the tests)

    def get(self, database):
        """An open connection to `database`, closing the previous working database's first."""
        if database not in self._open:
            for other in [d for d in self._open if d != self.maintenance]:
                self.close(other)
            self._open[database] = self._connect(database)
            self.peak = max(self.peak, len(self._open))
        return self._open[database]

    def close(self, database):
        c = self._open.pop(database, None)
        if c is not None:
            c.close()

    def close_all(self):
        for name in list(self._open):
            self.close(name)


class Objects:
    """Every step checks, then acts (unless checking), over at most two connections (`Connections`)."""

    def __init__(self, module):
        import psycopg2
        from psycopg2 import sql

        self.module = module
        self.psycopg2 = psycopg2
        self.sql = sql
        self.check = module.check_mode
        self.conns = Connections(self._connect)
        self.did = []

    # --- plumbing -----------------------------------------------------------------------------------------

    def _connect(self, database):
        c = self.psycopg2.connect(
            dbname=database,
            user="postgres",
            host=self.module.params["login_unix_socket"],
            port=self.module.params["port"],
            application_name="svcctl apply",
        )
        c.autocommit = True
        return c

    def conn(self, database="postgres"):
        return self.conns.get(database)

    def close(self, database):
        self.conns.close(database)

    def close_all(self):
        self.conns.close_all()

    def query(self, statement, args=None, database="postgres"):
        with self.conn(database).cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else []

    def one(self, statement, args=None, database="postgres"):
        rows = self.query(statement, args, database)
        return rows[0][0] if rows else None

    def act(self, what, statement, database="postgres"):
        """Run a change (not in check mode) and note it; `what` is shown, never a secret."""
        self.did.append(what)
        if not self.check:
            with self.conn(database).cursor() as cur:
                cur.execute(statement)

    def ident(self, name):
        return self.sql.Identifier(name)

    def stmt(self, template, *names, **literals):
        return self.sql.SQL(template).format(
            *[self.ident(n) for n in names], **{k: self.sql.Literal(v) for k, v in literals.items()}
        )

    # --- facts ----------------------------------------------------------------------------------------

    def role(self, name):
        rows = self.query(
            "SELECT r.rolcanlogin, r.rolconnlimit, coalesce(r.rolconfig, '{}'), a.rolpassword"
            " FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = %s",
            (name,),
        )
        return rows[0] if rows else None

    def database(self, name):
        rows = self.query(
            "SELECT pg_get_userbyid(datdba), datconnlimit, shobj_description(oid, 'pg_database')"
            " FROM pg_database WHERE datname = %s",
            (name,),
        )
        return rows[0] if rows else None

    def db_grantees(self, database):
        """Grantee (PUBLIC as '') -> privilege letters on the database itself."""
        rows = self.query(
            "SELECT coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), ''), a.privilege_type FROM pg_database d,"
            " aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = %s",
            (database,),
        )
        out = {}
        for grantee, privilege in rows:
            out.setdefault(grantee, set()).add(privilege)
        return out

    def member(self, user, group):
        return bool(
            self.one(
                "SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u"
                " ON u.oid = m.member WHERE g.rolname = %s AND u.rolname = %s",
                (group, user),
            )
        )

    # --- instances ------------------------------------------------------------------------------------

    def instance(self, change):
        attrs = change["attrs"]
        db, owner = change["names"]["database"], change["names"]["owner"]
        limit = attrs.get("connections")
        limit = -1 if limit is None else int(limit)
        comment = "svcctl" if attrs.get("storage_mb") is None else f"svcctl storage_mb={int(attrs['storage_mb'])}"
        if attrs.get("adopted"):
            return self.adopted(db, limit, comment)
        role = self.role(owner)
        if role is None:
            self.act(f"create role {owner}", self.stmt("CREATE ROLE {} NOLOGIN", owner))
        elif role[0]:
            self.act(f"role {owner}: NOLOGIN", self.stmt("ALTER ROLE {} NOLOGIN", owner))
        found = self.database(db)
        if found is None:
            self.act(
                f"create database {db}",
                self.stmt("CREATE DATABASE {} OWNER {} CONNECTION LIMIT {limit}", db, owner, limit=limit),
            )
            found = (owner, limit, None)
        if found[0] != owner:
            self.act(f"database {db}: owner {owner}", self.stmt("ALTER DATABASE {} OWNER TO {}", db, owner))
        if found[1] != limit:
            self.act(f"database {db}: connection limit {limit}",
                     self.stmt("ALTER DATABASE {} CONNECTION LIMIT {limit}", db, limit=limit))  # fmt: skip
        if found[2] != comment:
            self.act(f"database {db}: comment", self.stmt("COMMENT ON DATABASE {} IS {c}", db, c=comment))
        if self.check and self.database(db) is None:
            return  # nothing to look into yet
        if "" in self.db_grantees(db):
            self.act(f"database {db}: revoke PUBLIC", self.stmt("REVOKE ALL ON DATABASE {} FROM PUBLIC", db))

    def adopted(self, db, limit, comment):
        """An adopted database: only what the plan showed (its connection limit, svcctl's comment); its owner,
        its grants (PUBLIC's included) and its data stay as they were, so no client loses access."""
        found = self.database(db)
        if found is None:
            self.module.fail_json(msg=f"database {db} is gone: there is nothing to adopt; plan again")
        if found[1] != limit:
            self.act(f"database {db}: connection limit {limit}",
                     self.stmt("ALTER DATABASE {} CONNECTION LIMIT {limit}", db, limit=limit))  # fmt: skip
        if found[2] != comment:
            self.act(f"database {db}: comment", self.stmt("COMMENT ON DATABASE {} IS {c}", db, c=comment))

    def instance_delete(self, change, reports):
        db, owner = change["names"]["database"], change["names"]["owner"]
        if (change.get("old") or {}).get("adopted") or change["attrs"].get("adopted"):
            reports.append(f"{change['address']} released: svcctl forgot it; database {db} and its data stay")
            return
        if self.database(db) is not None:
            path = self.dump(change, db)
            reports.append(f"{change['address']} dumped to {path}")
            self.close(db)
            self.act(f"drop database {db}", self.stmt("DROP DATABASE IF EXISTS {} WITH (FORCE)", db))
        if self.role(owner) is not None:
            self.act(f"drop role {owner}", self.stmt("DROP ROLE IF EXISTS {}", owner))

    def dump(self, change, db):
        """pg_dump -Fc of db into a root-only file in the root-only dump directory; its path."""
        directory = self.module.params["dump_dir"]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = os.path.join(directory, f"{change['name']}-{stamp}.pgc")
        self.did.append(f"dump {db} to {path}")
        if self.check:
            return path
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o700)
        version = int(self.one("SHOW server_version_num")) // 10000
        pg_dump = f"/usr/lib/postgresql/{version}/bin/pg_dump"
        if not os.access(pg_dump, os.X_OK):
            pg_dump = "pg_dump"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        rc, _, err = self.module.run_command(
            [pg_dump, "-Fc", "-h", self.module.params["login_unix_socket"], "-p", str(self.module.params["port"]),
             "-U", "postgres", "-f", path, db]
        )  # fmt: skip
        if rc != 0:
            self.module.fail_json(msg=f"pg_dump of {db} failed ({rc}): {err.strip()[-400:]}; nothing was dropped")
        return path

    # --- bindings -------------------------------------------------------------------------------------

    def binding(self, change, secret):
        attrs = change["attrs"]
        user, db = change["names"]["user"], change["names"]["database"]
        found = self.database(db)
        # A readwrite binding acts as its database's owner: svcctl's owner role, or an adopted database's own.
        owner = found[0] if found is not None else change["names"]["owner"]
        rw = attrs.get("role", DEFAULT_ROLE) == "readwrite"
        limit = attrs.get("connections")
        limit = -1 if limit is None else int(limit)
        password = secret.get("password")
        if not password:
            self.module.fail_json(msg=f"{change['address']}: no password was passed for it")
        role = self.role(user)
        if role is None:
            self.act(
                f"create role {user}",
                self.stmt("CREATE ROLE {} LOGIN CONNECTION LIMIT {limit} PASSWORD {pw}", user, limit=limit,
                          pw=scram_verifier(password)),
            )  # fmt: skip
            role = (True, limit, [], None)
        else:
            if not role[0]:
                self.act(f"role {user}: LOGIN", self.stmt("ALTER ROLE {} LOGIN", user))
            if role[1] != limit:
                self.act(f"role {user}: connection limit {limit}",
                         self.stmt("ALTER ROLE {} CONNECTION LIMIT {limit}", user, limit=limit))  # fmt: skip
            if not scram_matches(password, role[3]):
                self.act(f"role {user}: password",
                         self.stmt("ALTER ROLE {} PASSWORD {pw}", user, pw=scram_verifier(password)))  # fmt: skip
        if not self.member(user, CLIENTS_ROLE):
            if self.role(CLIENTS_ROLE) is None:
                self.act(f"create role {CLIENTS_ROLE}", self.stmt("CREATE ROLE {} NOLOGIN", CLIENTS_ROLE))
            self.act(f"grant {CLIENTS_ROLE} to {user}", self.stmt("GRANT {} TO {}", CLIENTS_ROLE, user))
        config = list(role[2] or [])
        wanted = [f"role={owner}"] if rw else []
        if config != wanted:
            if any(not c.startswith("role=") for c in config) or (config and not rw):
                self.act(f"role {user}: reset settings", self.stmt("ALTER ROLE {} RESET ALL", user))
            if rw:
                self.act(f"role {user}: SET role {owner}", self.stmt("ALTER ROLE {} SET role = {o}", user, o=owner))
        if self.check and self.database(db) is None:
            return
        if "CONNECT" not in self.db_grantees(db).get(user, set()):
            self.act(f"grant CONNECT on {db} to {user}", self.stmt("GRANT CONNECT ON DATABASE {} TO {}", db, user))
        is_member = self.member(user, owner)
        if rw and not is_member:
            self.act(f"grant {owner} to {user}", self.stmt("GRANT {} TO {}", owner, user))
        elif not rw and is_member:
            self.act(f"revoke {owner} from {user}", self.stmt("REVOKE {} FROM {}", owner, user))
        self.schema_grants(db, owner, user, rw)

    def schema_grants(self, db, owner, user, rw):
        """USAGE on schema public; CREATE if readwrite; if readonly, SELECT on every table, present and future."""
        rows = self.query(
            "SELECT a.privilege_type FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner)))"
            " a WHERE n.nspname = 'public' AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (user,),
            db,
        )
        have = {r[0] for r in rows}
        if "USAGE" not in have:
            self.act(f"{db}: grant USAGE on schema public to {user}",
                     self.stmt("GRANT USAGE ON SCHEMA public TO {}", user), db)  # fmt: skip
        if rw and "CREATE" not in have:
            self.act(f"{db}: grant CREATE on schema public to {user}",
                     self.stmt("GRANT CREATE ON SCHEMA public TO {}", user), db)  # fmt: skip
        if not rw and "CREATE" in have:
            self.act(f"{db}: revoke CREATE on schema public from {user}",
                     self.stmt("REVOKE CREATE ON SCHEMA public FROM {}", user), db)  # fmt: skip
        if rw:
            return
        unreadable = self.one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT EXISTS (SELECT 1 FROM aclexplode(c.relacl) a"
            " WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) AND a.privilege_type = 'SELECT')",
            (user,),
            db,
        )
        if unreadable:
            self.act(f"{db}: grant SELECT on every table of schema public to {user}",
                     self.stmt("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}", user), db)  # fmt: skip
        future = self.one(
            "SELECT 1 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a"
            " WHERE n.nspname = 'public' AND d.defaclobjtype = 'r' AND d.defaclrole = (SELECT oid FROM pg_roles"
            " WHERE rolname = %s) AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s)"
            " AND a.privilege_type = 'SELECT'",
            (owner, user),
            db,
        )
        if not future:
            self.act(
                f"{db}: {user} reads the tables {owner} creates later",
                self.stmt("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}",
                          owner, user),
                db,
            )  # fmt: skip

    def binding_delete(self, change):
        user, db = change["names"]["user"], change["names"]["database"]
        if self.role(user) is None:
            return
        self.act(f"end the sessions of {user}", self.stmt(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {u}", u=user))  # fmt: skip
        found = self.database(db)
        if found is not None:
            owner = found[0]  # what the user made goes to the database's owner (an adopted one's own)
            if self.role(owner) is not None:
                self.act(
                    f"{db}: what {user} owns goes to {owner}", self.stmt("REASSIGN OWNED BY {} TO {}", user, owner), db
                )
            self.act(f"{db}: revoke every privilege of {user}", self.stmt("DROP OWNED BY {}", user), db)
        self.act(f"drop role {user}", self.stmt("DROP ROLE IF EXISTS {}", user))


def registry(module, verb, change):
    """Record or forget one address in the host registry (not in check mode), in this process."""
    if module.check_mode:
        return
    try:
        change_one(verb, change["address"], change["attrs"], module.params["environment"])
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        module.fail_json(msg=f"could not {verb} {change['address']} in the host registry: {exc}")


def main():
    module = AnsibleModule(
        argument_spec={
            "changes": {"type": "list", "elements": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "environment": {"type": "str", "required": True},
            "dump_dir": {"type": "str", "default": "/var/backups/svcctl"},
            "recorded_late": {"type": "list", "elements": "str", "default": []},
            "record_first": {"type": "list", "elements": "str", "default": []},
            "login_unix_socket": {"type": "str", "default": "/var/run/postgresql"},
            "port": {"type": "int", "default": 5432},
        },
        supports_check_mode=True,
    )
    hold_changing(module.fail_json)  # for the whole run: the next apply waits until this process ends
    try:
        objects = Objects(module)
    except ImportError:
        module.fail_json(
            msg="python3-psycopg2 is not installed on this node: svcctl installs it with a new engine; on a node whose "
            "PostgreSQL was installed otherwise, run `apt-get install python3-psycopg2` there"
        )
    results, reports = [], []
    record_early(module, module.params["record_first"])  # when no registry task recorded them for this run
    late = set(module.params["recorded_late"])
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
                module.fail_json(msg=f"{change['address']}: not a PostgreSQL instance or binding change")
            if action == "delete":
                registry(module, "forget", change)
            results.append({"address": change["address"], "action": action, "changed": bool(objects.did),
                            "did": objects.did})  # fmt: skip
    except objects.psycopg2.Error as exc:
        done = [r["address"] for r in results]
        module.fail_json(
            msg=f"PostgreSQL refused {change['address']} ({'; '.join(objects.did) or 'checking it'}): "
            f"{str(exc).strip()[:400]}",
            results=results,
            done=done,
            svcctl_reports=reports,
        )
    finally:
        objects.close_all()
    module.exit_json(
        changed=any(r["changed"] for r in results),
        results=results,
        svcctl_reports=reports,
        connections_peak=objects.conns.peak,
    )


if __name__ == "__main__":
    main()
