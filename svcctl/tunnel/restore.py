"""`svcctl restore`: put one of an instance's backups back, into it or into another instance on the same node.

Over the same SSH connection as `svcctl backups` (no Ansible): the backup program first checks the dump's
sha256 against its checksum file and says whether the target holds data; over data, restore needs
`--force` and a "yes" (or `--auto-approve`, as apply's prompt); then the program restores it: PostgreSQL
with pg_restore --clean --if-exists --no-owner --no-acl as the instance's owner role (so every object is the
owner's, and svcctl's grants and default privileges give the bindings what they had), MariaDB by piping the
dump into its database, Redis by stopping the instance, replacing its RDB and starting it. Users, passwords
and grants are never in a dump, so bindings keep working. `--verify` is a restore drill: afterwards every table
the dump holds must be in the target with exactly the dump's rows (PostgreSQL: its COPY blocks, MariaDB: its
INSERT tuples), and the restore's time is reported. A Redis drill counts each database's keys in the RDB (every
key walked, checked against its RESIZEDB sizes) and asks the restored instance's INFO keyspace as its admin,
the password derived here and sent on the program's stdin: each database must hold the dump's keys, fewer
only by keys with a TTL (Redis drops the expired ones as it loads), and no database the dump has not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svcctl.drivers.hostprograms import backup_program
from svcctl.drivers.postgres.driver import owner_role
from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.names import sql_ident
from svcctl.model.types import check_identifier, quoted
from svcctl.secrets import Secret, instance_admin_password, load_key
from svcctl.ssh import SshSession
from svcctl.tunnel.access import Located, locate
from svcctl.tunnel.backups import BackupEntry, _list, _scheduled, choose

Confirm = Callable[[str], bool]


@dataclass(frozen=True)
class RestoreOptions:
    """What the command line asked for."""

    instance: str
    env_path: Path = Path()
    source: str = "latest"  # --from
    into: str | None = None
    force: bool = False
    auto_approve: bool = False
    interactive: bool = False  # a terminal to ask on
    verify: bool = False  # afterwards, compare the target's tables and rows with the dump's (a restore drill)
    timeout: float = 6 * 3600


def request(
    located: Located,
    target: Located,
    entry: BackupEntry,
    check: bool,
    verify: bool = False,
    admin_password: Secret | None = None,
) -> bytes:
    """The backup program's restore request: names and identifiers from the target's record, and for a Redis
    drill the target's admin password (the request is the program's stdin, never an argument)."""
    req: dict[str, object] = {"engine": target.engine, "source": located.instance, "target": target.instance,
                              "id": entry.id, "check": check, "verify": verify}  # fmt: skip
    if admin_password is not None:
        req["admin_password"] = admin_password.reveal()
    if target.engine in ("postgres", "mysql"):
        req["database"] = target.database or sql_ident(target.instance)
    if target.engine == "postgres":
        owner = target.attrs.get("owner") or owner_role(target.instance)
        req["owner"] = target.checked("owner", owner, check_identifier)
    return json.dumps(req).encode()


def counts(doc: dict[str, object], key: str) -> dict[str, int]:
    """One side of the backup program's verify answer, checked: table names (text) to row counts."""
    value = doc.get(key)
    if not isinstance(value, dict) or len(value) > 100_000:
        raise SvcctlError(f"the backup program's {key} table counts are unreadable")
    out: dict[str, int] = {}
    for name, n in value.items():
        if not isinstance(name, str) or len(name) > 300 or not isinstance(n, int) or isinstance(n, bool):
            raise SvcctlError(f"the backup program's {key} table counts are unreadable")
        out[name] = n
    return out


