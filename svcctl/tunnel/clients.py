"""Run a client through a tunnel with the connection filled in: environment variables or a 0600 option file.

Passwords never go into any process's arguments: PostgreSQL clients get PGPASSWORD, MariaDB clients a
`--defaults-extra-file` (0600, removed afterwards) as their first argument, redis-cli REDISCLI_AUTH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from svcctl.errors import SvcctlError
from svcctl.secrets import Secret

MYSQL_CLIENTS = frozenset(
    {"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin", "mysqlshow", "mariadb-show",
     "mysqlcheck", "mariadb-check", "mysqlimport", "mariadb-import"}
)  # fmt: skip
"""Clients that take `--defaults-extra-file` (only as their first argument)."""
MYSQL_INTERACTIVE = frozenset({"mysql", "mariadb"})
"""Those that also read the [mysql] group, where the default database goes (mysqldump would reject it)."""
REDIS_CLIENTS = frozenset({"redis-cli"})


@dataclass(frozen=True)
class Connection:
    """Where and as whom a client connects through the tunnel."""

    engine: str
    host: str
    port: int
    user: str
    password: Secret = field(repr=False)
    database: str | None = None

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


def _option_file(conn: Connection, directory: Path, interactive: bool) -> Path:
    """A 0600 MariaDB option file with the connection (the password never reaches an argv)."""
    fd, name = tempfile.mkstemp(prefix="svcctl-my-", suffix=".cnf", dir=directory)
    lines = ["[client]", f"host={conn.host}", f"port={conn.port}", "protocol=tcp", f"user={conn.user}"]
    lines.append(f"password={conn.password.reveal()}")
    if interactive and conn.database:
        lines += ["[mysql]", f"database={conn.database}"]
    with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
        out.write("\n".join(lines) + "\n")
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
                proc = subprocess.Popen(prepared.argv, env={**os.environ, **prepared.env})
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
