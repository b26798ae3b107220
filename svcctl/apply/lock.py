"""Per-node apply locks: a second concurrent apply fails naming who holds the lock; stale locks break explicitly.

The lock is a file on the node (/var/lib/svcctl/apply.lock, root 0600) created with O_EXCL, so it works
for every operator and CI job whatever machine they run on, and it survives their crash: a lock past its
expiry is reported as stale and is only removed by `--break-lock`.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from svcctl.errors import SvcctlError
from svcctl.ssh import Sessions, SshSession, SshTarget, run_on_nodes

LOCK_PATH = "/var/lib/svcctl/apply.lock"
DEFAULT_TTL = 3600

_SCRIPT = r"""
import json, os, sys, time
path, verb, token = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
def current():
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
if verb == "acquire":
    record, force = json.loads(sys.argv[4]), sys.argv[5] == "1"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            held = current()
            if force or (held or {}).get("token") == token:
                os.unlink(path)
                force = False
                continue
            print(json.dumps({"ok": False, "held": held, "now": time.time()}))
            sys.exit(0)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        print(json.dumps({"ok": True}))
        sys.exit(0)
    print(json.dumps({"ok": False, "held": current(), "now": time.time()}))
elif verb == "release":
    held = current()
    if held is not None and held.get("token") == token:
        os.unlink(path)
    print(json.dumps({"ok": True}))
"""


class LockHeld(SvcctlError):
    """Another apply holds (or held, and died holding) the lock of a node."""


@dataclass(frozen=True)
class Holder:
    """Who takes the lock: shown to whoever finds it held."""

    token: str
    who: str
    pid: int

    @classmethod
    def me(cls) -> Holder:
        """This process, as `user@machine`."""
        return cls(token=secrets.token_hex(8), who=f"{getpass.getuser()}@{socket.gethostname()}", pid=os.getpid())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _alive(pid: int) -> bool:
    """Whether a process of this machine with that pid exists (a lock taken here names its apply's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_held(node: str, held: dict[str, object] | None, now: float) -> str:
    """One paragraph on a held lock: who, since when, and whether it looks stale."""
    held = held or {}
    who = held.get("who", "an unknown holder")
    pid = held.get("pid", "?")
    since = held.get("since")
    expires = held.get("expires")
    since_s = f" since {_when(float(since))}" if isinstance(since, int | float) else ""
    if who == Holder.me().who and isinstance(pid, int) and not _alive(pid):
        return (
            f"{node} is locked by {who} (pid {pid}){since_s}, and no process {pid} runs on this machine any more: "
            "the apply that took it died (killed?). If you are sure no other apply is running on it, run again "
            "with --break-lock."
        )
    if isinstance(expires, int | float) and expires < now:
        return (
            f"{node} is locked by {who} (pid {pid}){since_s}, and the lock expired at {_when(float(expires))}: "
            "the apply that took it most likely died. If you are sure no apply is running on it, run again "
            "with --break-lock."
        )
    left = (
        f", for up to {int((float(expires) - now) // 60) + 1} more minutes" if isinstance(expires, int | float) else ""
    )
    return (
        f"{node} is locked by {who} (pid {pid}){since_s}{left}: another apply is running there. Wait for it "
        "to finish and run again; nothing was changed."
    )


def _run(session: SshSession, *args: str) -> dict[str, object]:
    res = session.run(["python3", "-", LOCK_PATH, *args], sudo=True, stdin=_SCRIPT.encode(), timeout=30)
    if res.rc != 0:
        raise SvcctlError(f"{session.name}: could not manage the apply lock: {res.stderr.strip()[-300:]}")
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


@contextmanager
def locked(
    targets: Sequence[SshTarget],
    *,
    break_lock: bool = False,
    ttl: int = DEFAULT_TTL,
    holder: Holder | None = None,
    sessions: Sessions | None = None,
) -> Iterator[Holder]:
    """Hold the apply lock of every node for the duration; all or nothing, released on the way out.

    With `sessions`, taking and releasing the lock use (and leave open) the command's connections.
    """
    me = holder or Holder.me()
    now = time.time()
    record = json.dumps({"token": me.token, "who": me.who, "pid": me.pid, "since": now, "expires": now + ttl})

    def acquire(session: SshSession) -> dict[str, object]:
        return _run(session, "acquire", me.token, record, "1" if break_lock else "0")

    results = run_on_nodes(targets, acquire, sessions=sessions)
    taken = [n for n, r in results.items() if isinstance(r, dict) and r.get("ok")]
    problems: list[str] = []
    for node, result in sorted(results.items()):
        if isinstance(result, SvcctlError):
            problems.append(f"{node}: {result.message}")
        elif not result.get("ok"):
            held = result.get("held")
            problems.append(describe_held(node, held if isinstance(held, dict) else None, float(str(result["now"]))))
    try:
        if problems:
            raise LockHeld("\n".join(problems))
        yield me
    except BaseException:
        _release([t for t in targets if t.name in taken], me, sessions, raising=False)
        raise
    _release([t for t in targets if t.name in taken], me, sessions, raising=True)


def _release(targets: Sequence[SshTarget], me: Holder, sessions: Sessions | None, *, raising: bool) -> None:
    """Release our locks; a node that fails is tried once more on a new connection, then reported.

    A lock left behind blocks every later apply until someone breaks it, so it is never dropped silently:
    raised when nothing else went wrong, else written to stderr beside the error already on its way.
    """
    if not targets:
        return

    def release(session: SshSession) -> dict[str, object]:
        return _run(session, "release", me.token)

    results = run_on_nodes(targets, release, sessions=sessions)
    failed = [t for t in targets if isinstance(results.get(t.name), SvcctlError)]
    if failed:
        results.update(run_on_nodes(failed, release))  # a fresh connection each
    left = sorted(n for n, r in results.items() if isinstance(r, SvcctlError))
    if not left:
        return
    message = (
        f"could not release the apply lock on {', '.join(left)} "
        f"({'; '.join(str(results[n]) for n in left)[:400]}). The lock stays until it is broken: once you are "
        "sure this apply has ended, run the next one with --break-lock."
    )
    if raising:
        raise SvcctlError(message)
    sys.stderr.write(f"warning: {message}\n")
