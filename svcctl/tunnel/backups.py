"""`svcctl backup`, `svcctl backups`, `svcctl backups pull`: take, list and fetch an instance's backups.

Each finds the instance's node as the tunnel does (`access.locate`: the registry that records it for this
environment) and works over that one SSH connection, no Ansible: `backup` starts the instance's own backup
service (`systemctl start --wait`), so a backup taken by hand is made exactly as the timer makes one;
`backups` runs the backup program's `list` (sent on stdin, as root) and checks every field it prints;
`pull` streams one dump with `sudo cat` over the session, hashing it as it arrives, and keeps it only if its
sha256 is the one the node's checksum file and result say, renamed into place without overwriting unless
asked. The node is untrusted: an id, a size or a checksum that fails its pattern is refused, never used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import select
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paramiko

from svcctl.drivers.hostprograms import backup_program
from svcctl.errors import SvcctlError
from svcctl.hostlib.backups import BACKUP_ROOT, EXTENSIONS, ID_PATTERN, unit_name
from svcctl.model.loader import load_environment
from svcctl.model.types import quoted
from svcctl.plan.escape import for_terminal
from svcctl.ssh import SshSession
from svcctl.tunnel.access import Located, locate

Say = Callable[[str], None]

_ID = re.compile(ID_PATTERN)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:[+-][0-9]{2}:[0-9]{2}|Z)?")
MAX_LIST_OUTPUT = 4 * 1024 * 1024
CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupEntry:
    """One backup as the node lists it, every field checked."""

    id: str
    result: str  # ok | failed | unreadable
    file: str | None
    size: int | None
    sha256: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None


class BadChecksum(SvcctlError):
    """A pulled dump's sha256 is not the one its node recorded: nothing was kept."""


def _text(value: object, pattern: re.Pattern[str] | None = None, limit: int = 500) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise ValueError(f"{quoted(str(value), 40)} is not what svcctl writes")
    return value[:limit]  # free text (an error message): escaped where it is printed


def parse_list(node: str, instance: str, engine: str, text: str) -> list[BackupEntry]:
    """The backup program's `list` output as entries, oldest first; a node's output that fails a check is an
    error naming the node (nothing from it is used)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("backups"), list):
            raise ValueError("it is not the backup program's list")
        out = []
        for item in doc["backups"]:
            if not isinstance(item, dict):
                raise ValueError("an entry is not an object")
            ident = _text(item.get("id"), _ID)
            result = item.get("result")
            if ident is None or result not in ("ok", "failed", "unreadable"):
                raise ValueError(f"entry {quoted(str(item.get('id')), 40)} has no id or result svcctl writes")
            expected = f"{ident}.{EXTENSIONS[engine]}"
            size = item.get("size")
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                raise ValueError(f"entry {ident} has an unusable size")
            entry = BackupEntry(
                id=ident,
                result=result,
                file=_text(item.get("file"), re.compile(re.escape(expected))),
                size=size,
                sha256=_text(item.get("sha256"), _SHA256),
                started_at=_text(item.get("started_at"), _TIMESTAMP),
                finished_at=_text(item.get("finished_at"), _TIMESTAMP),
                error=_text(item.get("error")),
            )
            if entry.result == "ok" and (entry.file is None or entry.sha256 is None or entry.size is None):
                raise ValueError(f"entry {ident} is ok but lacks its file, size or checksum")
            out.append(entry)
    except (ValueError, KeyError) as exc:
        raise SvcctlError(
            f"node {node}: the list of backups of instance {instance} is unusable ({exc}); svcctl uses nothing "
            f"from it. Check {BACKUP_ROOT}/{instance}/ on the node."
        ) from None
    return sorted(out, key=lambda e: e.id)


def _scheduled(located: Located) -> None:
    """Refuse an instance whose backups this environment never applied (no backup.<instance> record)."""
    if f"backup.{located.instance}" not in located.records:
        raise SvcctlError(
            f"instance {located.instance} has no backups scheduled on node {located.node}: declare backup: "
            "on it or its plan (docs/backups.md) and run `svcctl apply`."
        )


@contextlib.contextmanager
def _located(env_path: Path, instance: str) -> Iterator[tuple[Located, SshSession]]:
    env = load_environment(env_path)
    located, session = locate(env, env.name, instance)
    try:
        _scheduled(located)
        yield located, session
    finally:
        session.close()


def _list(located: Located, session: SshSession) -> list[BackupEntry]:
    res = session.run(
        ["python3", "-", "list", located.instance],
        sudo=True,
        stdin=backup_program().encode(),
        timeout=60,
        max_output=MAX_LIST_OUTPUT,
    )
    if res.rc != 0:
        raise SvcctlError(f"node {located.node}: cannot list the backups: {quoted(res.stderr.strip()[-300:], 300)}")
    return parse_list(located.node, located.instance, located.engine, res.stdout)


def list_backups(env_path: Path, instance: str) -> tuple[Located, list[BackupEntry]]:
    """The instance's backups on its node, oldest first."""
    with _located(env_path, instance) as (located, session):
        return located, _list(located, session)


