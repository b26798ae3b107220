# PostgreSQL: packages, Debian clusters (read from /etc/postgresql as pg_lsclusters reads them), their units,
# settings and pg_hba, and, for running clusters, databases, roles (SCRAM verifiers of sv_* roles only) and
# the grants that tell readwrite from readonly, and each database's client connections (pg_stat_activity's
# client backends but observe's own).  Read-only; one psql per cluster asks the cluster, then visits every
# database.

import json
import os
import re as _pg_re
from typing import Any

from svcctl.drivers.host.observe_header import converse, installed_packages, unit_states
from svcctl.hostlib.marked import MarkerError, block_lines
from svcctl.hostlib.run import sh

PG_CLUSTER_SQL = r"""
SELECT json_build_object(
  'settings', (SELECT json_object_agg(name, setting) FROM pg_settings
               WHERE name IN ('listen_addresses', 'password_encryption', 'port')),
  'databases', (SELECT coalesce(json_agg(json_build_object(
      'name', d.datname, 'owner', pg_get_userbyid(d.datdba), 'connlimit', d.datconnlimit,
      'size', pg_database_size(d.oid), 'comment', shobj_description(d.oid, 'pg_database'),
      'acl', d.datacl::text[],
      'clients', (SELECT count(*) FROM pg_stat_activity a
                  WHERE a.datid = d.oid AND a.backend_type = 'client backend'
                    AND a.application_name IS DISTINCT FROM 'svcctl-observe')) ORDER BY d.datname), '[]'::json)
    FROM pg_database d WHERE NOT d.datistemplate),
  'roles', (SELECT coalesce(json_agg(json_build_object(
      'name', r.rolname, 'login', r.rolcanlogin, 'superuser', r.rolsuper, 'connlimit', r.rolconnlimit,
      'config', r.rolconfig,
      'member_of', ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1),
      'verifier', CASE WHEN r.rolname ~ '^sv_' THEN a.rolpassword END) ORDER BY r.rolname), '[]'::json)
    FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname !~ '^pg_')
)
"""

PG_DATABASE_SQL = r"""
SELECT json_build_object(
  'public_acl', (SELECT nspacl::text[] FROM pg_namespace WHERE nspname = 'public'),
  'default_acl', (SELECT coalesce(json_agg(json_build_object(
      'role', pg_get_userbyid(d.defaclrole), 'schema', n.nspname, 'type', d.defaclobjtype,
      'acl', d.defaclacl::text[]) ORDER BY d.defaclrole, n.nspname, d.defaclobjtype), '[]'::json)
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace)
)
"""

PG_SYSTEM_DATABASES = ("postgres",)
PG_OBSERVER = "svcctl-observe"
"""The application_name of observe's visits to each database, which the client counts above leave out (another
svcctl's observation of the node is no client of an instance)."""


def _pg_psql(version):
    """The cluster's own psql: /usr/bin/psql is postgresql-common's pg_wrapper, a Perl script that costs
    about 40 ms of CPU per call before psql even starts (measured on Debian 12)."""
    path = f"/usr/lib/postgresql/{version}/bin/psql"
    return path if os.access(path, os.X_OK) else "psql"


PG_ANSWERED = "@@svcctl cluster"  # what psql echoes once it has answered PG_CLUSTER_SQL (JSON has no such line)


def _pg_live(port, psql="psql"):
    """(PG_CLUSTER_SQL's JSON, each database's grants as `_pg_all_grants` gives them) from ONE psql as the
    postgres superuser over the local socket: it answers the cluster query, then is given the databases that
    answer names to visit (a psql process and its first session cost more CPU than the queries)."""
    asked = {}

    def visit(text):
        asked["live"] = live = json.loads(text)
        asked["databases"] = [db["name"] for db in live["databases"] if db["name"] not in PG_SYSTEM_DATABASES]
        return _pg_grants_script(asked["databases"], port)

    first = PG_CLUSTER_SQL.strip() + ";\n\\echo " + PG_ANSWERED + "\n"
    rc, _, out, err = converse(_pg_psql_argv(psql, port), first, PG_ANSWERED, visit, user="postgres", timeout=60)
    if "live" not in asked:
        raise RuntimeError(f"psql on database postgres failed ({rc}): {err.strip()[:300]}")
    return asked["live"], _pg_all_grants(asked["databases"], port, psql, first=(rc, out, err))


