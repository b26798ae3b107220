# The session helper's PostgreSQL part (built into svcctl-session.py after session_header.py): a temporary
# tunnel user as a role with a SCRAM verifier, its grants, and its drop.
from svcctl.drivers.host.session_header import _text, fail, ident, run
from svcctl.hostlib.verifiers import scram_verifier

PG_CLIENTS_ROLE = "svcctl_clients"  # the engine change creates it (tasks/postgres.yml)


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


def pg_create_sql(user, database, verifier, expires_at, role, owner=None):
    """[(database to run in, SQL)] creating a session user: login, connect, and the role's privileges; a
    readwrite one acts as the database's `owner` (svcctl's `<database>_owner`, an adopted database's own).
    One step either way: each psql costs the node 50 ms, and a tunnel's time to ready waits for them."""
    owner_name = ident(owner or database + "_owner")
    u, owner = pg_ident(user), pg_ident(owner_name)
    clients = pg_ident(PG_CLIENTS_ROLE)
    sql = (
        f"DO $svcctl$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {pg_literal(PG_CLIENTS_ROLE)}) "
        f"THEN CREATE ROLE {clients} NOLOGIN; END IF; END $svcctl$;\n"
        f"CREATE ROLE {u} LOGIN PASSWORD {pg_literal(verifier)} VALID UNTIL {pg_literal(expires_at)} "
        f"CONNECTION LIMIT 16;\nGRANT CONNECT, TEMPORARY ON DATABASE {pg_ident(database)} TO {u};\n"
        f"GRANT {clients} TO {u};\n"  # svcctl's pg_hba.conf rules name only its members
    )
    if role == "readwrite":
        sql += f"GRANT {owner} TO {u};\nALTER ROLE {u} SET role = {pg_literal(owner_name)};\n"
        return [("postgres", sql)]
    grants = (
        f"GRANT USAGE ON SCHEMA public TO {u};\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO {u};\n"
        f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {u};\n"
    )
    return [(ident(database), sql + grants)]  # roles are the cluster's: one psql in the database does it all


def pg_find_sql(user, database):
    """One line `<roles named user> <databases named database>`."""
    return (
        f"SELECT (SELECT count(*) FROM pg_roles WHERE rolname = {pg_literal(ident(user))}) || ' ' || "
        f"(SELECT count(*) FROM pg_database WHERE datname = {pg_literal(ident(database))});"
    )


def pg_terminate_sql(user):
    return f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {pg_literal(ident(user))};"


def pg_owner_sql(database):
    """The owner of `database`, by name (one line)."""
    return f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {pg_literal(ident(database))};"


def pg_reassign_sql(user, database, owner=None):
    """Run in the database: what the user owns goes to the database's owner, then its grants go."""
    u = pg_ident(user)
    return f"REASSIGN OWNED BY {u} TO {pg_ident(owner or database + '_owner')};\nDROP OWNED BY {u};\n"


def pg_drop_role_sql(user):
    return f"DROP ROLE IF EXISTS {pg_ident(user)};"


def pg_owner(database):
    """The database's owner as the server says (checked like any identifier), or None if there is none."""
    owner = psql(pg_owner_sql(database)).strip()
    return ident(owner) if owner else None


def pg_create(req):
    verifier = scram_verifier(req["password"])
    attrs = req["attrs"]
    owner = pg_owner(req["database"]) if attrs["role"] == "readwrite" else None  # only readwrite acts as it
    steps = pg_create_sql(req["user"], req["database"], verifier, attrs["expires_at"], attrs["role"], owner)
    for database, sql in steps:
        psql(sql, database)


def pg_drop(req):
    user, db = req["user"], req["database"]
    found = psql(pg_find_sql(user, db)).split()
    if found[0] == "0":
        return
    psql(pg_terminate_sql(user))
    if found[1] != "0":
        psql(pg_reassign_sql(user, db, pg_owner(db)), db)
    psql(pg_drop_role_sql(user))
