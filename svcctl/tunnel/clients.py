"""Run a client through a tunnel with the connection filled in: environment variables or a 0600 option file.

Passwords never go into any process's arguments: PostgreSQL clients get PGPASSWORD, MariaDB clients a
`--defaults-extra-file` (0600, removed afterwards) as their first argument, redis-cli REDISCLI_AUTH.
The user and database come from the node's registry, so a Connection checks every field before anything
is built from it (svcctl.model.types), option-file values are quoted as the MariaDB client reads them,
and the client's environment never holds SVCCTL_KEY or SVCCTL_KEY_FILE.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from svcctl.errors import SvcctlError
from svcctl.model.types import check_host, check_identifier, unsafe_character
from svcctl.secrets import Secret, scrubbed_environ

MYSQL_CLIENTS = frozenset(
    {"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin", "mysqlshow", "mariadb-show",
     "mysqlcheck", "mariadb-check", "mysqlimport", "mariadb-import"}
)  # fmt: skip
"""Clients that take `--defaults-extra-file` (only as their first argument)."""
MYSQL_INTERACTIVE = frozenset({"mysql", "mariadb"})
"""Those that also read the [mysql] group, where the default database goes (mysqldump would reject it)."""
REDIS_CLIENTS = frozenset({"redis-cli"})
ENGINES = frozenset({"postgres", "mysql", "redis"})


@dataclass(frozen=True)
class Connection:
    """Where and as whom a client connects through the tunnel."""

    engine: str
    host: str
    port: int
    user: str
    password: Secret = field(repr=False)
    database: str | None = None

    def __post_init__(self) -> None:
        """Refuse any field a client, an option file, an argv or an environment variable could misread."""
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"unknown engine {self.engine!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            problems.append(f"port {self.port!r} is not a TCP port")
        fields: list[tuple[str, Callable[[str], str], object]] = [
            ("host", check_host, self.host),
            ("user", check_identifier, self.user),
        ]
        if self.database is not None:
            fields.append(("database", check_identifier, self.database))
        for what, check, value in fields:
            if not isinstance(value, str):
                problems.append(f"{what} {value!r} is not a string")
                continue
            try:
                check(value)
            except ValueError as exc:
                problems.append(f"{what}: {exc}")
        if unsafe_character(self.password.reveal()) is not None:
            problems.append("the password holds a control character")
        if problems:
            raise SvcctlError(
                "refusing to hand a client an unsafe connection: " + "; ".join(problems) + ". The user and "
                "database come from the node's registry: check the node, and run `svcctl plan` to see what it "
                "records."
            )

    def describe(self, show_password: bool = False) -> list[str]:
        """Lines for people: host, port, database, user, and the password only when asked for."""
        lines = [f"host:     {self.host}", f"port:     {self.port}"]
        if self.database is not None:
            lines.append(f"database: {self.database}")
        lines.append(f"user:     {self.user}")
        lines.append(f"password: {self.password.reveal() if show_password else '(hidden; --show-password)'}")
        return lines


@dataclass(frozen=True)
class Prepared:
    """A client command ready to run: its argv, extra environment, and files to remove afterwards."""

    argv: list[str]
    env: dict[str, str]
    cleanup: list[Path]


def option_value(value: str) -> str:
    """`value` for a MariaDB option file: in double quotes, `\\` and `"` backslash-escaped, which the client
    reads back exactly (mysys' option-file parser); a control character (a newline would start a new option,
    such as `pager=`) is refused."""
    bad = unsafe_character(value)
    if bad is not None:
        raise SvcctlError(f"refusing to write a MariaDB option file value holding the control character {bad}.")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_file_text(conn: Connection, interactive: bool) -> str:
    """The option file's text: [client] connection and password, and for interactive clients [mysql] database."""
    lines = ["[client]", f"host={option_value(conn.host)}", f"port={conn.port:d}", "protocol=tcp"]
    lines += [f"user={option_value(conn.user)}", f"password={option_value(conn.password.reveal())}"]
    if interactive and conn.database:
        lines += ["[mysql]", f"database={option_value(conn.database)}"]
    return "\n".join(lines) + "\n"


def _option_file(conn: Connection, directory: Path, interactive: bool) -> Path:
    """A 0600 MariaDB option file with the connection (the password never reaches an argv)."""
    text = option_file_text(conn, interactive)  # refuses before a file exists
    fd, name = tempfile.mkstemp(prefix="svcctl-my-", suffix=".cnf", dir=directory)
    with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
        out.write(text)
    return Path(name)


def prepare(conn: Connection, argv: Sequence[str], tmpdir: Path | None = None) -> Prepared:
    """The client's argv and environment with the connection filled in (pure but for the option file).

    Any command gets SVCCTL_HOST/PORT/USER/DATABASE; PostgreSQL commands the PG* variables; MariaDB
    clients their option file first, other commands its path in SVCCTL_MYSQL_DEFAULTS_FILE; redis-cli
    `-h -p --user` after its name and REDISCLI_AUTH.
    """
    if not argv:
        raise ValueError("no command")
    program = Path(argv[0]).name
    env = {"SVCCTL_HOST": conn.host, "SVCCTL_PORT": str(conn.port), "SVCCTL_USER": conn.user}
    if conn.database:
        env["SVCCTL_DATABASE"] = conn.database
    args = list(argv)
    cleanup: list[Path] = []
    if conn.engine == "postgres":
        env |= {"PGHOST": conn.host, "PGPORT": str(conn.port), "PGUSER": conn.user}
        env["PGPASSWORD"] = conn.password.reveal()
        if conn.database:
            env["PGDATABASE"] = conn.database
    elif conn.engine == "mysql":
        env |= {"MYSQL_HOST": conn.host, "MYSQL_TCP_PORT": str(conn.port)}
        path = _option_file(conn, tmpdir or Path(tempfile.gettempdir()), program in MYSQL_INTERACTIVE)
        cleanup.append(path)
        if program in MYSQL_CLIENTS:
            args = [args[0], f"--defaults-extra-file={path}", *args[1:]]
        else:
            env["SVCCTL_MYSQL_DEFAULTS_FILE"] = str(path)
    elif conn.engine == "redis":
        env["REDISCLI_AUTH"] = conn.password.reveal()
        if program in REDIS_CLIENTS:
            args = [args[0], "-h", conn.host, "-p", str(conn.port), "--user", conn.user, *args[1:]]
    return Prepared(argv=args, env=env, cleanup=cleanup)


@contextlib.contextmanager
def _sigint_to_child() -> Iterator[None]:
    """While a client runs, Ctrl-C is the client's (psql cancels its query): svcctl keeps the tunnel up."""
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: None)  # a handler, not SIG_IGN: exec resets it
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_client(conn: Connection, argv: Sequence[str]) -> int:
    """Run the client through the tunnel and return its exit code; its files are removed afterwards."""
    if shutil.which(argv[0]) is None:
        raise SvcctlError(
            f"cannot run {argv[0]!r}: it is not installed or not on PATH. Install the engine's client (e.g. "
            "postgresql-client, mariadb-client or redis-tools), or give its full path after `--`."
        )
    prepared = prepare(conn, argv)
    try:
        with _sigint_to_child():
            try:
                proc = subprocess.Popen(prepared.argv, env={**scrubbed_environ(), **prepared.env})
            except OSError as exc:
                raise SvcctlError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
            try:
                return proc.wait()
            except BaseException:  # svcctl itself is being stopped (SIGTERM): the client goes too
                proc.terminate()
                proc.wait()
                raise
    finally:
        for path in prepared.cleanup:
            path.unlink(missing_ok=True)
