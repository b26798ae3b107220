"""Per-node apply locks: a second concurrent apply fails naming who holds the lock; stale locks break explicitly.

The lock is a file on the node (/var/lib/svcctl/apply.lock, root 0600) created with O_EXCL, so it works
for every operator and CI job whatever machine they run on, and it survives their crash: a lock past its
expiry is reported as stale and is only removed by `--break-lock`. Once it holds a node's lock, an apply
also waits for any svcctl module still running there from an apply that was killed or cut off (each holds
`CHANGING_LOCK` shared while it runs): it never observes or changes what such a module is still making.
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
from svcctl.hostlib.registry import CHANGING_LOCK
from svcctl.ssh import Sessions, SshSession, SshTarget, run_on_nodes

LOCK_PATH = "/var/lib/svcctl/apply.lock"
DEFAULT_TTL = 3600
CHANGING_WAIT = 20
"""Seconds an apply waits, once it holds a node's lock, for svcctl modules of an earlier apply still running there."""

# POSIX sh, not python3: the lock is taken and released on every apply, converged ones included, and a
# shell costs the node a few milliseconds where python3 costs ~50 (measured: 0.10 s per round trip).
# `set -C` (noclobber) creates the file with O_EXCL: of two applies, exactly one creates it.
# Taken, it then waits (flock -x, up to $wait s) for svcctl modules still running on the node: an apply killed or
# cut off leaves its module to finish there, and the next must not observe or change what it is still making.
_ACQUIRE = r"""
path=$1 token=$2 record=$3 force=$4 changing=$5 wait=$6
umask 077
mkdir -p "${path%/*}" || exit 1
set -C
for attempt in 1 2; do
  if printf '%s' "$record" 2>/dev/null > "$path"; then
    if ! command -v flock >/dev/null || flock -x -w "$wait" "$changing" true 2>/dev/null; then echo ok; exit 0; fi
    rm -f "$path"; echo busy; exit 0
  fi
  case $(cat "$path" 2>/dev/null) in *"\"token\": \"$token\""*) force=1;; esac
  [ "$force" = 1 ] || break
  rm -f "$path"; force=0
done
echo held; date +%s; cat "$path" 2>/dev/null
exit 0
"""
_RELEASE = r"""
path=$1 token=$2
case $(cat "$path" 2>/dev/null) in *"\"token\": \"$token\""*) rm -f "$path";; esac
echo ok
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


def _run(session: SshSession, script: str, *args: str) -> dict[str, object]:
    """Run a lock script as root on the node: {"ok": True}, {"ok": False, "busy": True} (a module still runs
    there) or {"ok": False, "held": record, "now": epoch}."""
    res = session.run(["sh", "-c", script, "svcctl-lock", LOCK_PATH, *args], sudo=True, timeout=CHANGING_WAIT + 30)
    lines = res.stdout.split("\n", 2)
    if res.rc != 0 or lines[0] not in ("ok", "held", "busy"):
        raise SvcctlError(f"{session.name}: could not manage the apply lock: {res.stderr.strip()[-300:]}")
    if lines[0] == "ok":
        return {"ok": True}
    if lines[0] == "busy":
        return {"ok": False, "busy": True}
    try:
        held = json.loads(lines[2]) if len(lines) > 2 and lines[2].strip() else None
    except ValueError:
        held = {}  # unreadable: shown as an unknown holder
    now = float(lines[1]) if len(lines) > 1 and lines[1].strip().isdigit() else time.time()
    return {"ok": False, "held": held if isinstance(held, dict) or held is None else {}, "now": now}


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
        return _run(session, _ACQUIRE, me.token, record, "1" if break_lock else "0", CHANGING_LOCK, str(CHANGING_WAIT))

    results = run_on_nodes(targets, acquire, sessions=sessions)
    taken = [n for n, r in results.items() if isinstance(r, dict) and r.get("ok")]
    problems: list[str] = []
    for node, result in sorted(results.items()):
        if isinstance(result, SvcctlError):
            problems.append(f"{node}: {result.message}")
        elif result.get("busy"):
            problems.append(
                f"{node}: a change an earlier apply started is still being made there (an svcctl module that went "
                f"on after its apply was stopped or cut off; waited {CHANGING_WAIT} s). Nothing was changed: run "
                f"again once it has ended (on the node, `sudo flock {CHANGING_LOCK} true` returns when it has)."
            )
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
        return _run(session, _RELEASE, me.token)

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
