# --- mysql (MariaDB) -------------------------------------------------------------------------------------
# Reads only: package, unit, svcctl's config file, and (when the server runs) databases, users and the
# grants of svcctl's users, as root over the unix socket.  Verifiers are printed for sv_* users only.
import ipaddress

from svcctl.drivers.host.observe_header import installed_version, unit_state
from svcctl.hostlib.run import sh

_MYSQL_CONF = "/etc/mysql/mariadb.conf.d/60-svcctl.cnf"
_MYSQL_SOCKET = "/run/mysqld/mysqld.sock"
_MYSQL_SYSTEM_DBS = ("information_schema", "mysql", "performance_schema", "sys")


def _mysql_query(sql):
    """Rows (lists of str, NULL as None) of one batch of statements; raises when the client fails."""
    rc, out, err = sh(
        [
            "mariadb",
            "--batch",
            "--skip-column-names",
            "--protocol=socket",
            "--socket=" + _MYSQL_SOCKET,
            "--user=root",
            "-e",
            sql,
        ],
        timeout=20,
    )
    if rc != 0:
        raise RuntimeError(f"mariadb client failed ({rc}): {err.strip()[-300:]}")
    rows = []
    for line in out.splitlines():
        rows.append([None if f == "NULL" else _mysql_unescape(f) for f in line.split("\t")])
    return rows


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


def _mysql_listening(port):
    """Addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port or len(addr_hex) != width:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return sorted(found)


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
        "server": None,
        "databases": [],
        "users": [],
    }
    if package is None or not unit["active"]:
        return out
    system = ", ".join(_mysql_quote(d) for d in _MYSQL_SYSTEM_DBS)
    rows = _mysql_query(
        "SELECT 'server', VERSION(), @@port, @@bind_address;"
        "SELECT 'database', s.SCHEMA_NAME, s.DEFAULT_CHARACTER_SET_NAME, s.SCHEMA_COMMENT,"
        " COALESCE(SUM(t.DATA_LENGTH + t.INDEX_LENGTH), 0)"
        " FROM information_schema.SCHEMATA s LEFT JOIN information_schema.TABLES t"
        f" ON t.TABLE_SCHEMA = s.SCHEMA_NAME WHERE s.SCHEMA_NAME NOT IN ({system})"
        " GROUP BY s.SCHEMA_NAME, s.DEFAULT_CHARACTER_SET_NAME, s.SCHEMA_COMMENT;"
        "SELECT 'user', User, Host, plugin, IF(User LIKE 'sv\\_%', authentication_string, NULL),"
        " max_user_connections FROM mysql.user;"
    )
    server, databases, users = {}, [], []
    for row in rows:
        if row[0] == "server":
            server = {"version": row[1], "port": int(row[2]), "bind_address": row[3]}
        elif row[0] == "database":
            databases.append({"name": row[1], "charset": row[2], "comment": row[3], "size_bytes": int(row[4])})
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
        sql = "".join(
            f"SELECT 'user', {i}; SHOW GRANTS FOR {_mysql_quote(u['user'])}@{_mysql_quote(u['host'])};"
            for i, u in enumerate(svc)
        )
        current = None
        for row in _mysql_query(sql):
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
    out["databases"] = sorted(databases, key=lambda d: d["name"])
    out["users"] = sorted(users, key=lambda u: (u["user"], u["host"]))
    return out