def take_backup(env_path: Path, instance: str, timeout: float) -> tuple[Located, BackupEntry]:
    """Start the instance's backup service and wait for it; the new backup's entry (ok or failed)."""
    with _located(env_path, instance) as (located, session):
        before = {e.id for e in _list(located, session)}
        service = unit_name(located.instance, "service")
        res = session.run(["systemctl", "start", "--wait", "--", service], sudo=True, timeout=timeout)
        made = [e for e in _list(located, session) if e.id not in before]
        if not made:
            why = quoted((res.stderr or res.stdout).strip()[-300:], 300) or f"exit code {res.rc}"
            raise SvcctlError(
                f"node {located.node}: {service} made no backup ({why}); see `journalctl -u {service}` there."
            )
        return located, made[-1]


def choose(entries: list[BackupEntry], wanted: str, instance: str) -> BackupEntry:
    """The backup `wanted` names (an id, or `latest`: the newest good one), which must have succeeded."""
    good = [e for e in entries if e.result == "ok"]
    if wanted == "latest":
        if not good:
            raise SvcctlError(f"instance {instance} has no successful backup yet; take one with `svcctl backup`.")
        return good[-1]
    found = next((e for e in entries if e.id == wanted), None)
    if found is None:
        known = ", ".join(e.id for e in good[-5:]) or "none"
        raise SvcctlError(f"instance {instance} has no backup {quoted(wanted, 40)} (newest good ones: {known}).")
    if found.result != "ok":
        raise SvcctlError(
            f"backup {found.id} of instance {instance} failed ({found.error or 'no dump'}); pick another."
        )
    return found


def _stream(session: SshSession, argv: list[str], sink: Callable[[bytes], None], timeout: float) -> tuple[int, str]:
    """Run argv via sudo on the session, handing stdout to `sink` chunk by chunk; (exit code, stderr tail)."""
    try:
        channel = session.transport.open_session(timeout=30)
    except (paramiko.SSHException, OSError) as exc:
        raise SvcctlError(f"node {session.name}: cannot open a channel: {exc}") from None
    err = bytearray()
    deadline = time.monotonic() + timeout
    try:
        channel.settimeout(timeout)
        channel.exec_command(shlex.join(["sudo", "-n", "--", *argv]))
        channel.shutdown_write()
        while True:
            while channel.recv_ready():
                sink(channel.recv(CHUNK))
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                del err[:-4096]
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if channel.eof_received and not channel.recv_ready() and not channel.recv_stderr_ready():
                channel.status_event.wait(max(0.0, deadline - time.monotonic()))
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SvcctlError(f"node {session.name}: the copy did not finish within {timeout:g} s")
            select.select([channel], [], [], min(remaining, 5))
        return channel.recv_exit_status(), err.decode("utf-8", "replace").strip()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SvcctlError(f"node {session.name}: the connection was lost during the copy: {exc}") from None
    finally:
        channel.close()


def _read_small(session: SshSession, path: str) -> str:
    res = session.run(["cat", "--", path], sudo=True, timeout=30, max_output=4096)
    if res.rc != 0:
        raise SvcctlError(f"node {session.name}: cannot read {path}: {quoted(res.stderr.strip()[-200:], 200)}")
    return res.stdout


