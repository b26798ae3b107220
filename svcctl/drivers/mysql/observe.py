# --- mysql (MariaDB) -------------------------------------------------------------------------------------
# Reads only: package, unit, svcctl's config file, the bind-address the server's own option files give, and
# (when the server runs) databases with their client connections, users and the grants of svcctl's users, as
# root over the unix socket.
# Verifiers are printed for sv_* users only.
import os
import stat

from svcctl.drivers.host.observe_header import converse, installed_version, proc_net_tcp, unit_state
from svcctl.hostlib.run import sh

_MYSQL_CONF = "/etc/mysql/mariadb.conf.d/60-svcctl.cnf"
_MYSQL_SOCKET = "/run/mysqld/mysqld.sock"
_MYSQL_SYSTEM_DBS = ("information_schema", "mysql", "performance_schema", "sys")
_MYSQL_OPTION_FILES = ("/etc/my.cnf", "/etc/mysql/my.cnf")
"""The option files mariadbd reads on Debian, in order (`mariadbd --help --verbose`); root's ~/.my.cnf is not
the server's, and Debian's /etc/mysql/my.cnf includes conf.d/ and mariadb.conf.d/."""
_MYSQL_SERVER_GROUPS = ("mysqld", "server", "mariadb", "mariadbd", "client-server", "galera")
"""The option groups mariadbd reads (sql/mysqld.cc, load_default_groups; galera in Debian's wsrep build), besides
the version-suffixed mysqld-X.Y, mariadb-X.Y and mariadbd-X.Y, and from 11 on mariadb-X and mariadbd-X (as
`mariadbd --help --verbose` lists them on Debian 11, 12 and 13)."""
_MYSQL_INCLUDE_DEPTH = 10
"""How deep MariaDB follows !include and !includedir (mysys/my_default.c); deeper directives are skipped."""


_MYSQL_CLIENT = [
    "mariadb",
    "--batch",
    "--skip-column-names",
    "--protocol=socket",
    "--socket=" + _MYSQL_SOCKET,
    "--user=root",
]
_MYSQL_ANSWERED = "@@svcctl answered"  # a row the client prints after the first batch (no other row is one field)


def _mysql_rows(out):
    """--batch output as rows (lists of str, NULL as None)."""
    rows = []
    for line in out.splitlines():
        rows.append([None if f == "NULL" else _mysql_unescape(f) for f in line.split("\t")])
    return rows


def _mysql_query(sql, then=None):
    """Rows of one batch of statements; raises when the client fails.  With `then`, the same client (its process
    and session cost more than the queries) is then given then(rows) and its rows are returned too."""
    if then is None:
        rc, out, err = sh([*_MYSQL_CLIENT, "-e", sql], timeout=20)
        if rc != 0:
            raise RuntimeError(f"mariadb client failed ({rc}): {err.strip()[-300:]}")
        return _mysql_rows(out)
    asked = {}

    def second(text):
        asked["rows"] = _mysql_rows(text)
        return then(asked["rows"])

    first = f"{sql}\nSELECT '{_MYSQL_ANSWERED}';\n"
    rc, _, out, err = converse([*_MYSQL_CLIENT, "--unbuffered"], first, _MYSQL_ANSWERED, second, timeout=20)
    if rc != 0 or "rows" not in asked:
        raise RuntimeError(f"mariadb client failed ({rc}): {err.strip()[-300:]}")
    return asked["rows"], _mysql_rows(out)


def _mysql_unescape(field):
    """Undo --batch escaping of backslash, tab, newline and NUL."""
    if "\\" not in field:
        return field
    return (
        field.replace("\\\\", "\x00\x00")
        .replace("\\t", "\t")
        .replace("\\n", "\n")
        .replace("\\0", "\x00")
        .replace("\x00\x00", "\\")
    )


def _mysql_quote(value):
    """A SQL string literal for a user or host name."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mysql_conf():
    """svcctl's config file: its bind-address and the client networks it was written for (or None)."""
    try:
        with open(_MYSQL_CONF) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    conf: dict[str, object] = {"bind_address": None, "client_networks": []}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# svcctl-client-networks:"):
            conf["client_networks"] = line.split(":", 1)[1].split()
        elif line.replace(" ", "").startswith("bind-address="):
            conf["bind_address"] = line.split("=", 1)[1].strip()
    return conf