def drill_report(
    instance: str,
    backup: str,
    expected: dict[str, int],
    actual: dict[str, int],
    volatile: dict[str, int] | None = None,
) -> str:
    """The drill's verdict: every table of the dump in the target with the dump's rows, else a SvcctlError
    naming the differences (tables the target has beyond the dump are listed, not a failure). With `volatile`
    (Redis: keys per database, and how many of each have a TTL), `redis_drill_report`."""
    if volatile is not None:
        return redis_drill_report(instance, backup, expected, actual, volatile)
    problems = [
        f"{quoted(t, 80)}: {'missing' if t not in actual else f'{actual[t]} rows, the dump has {n}'}"
        for t, n in sorted(expected.items())
        if actual.get(t) != n
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SvcctlError(
            f"restore drill of backup {backup} into {instance} failed: {shown}. The dump and the restored "
            "database differ; do not rely on this backup before finding out why."
        )
    extra = sorted(set(actual) - set(expected))
    tail = f" ({len(extra)} table(s) in the target are not in the dump: {', '.join(quoted(t, 80) for t in extra[:5])})"
    rows = sum(expected.values())
    return f"Verified: {len(expected)} table(s), {rows} row(s), as the dump holds them" + (tail if extra else "") + "."


def redis_drill_report(
    instance: str, backup: str, expected: dict[str, int], actual: dict[str, int], volatile: dict[str, int]
) -> str:
    """A Redis drill's verdict: each database of the RDB with its keys in the target (fewer only by keys with a
    TTL, which Redis drops once expired), and no keys in a database the RDB does not have; else a SvcctlError."""
    problems = []
    for db in sorted(set(expected) | set(actual), key=_db_order):
        want, have, ttl = expected.get(db, 0), actual.get(db, 0), volatile.get(db, 0)
        if not want - ttl <= have <= want:
            held = f"{want} key(s)" + (f", {ttl} of them with a TTL" if ttl else "") if want else "none"
            problems.append(f"{quoted(db, 20)}: {have} key(s), the dump has {held}")
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SvcctlError(
            f"restore drill of backup {backup} into {instance} failed: {shown}. The dump and the restored "
            "instance differ; do not rely on this backup before finding out why."
        )
    gone = sum(expected.values()) - sum(actual.get(db, 0) for db in expected)
    tail = f" ({gone} key(s) with a TTL expired since the backup)" if gone else ""
    return f"Verified: {len(expected)} database(s), {sum(expected.values())} key(s), as the dump holds them{tail}."


def _db_order(name: str) -> tuple[int, str]:
    digits = name[2:]
    return (int(digits), name) if digits.isdigit() else (-1, name)


def _run(session: SshSession, payload: bytes, timeout: float) -> dict[str, object]:
    """Run the backup program's `restore` with `payload` as its request; its JSON answer."""
    # The program text is an argument of python3 -c (no secret in it); the request is stdin.
    res = session.run(["python3", "-c", backup_program(), "restore"], sudo=True, stdin=payload, timeout=timeout)
    if res.rc != 0:
        raise SvcctlError(f"node {session.name}: restore refused or failed: {quoted(res.stderr.strip()[-600:], 600)}")
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise SvcctlError(f"node {session.name}: the backup program's answer is unreadable")
    return doc


def run_restore(opts: RestoreOptions, say: Callable[[str], None], confirm: Confirm) -> int:
    """Restore a backup; 0 when restored, 1 when refused or cancelled."""
    env = load_environment(opts.env_path)
    target_name = opts.into or opts.instance
    if target_name not in env.instances:
        raise SvcctlError(f"no instance {target_name!r} in environment {env.name!r}.")
    if opts.into is not None and env.engine_of(opts.into) != env.engine_of(opts.instance):
        raise SvcctlError(
            f"instance {opts.into} runs {env.engine_of(opts.into)}, but {opts.instance}'s backups are "
            f"{env.engine_of(opts.instance)} dumps; restore into an instance of the same engine."
        )
    # A Redis drill asks the restored instance as its admin: the key is needed before anything is changed.
    admin_key = load_key(env.name) if opts.verify and env.engine_of(target_name) == "redis" else None
    located, session = locate(env, env.name, opts.instance)
    try:
        _scheduled(located)
        target = located
        if opts.into is not None and opts.into != opts.instance:
            target_located, other = locate(env, env.name, opts.into)
            other.close()
            if target_located.node != located.node:
                raise SvcctlError(
                    f"instance {opts.into} is on node {target_located.node}, {opts.instance}'s backups on "
                    f"{located.node}; svcctl restores only on one node. Pull the backup (svcctl backups pull) "
                    "and restore it with the engine's own client through `svcctl tunnel`."
                )
            target = target_located
        entry = choose(_list(located, session), opts.source, opts.instance)
        probe = _run(session, request(located, target, entry, check=True), 300)
        if probe.get("has_data") is True:
            if not opts.force:
                raise SvcctlError(
                    f"instance {target.instance} holds data, which restoring backup {entry.id} replaces; run again "
                    "with --force (and confirm, or --auto-approve) to replace it. Nothing was changed."
                )
            if not opts.auto_approve:
                if not opts.interactive:
                    raise SvcctlError(
                        "restore over existing data needs confirmation and there is no terminal to ask on; run "
                        "again with --auto-approve. Nothing was changed."
                    )
                question = (
                    f"Restore backup {entry.id} of {opts.instance} into {target.instance} on {target.node}, "
                    "replacing its data? Only 'yes' will be accepted: "
                )
                if not confirm(question):
                    say("Restore cancelled; nothing was changed.")
                    return 1
        say(f"Restoring backup {entry.id} of {opts.instance} into {target.instance} on {target.node} ...")
        started = time.monotonic()
        _run(session, request(located, target, entry, check=False), opts.timeout)
        took = time.monotonic() - started
        say(f"Restored backup {entry.id} into {target.instance} in {took:.1f} s; its bindings' users and grants are "
            "unchanged.")  # fmt: skip
        if opts.verify and target.engine == "redis":
            admin = instance_admin_password(admin_key, target.instance) if admin_key is not None else None
            doc = _run(session, request(located, target, entry, check=False, verify=True, admin_password=admin),
                       opts.timeout)  # fmt: skip
            say(drill_report(target.instance, entry.id, counts(doc, "expected"), counts(doc, "actual"),
                             counts(doc, "volatile")))  # fmt: skip
        elif opts.verify:
            doc = _run(session, request(located, target, entry, check=False, verify=True), opts.timeout)
            say(drill_report(target.instance, entry.id, counts(doc, "expected"), counts(doc, "actual")))
        return 0
    finally:
        session.close()
