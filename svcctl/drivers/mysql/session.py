# The session helper's MariaDB part (built into svcctl-session.py after session_header.py): a temporary
# tunnel user at each loopback host with a mysql_native_password hash, and its drop.
import re

from svcctl.drivers.host.session_header import BadRequest, _text, ident, run
from svcctl.hostlib.verifiers import mysql_native_hash

MYSQL_PRIVILEGES = {
    "readwrite": "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES, "
    "CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER",
    "readonly": "SELECT, SHOW VIEW",
}
MYSQL_HOSTS = ("127.0.0.1", "localhost")


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