def _pg_psql_argv(psql, port):
    """psql reading its commands from stdin, stopping at the first error, printing bare values."""
    return [psql, "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", "postgres", "-f", "-"]


def _pg_meta_arg(text):
    """A psql meta-command argument: single quotes, with psql's escapes for quotes, backslashes and controls."""
    for old, new in (("\\", "\\\\"), ("'", "''"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(old, new)
    return "'" + text + "'"


def _pg_grants_script(databases, port):
    """psql's commands to connect to each database in turn and print its grants, each after `@@svcctl <i>`."""
    script = []
    for i, name in enumerate(databases):
        conninfo = "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + f"' port={int(port)}"
        conninfo += f" application_name={PG_OBSERVER}"
        script += [f"\\echo @@svcctl {i}", f"\\connect {_pg_meta_arg(conninfo)}", PG_DATABASE_SQL.strip() + ";"]
    return "\n".join(script) + "\n" if script else ""


def _pg_all_grants(databases, port, psql="psql", first=None):
    """database -> the grants inside it, from one psql that connects to each in turn (a psql process costs
    more CPU than its query); {"vanished": True} for a database dropped between the listing and now.
    `first`: (exit code, output, stderr) of a psql already given `_pg_grants_script(databases)`."""
    found, todo = {}, list(databases)
    while todo:
        if first is not None:
            (rc, out, err), first = first, None
        else:
            rc, out, err = sh(
                _pg_psql_argv(psql, port), input=_pg_grants_script(todo, port), user="postgres", timeout=60
            )
        chunks, current = {}, None
        for line in out.splitlines():
            if line.startswith("@@svcctl "):
                current = int(line.split()[1])
                chunks[current] = ""
            elif current is not None:
                chunks[current] += line
        for i, text in sorted(chunks.items()):
            if text:
                found[todo[i]] = json.loads(text)
        if rc == 0 and len(found) >= len(databases):
            break
        # psql stops at the first failure: a database gone meanwhile is skipped, anything else is an error
        stopped = max(chunks) if chunks else None
        if stopped is None or chunks[stopped] or f'database "{todo[stopped]}" does not exist' not in err:
            raise RuntimeError(f"psql on the databases failed ({rc}): {err.strip()[:300]}")
        found[todo[stopped]] = {"vanished": True}
        todo = todo[stopped + 1 :]
    return found


PG_SVCCTL_CONF = "conf.d/svcctl.conf"  # svcctl's drop-in, relative to the cluster's configuration directory
PG_HBA_LEGACY = "# Managed by svcctl ("  # the first line of the whole file svcctl wrote before it had markers


def _pg_rules(lines):
    """pg_hba.conf lines as token lists, comments and blank lines dropped."""
    return [line.split("#", 1)[0].split() for line in lines if line.split("#", 1)[0].strip()]


def _pg_hba(path):
    """(every rule, svcctl's block's rules or None, whether svcctl wrote the whole file), as token lists;
    (None, None, False) when it cannot be read. Markers that do not pair are an error: the plan stops there."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None, None, False
    try:
        block = block_lines(text, PG_HBA_LEGACY)
    except MarkerError as exc:
        raise RuntimeError(f"{path}: {exc}; fix the svcctl markers by hand") from None
    return _pg_rules(text.splitlines()), None if block is None else _pg_rules(block), text.startswith(PG_HBA_LEGACY)


def _pg_packages():
    """Installed PostgreSQL server packages: major version -> Debian version."""
    found = {}
    for package, version in installed_packages().items():
        major = package[len("postgresql-") :]
        if package.startswith("postgresql-") and major.isdigit():
            found[major] = version
    return found


# postgresql-common's PgCommon.pm, read_conf_file: the same line syntax, includes and precedence.
_PG_CONF_SKIP = _pg_re.compile(r"^\s*(?:#.*)?$")
_PG_CONF_INCLUDE_DIR = _pg_re.compile(r"^\s*include_dir\s*=?\s*'([^']+)'\s*(?:#.*)?$", _pg_re.I)
_PG_CONF_INCLUDE = _pg_re.compile(r"^\s*include(?:_if_exists)?\s*=?\s*'([^']+)'\s*(?:#.*)?$", _pg_re.I)
_PG_CONF_STRING = _pg_re.compile(
    r"^\s*([a-zA-Z0-9_.-]+)\s*(?:=|\s)\s*'((?:[^']|''|(?:(?<=\\)'))*)'\s*(?:#.*)?$", _pg_re.I
)
_PG_CONF_SIMPLE = _pg_re.compile(
    r"^\s*([a-zA-Z0-9_.-]+)\s*(?:=|\s)\s*(-?[^\W_][\w.:/+-]*)\s*(?:#.*)?$", _pg_re.I | _pg_re.A
)


def _pg_unescape(text):
    """re.sub(r"\\\\(.)", r"\\1", text) (a backslash and the character after it: that character), without
    compiling it; a line holds no newline, the one character `.` leaves out."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] != "\n":
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _pg_read_conf(path, depth=0, skip=None):
    """A postgresql.conf-style file as {name: value}, includes merged in order; {} if it cannot be read.
    `skip`: a file to leave out wherever it is included (svcctl's own drop-in, to see the server without it)."""
    conf: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return conf
    parent = os.path.dirname(path)
    for line in lines:
        if _PG_CONF_SKIP.match(line):
            continue
        m = _PG_CONF_INCLUDE_DIR.match(line)
        if m:
            directory = os.path.join(parent, m[1])
            if depth < 10 and os.path.isdir(directory):
                for name in sorted(os.listdir(directory)):
                    included = os.path.join(directory, name)
                    if not name.startswith(".") and name.endswith(".conf") and included != skip:
                        conf.update(_pg_read_conf(included, depth + 1, skip))
            continue
        m = _PG_CONF_INCLUDE.match(line)
        if m:
            if depth < 10 and os.path.join(parent, m[1]) != skip:
                conf.update(_pg_read_conf(os.path.join(parent, m[1]), depth + 1, skip))
            continue
        m = _PG_CONF_STRING.match(line)
        if m:
            key = m[1].lower() if path.endswith(".conf") else m[1]
            conf[key] = _pg_unescape(m[2]).replace("''", "'")
            continue
        m = _PG_CONF_SIMPLE.match(line)
        if m:
            conf[m[1].lower() if path.endswith(".conf") else m[1]] = m[2]
            continue
        raise RuntimeError(f"invalid line in {path}: {line[:200]}")
    return conf


def _pg_running(conf, port):
    """As pg_lsclusters decides: the external pid file's process is postgres, else the socket accepts."""
    pidfile = conf.get("external_pid_file")
    if pidfile and pidfile != "(none)":
        if not os.path.exists(pidfile):
            return False
        try:
            with open(pidfile) as f:
                pid = f.readline().strip()
            with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            return _pg_re.search(r"\bpostgres\b", cmdline) is not None
        except (OSError, ValueError):
            pass  # undecided: probe the socket
    socketdir = (conf.get("unix_socket_directories") or "/var/run/postgresql").split(",")[0].strip()
    path = f"{socketdir}/.s.PGSQL.{port}"
    if not os.path.exists(path):
        return False
    import socket as _pg_socket  # here: Debian's clusters name a pid file, so observe rarely needs it

    with _pg_socket.socket(_pg_socket.AF_UNIX, _pg_socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _pg_start_conf(confdir):
    """start.conf's mode: auto (the default), manual or disabled."""
    try:
        with open(f"{confdir}/start.conf") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:  # re.match(r"(auto|manual|disabled)", line)[1], without compiling it
                    mode = next((m for m in ("auto", "manual", "disabled") if line.startswith(m)), None)
                    if mode is None:
                        raise RuntimeError(f"invalid mode in {confdir}/start.conf: {line[:100]}")
                    return mode
    except OSError:
        pass
    return "auto"


def _pg_version_name(name):
    """Whether a directory name is a version, as re.fullmatch(r"\\d+(\\.\\d+)?", name) decides (\\d: any
    decimal digit, str.isdecimal), without compiling it."""
    parts = name.split(".")
    return len(parts) <= 2 and all(p and p.isdecimal() for p in parts)


def _pg_clusters():
    """Every Debian cluster /etc/postgresql/<version>/<name>/ (with a postgresql.conf), as pg_lsclusters lists it.

    Reading the files costs a few milliseconds; pg_lsclusters (Perl) costs about 0.2 s of CPU per run.
    """
    clusters: list[dict[str, Any]] = []
    try:
        versions = [v for v in os.listdir("/etc/postgresql") if _pg_version_name(v)]
    except OSError:
        return clusters
    for version in versions:
        vdir = f"/etc/postgresql/{version}"
        for name in os.listdir(vdir):
            confdir = f"{vdir}/{name}"
            conf_path = f"{confdir}/postgresql.conf"
            if not (os.path.exists(conf_path) or os.path.islink(conf_path)):
                continue
            config = _pg_read_conf(conf_path)
            data_dir = config.get("data_directory")
            if not data_dir and os.path.islink(f"{confdir}/pgdata"):
                data_dir = os.path.realpath(f"{confdir}/pgdata")
            auto = _pg_read_conf(f"{data_dir or f'/var/lib/postgresql/{version}/{name}'}/postgresql.auto.conf")
            config.update({k: v for k, v in auto.items() if k != "data_directory"})
            port = int(config.get("port") or 5432)
            # listen_addresses as the server's own files set it, without svcctl's drop-in (postgresql.auto.conf,
            # written by the user's own SQL, counts: it is theirs too); svcctl widens it, never narrows it.
            base = _pg_read_conf(conf_path, skip=f"{confdir}/{PG_SVCCTL_CONF}")
            base.update(auto)
            listen_base = base.get("listen_addresses", "localhost")
            clusters.append(
                {
                    "version": version,
                    "cluster": name,
                    "port": port,
                    "running": _pg_running(config, port),
                    "start": _pg_start_conf(confdir),
                    "config": config,
                    "listen_base": listen_base,
                }
            )
    return clusters


_PG_CLUSTERS: "list[list[dict[str, Any]]]" = []


def _pg_sorted_clusters():
    """_pg_clusters by version and name, read once per run."""
    if not _PG_CLUSTERS:
        _PG_CLUSTERS.append(sorted(_pg_clusters(), key=lambda c: (int(c["version"].split(".")[0]), c["cluster"])))
    return _PG_CLUSTERS[0]


def units_postgres():
    """The units observe_postgres asks about (the footer asks systemd once for every engine)."""
    if not _pg_packages():
        return []
    return [f"postgresql@{c['version']}-{c['cluster']}.service" for c in _pg_sorted_clusters()]


def observe_postgres():
    packages = _pg_packages()
    result = {"packages": packages, "clusters": []}
    if not packages:
        return result
    clusters = _pg_sorted_clusters()
    units = unit_states([f"postgresql@{c['version']}-{c['cluster']}.service" for c in clusters])
    for c in clusters:
        version, name = c["version"], c["cluster"]
        config = c["config"]
        hba, hba_block, legacy = _pg_hba(config.get("hba_file") or f"/etc/postgresql/{version}/{name}/pg_hba.conf")
        cluster = {
            "version": version,
            "name": name,
            "port": c["port"],
            "running": c["running"],
            "start": c["start"],
            "unit": units[f"postgresql@{version}-{name}.service"],
            "hba": hba,
            "hba_block": hba_block,
            "hba_legacy": legacy,
            "listen_base": c["listen_base"],
            "settings": {k: config[k] for k in ("listen_addresses", "password_encryption") if k in config},
        }
        if cluster["running"]:
            # Grants live in each database: the psql that asked the cluster connects to each in turn.
            live, grants = _pg_live(cluster["port"], _pg_psql(version))
            cluster["settings"] = live["settings"]
            cluster["databases"] = live["databases"]
            cluster["roles"] = live["roles"]
            wanted = [db for db in cluster["databases"] if db["name"] not in PG_SYSTEM_DATABASES]
            for db in wanted:
                db.update(grants[db["name"]])
            # A database dropped between the listing and its own query is simply gone: not an error.
            cluster["databases"] = [db for db in cluster["databases"] if not db.get("vanished")]
        result["clusters"].append(cluster)
    return result