def mysql_server_groups(series):
    """The option groups mariadbd of a series ("10.11") reads, lower-case (MariaDB matches them without case)."""
    groups = set(_MYSQL_SERVER_GROUPS)
    if series:
        groups.update(f"{name}-{series}" for name in ("mysqld", "mariadb", "mariadbd"))
    major = series.split(".")[0]
    if major.isdigit() and int(major) >= 11:
        groups.update(f"{name}-{major}" for name in ("mariadb", "mariadbd"))
    return groups


def _mysql_option_value(line):
    """One option line's (name with `-` for `_`, value) as MariaDB reads it: a `#` outside quotes ends the
    line, the value loses its outer spaces and one pair of enclosing quotes; value None without `=`."""
    quote, escape, cut = "", False, len(line)
    for i, char in enumerate(line):
        if char in "'\"" and not escape:
            quote = char if not quote else ("" if quote == char else quote)
        if not quote and char == "#":
            cut = i
            break
        escape = bool(quote) and char == "\\" and not escape
    name, sep, value = line[:cut].partition("=")
    value = value.strip()
    if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    return name.strip().replace("_", "-"), value if sep else None


def mysql_option_values(read, listdir, option, groups, files=_MYSQL_OPTION_FILES, skip=()):
    """Every value `option` ("bind-address") gets in `groups`, in the order mariadbd reads them: each of `files`,
    following `!include FILE` and `!includedir DIR` (its *.cnf files in name order) where they stand.

    `read(path)` gives a file's text (None when it is missing or MariaDB would ignore it), `listdir(path)` a
    directory's names (None when missing); paths in `skip` are not read. Pure over those two, so tests feed it
    texts. Options may be spelt with `_` or `-` and prefixed `loose-`; groups match without case; an option
    before any group (which MariaDB refuses) counts for none.
    """
    found = []
    skipped = {os.path.normpath(p) for p in skip}

    def visit(path, depth):
        text = read(path) if os.path.normpath(path) not in skipped else None
        if text is None:
            return
        group = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line[0] == "!":
                words = line[1:].split(None, 1)
                if depth >= _MYSQL_INCLUDE_DEPTH or len(words) < 2:
                    continue
                directive, target = words[0], words[1].strip()
                if directive == "include":
                    visit(target, depth + 1)
                elif directive == "includedir":
                    names = listdir(target) or []
                    for name in sorted(n for n in names if os.path.splitext(n)[1] == ".cnf"):
                        visit(os.path.join(target, name), depth + 1)
                continue
            if line[0] == "[":
                end = line.find("]")
                group = line[1:end].strip().lower() if end > 0 else None
                continue
            if group not in groups:
                continue
            name, value = _mysql_option_value(line)
            if name.startswith("loose-"):
                name = name[len("loose-") :]
            if name == option and value is not None:
                found.append(value)

    for path in files:
        visit(path, 0)
    return found


def mysql_bind_base(read, listdir, series):
    """The bind-address the server's own option files give, without svcctl's file: the last one read, spaces
    dropped around commas; "" when none sets it (MariaDB's default: every address; Debian's 50-server.cnf
    sets 127.0.0.1)."""
    values = mysql_option_values(read, listdir, "bind-address", mysql_server_groups(series), skip=(_MYSQL_CONF,))
    if not values:
        return ""
    return ",".join("".join(part.split()) for part in values[-1].split(","))


def _mysql_read_option_file(path):
    """An option file's text, or None when it is missing, not a regular file, unreadable, or world-writable
    (which MariaDB ignores)."""
    try:
        with open(path, errors="replace") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode) or mode & stat.S_IWOTH:
                return None
            return f.read(1 << 20)
    except OSError:
        return None


def _mysql_list_dir(path):
    """A directory's entry names, or None when it cannot be listed."""
    try:
        return os.listdir(path)
    except OSError:
        return None


def _mysql_series(package):
    """ "1:10.11.19-0+deb12u1" -> "10.11" (the suffix of the server's version groups)."""
    upstream = (package or "").split(":", 1)[-1].split("-", 1)[0]
    return ".".join(upstream.split(".")[:2])


def _mysql_listening(port):
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = proc_net_tcp(path)
        except FileNotFoundError:
            continue
        for fields in rows:
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port or len(addr_hex) != width:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            if len(raw) == 4:
                found.add(".".join(str(b) for b in raw))  # str(ipaddress.ip_address(raw)), without its import
            else:
                import ipaddress  # here: MariaDB on an IPv6 address is rare, and the import costs about 1 ms

                found.add(str(ipaddress.ip_address(raw)))
    return sorted(found)