def checked_digest(entry: BackupEntry, checksum_file: str) -> str:
    """The sha256 a pulled dump must have: the result's, which the checksum file (`<hex>  <file>`) must agree
    with; anything else is refused."""
    words = checksum_file.split()
    if len(words) != 2 or words[1] != entry.file or not _SHA256.fullmatch(words[0]) or words[0] != entry.sha256:
        raise BadChecksum(
            f"backup {entry.id}: its checksum file does not match its recorded result, so svcctl cannot tell which "
            "is right; nothing was copied. Check the files on the node."
        )
    return words[0]


def pull_backup(env_path: Path, instance: str, directory: Path, wanted: str, force: bool, timeout: float) -> Path:
    """Copy one backup into `directory`; kept only if its sha256 matches, renamed into place atomically, and
    an existing file is replaced only with `force`."""
    if not directory.is_dir():
        raise SvcctlError(f"{directory} is not a directory; create it or name another.")
    with _located(env_path, instance) as (located, session):
        entry = choose(_list(located, session), wanted, instance)
        assert entry.file is not None and entry.sha256 is not None
        final = directory / entry.file
        if final.exists() and not force:
            raise SvcctlError(f"{final} exists; svcctl never overwrites a file without --force. Nothing was copied.")
        remote = f"{BACKUP_ROOT}/{located.instance}/{entry.file}"
        expected = checked_digest(entry, _read_small(session, f"{BACKUP_ROOT}/{located.instance}/{entry.id}.sha256"))
        fetch = functools.partial(_stream, session, ["cat", "--", remote], timeout=timeout)
        copy_into(directory, entry, expected, force, fetch, where=f"node {located.node}: {remote}")
        return final


Fetch = Callable[[Callable[[bytes], None]], tuple[int, str]]
"""Sends a dump's bytes to the sink it is given; returns (exit code, stderr)."""


def copy_into(directory: Path, entry: BackupEntry, expected: str, force: bool, fetch: Fetch, where: str) -> Path:
    """Write what `fetch` sends to a hidden partial file in `directory`, hashing it; keep it as the entry's file
    only if its sha256 is `expected`, without replacing an existing file unless `force`."""
    assert entry.file is not None
    final = directory / entry.file
    tmp = directory / f".{entry.file}.{os.getpid()}.partial"
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:

            def sink(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)

            rc, err = fetch(sink)
            out.flush()
            os.fsync(out.fileno())
        if rc != 0:
            raise SvcctlError(f"{where}: cannot read it: {quoted(err[-300:], 300)}; nothing was kept.")
        verify(entry, digest.hexdigest(), expected)
        if force:
            tmp.replace(final)
        else:
            try:
                os.link(tmp, final)  # fails if it appeared meanwhile: never overwrite
            except FileExistsError:
                raise SvcctlError(f"{final} appeared during the copy; nothing was overwritten.") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final


def verify(entry: BackupEntry, got: str, expected: str) -> None:
    """Refuse a copy whose sha256 is not the recorded one."""
    if got != expected:
        raise BadChecksum(
            f"backup {entry.id}: the copy's sha256 is {got}, but the node recorded {expected}; the copy was "
            "deleted. The dump on the node may be damaged: take a new backup, or pull another."
        )


def entry_json(entry: BackupEntry) -> dict[str, Any]:
    """An entry as `backups -o json` prints it."""
    return asdict(entry)


def human_size(size: int | None) -> str:
    """1536 -> `1.5 KiB`."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def render_list(located: Located, entries: list[BackupEntry]) -> list[str]:
    """The text table of `svcctl backups`; what the node wrote is escaped."""
    lines = [f"Backups of {located.engine} instance {located.instance} on node {located.node}:"]
    if not entries:
        return [*lines, "  none yet (svcctl backup takes one now)"]
    lines.append(f"  {'ID':<17} {'STARTED':<26} {'SIZE':>10}  {'SHA256':<64}  RESULT")
    for e in entries:
        result = e.result if e.error is None else f"{e.result}: {for_terminal(e.error)}"
        lines.append(
            f"  {e.id:<17} {e.started_at or '-':<26} {human_size(e.size):>10}  {e.sha256 or '-':<64}  {result}"
        )
    return lines