def _mysql_grants_sql(rows):
    """SHOW GRANTS for each of svcctl's users among the first batch's `user` rows, each after `user <i>`."""
    svc = [(row[1], row[2]) for row in rows if row[0] == "user" and row[1].startswith("sv_")]
    sql = "".join(
        f"SELECT 'user', {i}; SHOW GRANTS FOR {_mysql_quote(user)}@{_mysql_quote(host)};"
        for i, (user, host) in enumerate(svc)
    )
    return sql + "\n" if sql else ""


def units_mysql():
    """The unit observe_mysql asks about (the footer asks systemd once for every engine)."""
    return ["mariadb.service"]


def observe_mysql():
    package = installed_version("mariadb-server")
    unit = unit_state("mariadb.service")
    out = {
        "installed": package is not None,
        "package_version": package,
        "active": unit["active"],
        "enabled": unit["enabled"],
        "conf": _mysql_conf(),
        "bind_base": None,
        "server": None,
        "databases": [],
        "users": [],
    }
    if package is None:
        return out
    out["bind_base"] = mysql_bind_base(_mysql_read_option_file, _mysql_list_dir, _mysql_series(package))
    if not unit["active"]:
        return out
    system = ", ".join(_mysql_quote(d) for d in _MYSQL_SYSTEM_DBS)
    rows, grant_rows = _mysql_query(
        "SELECT 'server', VERSION(), @@port, @@bind_address;"
        # Sizes from a derived table whose WHERE names the schemas: the server then opens only their tables.
        # Joined on the schema instead, it opened every table of every schema, the system ones too (about 300
        # on Debian 12, 20 ms of CPU), to drop them after.
        "SELECT 'database', s.SCHEMA_NAME, s.DEFAULT_CHARACTER_SET_NAME, s.SCHEMA_COMMENT, COALESCE(t.size, 0)"
        " FROM information_schema.SCHEMATA s LEFT JOIN (SELECT TABLE_SCHEMA, SUM(DATA_LENGTH + INDEX_LENGTH) AS size"
        f" FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ({system}) GROUP BY TABLE_SCHEMA) t"
        f" ON t.TABLE_SCHEMA = s.SCHEMA_NAME WHERE s.SCHEMA_NAME NOT IN ({system});"
        "SELECT 'user', User, Host, plugin, IF(User LIKE 'sv\\_%', authentication_string, NULL),"
        " max_user_connections FROM mysql.user;"
        # client connections per database (this client's own has none selected)
        "SELECT 'clients', DB, COUNT(*) FROM information_schema.PROCESSLIST WHERE DB IS NOT NULL"
        " AND COMMAND <> 'Daemon' GROUP BY DB;",
        then=_mysql_grants_sql,
    )
    server, databases, users, clients = {}, [], [], {}
    for row in rows:
        if row[0] == "server":
            server = {"version": row[1], "port": int(row[2]), "bind_address": row[3]}
        elif row[0] == "database":
            databases.append({"name": row[1], "charset": row[2], "comment": row[3], "size_bytes": int(row[4])})
        elif row[0] == "clients":
            clients[row[1]] = int(row[2])
        elif row[0] == "user":
            users.append(
                {
                    "user": row[1],
                    "host": row[2],
                    "plugin": row[3],
                    "authentication_string": row[4],
                    "max_user_connections": int(row[5]),
                    "grants": [],
                }
            )
    svc = [u for u in users if u["user"].startswith("sv_")]
    if svc:
        current = None
        for row in grant_rows:
            if row[0] == "user" and len(row) == 2:
                current = svc[int(row[1])]
            elif current is not None:
                # the verifier is already reported once, above; keep it out of the grant text
                grant = row[0]
                cut = grant.find(" IDENTIFIED BY PASSWORD ")
                if cut >= 0:
                    end = grant.find("'", grant.find("'", cut) + 1)
                    grant = grant[:cut] + grant[end + 1 :]
                current["grants"].append(grant)
    server["listening"] = _mysql_listening(server["port"])
    out["server"] = server
    for db in databases:
        db["clients"] = clients.get(db["name"], 0)
    out["databases"] = sorted(databases, key=lambda d: d["name"])
    out["users"] = sorted(users, key=lambda u: (u["user"], u["host"]))
    return out
