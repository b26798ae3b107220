"""The tunnel's default forwarder: the system's OpenSSH client as a ControlMaster, with svcctl's own SSH settings.

`ssh -M -N` is svcctl's child, on a control socket in a private directory.  It can connect while svcctl is
still reading the node's registry over its own (paramiko) session; the forward is then added with
`ssh -O forward -L`, which the master answers only once it has bound the local port.  So the port is bound
before anything is created on the node, readiness needs no probe connection to the engine, and the data moves
in OpenSSH's C code (with AES-GCM first: 1.3-1.6x its default cipher here, see docs/tunnel.md).

Settings are `svcctl.ssh.openssh_options` of the node's resolved target, as Ansible gets them in apply:
`-F none`, the pinned known_hosts (strict, the host checked under the name svcctl pins it by), the node's
keys, its jump hosts.  The command lines carry paths, names and options only; the environment's key is not
in ssh's environment.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from svcctl.errors import SvcctlError
from svcctl.leftovers import remove_dead
from svcctl.secrets import scrubbed_environ
from svcctl.ssh import ResolvedTarget, known_entries, openssh_options, resolve
from svcctl.ssh.effective import defaults
from svcctl.ssh.errors import CommandTimeout, Unreachable
from svcctl.tunnel.errors import HostKeyChanged, HostKeyUnknown, TunnelError
from svcctl.tunnel.forward import ForwardSpec
from svcctl.tunnel.ports import PortInUse, pick_port

log = logging.getLogger(__name__)

PREFERRED_CIPHER = "aes128-gcm@openssh.com"
"""Put first in the cipher preference (the others still negotiable) unless the ssh_config chose ciphers."""
KEEPALIVE_SECONDS = 15
RECONNECT_PAUSE = 1.0
_PORT_ATTEMPTS = 20

MAX_OUTPUT = 16 * 1024 * 1024
"""Bytes of stdout plus stderr a command through the master may send back (as svcctl's own SSH sessions)."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class RemoteResult:
    """What a command run through the master returned: exit code and its decoded output."""

    rc: int
    stdout: str
    stderr: str


def cipher_preference(target: ResolvedTarget, ssh: str) -> list[str]:
    """`-o Ciphers=...`: this client's default list with AES-GCM moved first, or nothing if the config chose."""
    if any(keyword == "ciphers" for keyword, _ in target.algorithms):
        return []
    names = [n for value in defaults(ssh).get("ciphers", ()) for n in value.split(",") if n]
    if PREFERRED_CIPHER not in names:
        return []
    return ["-o", "Ciphers=" + ",".join([PREFERRED_CIPHER, *(n for n in names if n != PREFERRED_CIPHER)])]


def destination(target: ResolvedTarget) -> str:
    """The name ssh is given (HostName being the address): the one svcctl finds the pinned key under.

    ssh looks the host key up under the name on its command line; svcctl's own layer accepts a key pinned under
    the alias or the address, so the alias is passed when the pin is under it (or when nothing pins either:
    ssh then fails as svcctl would, with "Host key verification failed").
    """
    if target.host_key_alias is not None or target.alias == target.hostname:
        return target.hostname
    entries = known_entries(target)
    by_alias = target.alias if target.port == 22 else f"[{target.alias}]:{target.port}"
    if any(e.matches(by_alias) for e in entries) or not entries:
        return target.alias
    return target.hostname


def _hostport(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a child that gets SIGTERM when svcctl dies (even by SIGKILL), so no master outlives it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


_PREEXEC = _die_with_parent()
PRIVATE_PREFIX = "svcctl-tunnel-"
"""Control directories are `svcctl-tunnel-<pid>-<random>` in the temporary directory."""


def remove_leftovers() -> None:
    """Remove the control directories of tunnels that were killed (SIGKILL leaves svcctl no time to)."""
    remove_dead(PRIVATE_PREFIX)


class SshMaster:
    """One `ssh -M -N` process to a node; `ready` waits for its control socket, `forward` adds a `-L`."""

    def __init__(self, target: ResolvedTarget, ssh: str) -> None:
        self.target = target
        self.ssh = ssh
        remove_leftovers()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
        self.control = self._dir / "control"
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=scrubbed_environ(),
                start_new_session=True,  # Ctrl-C at the terminal is the client's (psql cancels its query)
                preexec_fn=_PREEXEC,  # prctl only: nothing between fork and exec takes a lock
            )
        except OSError as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise TunnelError(f"cannot run {ssh} for node {target.name}: {exc.strerror or exc}") from None
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read_stderr, name="ssh-master-stderr", daemon=True)
        self._reader.start()

    def command(self) -> list[str]:
        """The master's command line: paths, names and options, never a secret."""
        t = self.target
        argv = [self.ssh, *openssh_options(t, self.ssh), *cipher_preference(t, self.ssh)]
        for key, value in (
            ("ControlMaster", "yes"),
            ("ControlPath", str(self.control).replace("%", "%%")),
            ("ControlPersist", "no"),  # the master is svcctl's child: ending it ends every forward
            ("ExitOnForwardFailure", "yes"),
            ("ServerAliveInterval", str(KEEPALIVE_SECONDS)),
            ("ServerAliveCountMax", "3"),
            ("ConnectTimeout", str(max(1, round(t.connect_timeout)))),
            ("Tunnel", "no"),
            ("UpdateHostKeys", "no"),  # the node must not add keys to the pinned known_hosts
            ("HostName", t.hostname),
        ):
            argv += ["-o", f"{key}={value}"]
        return [*argv, "-l", t.user, "-p", str(t.port), "-N", "--", destination(t)]

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("ssh %s: %s", self.target.name, line)

    @property
    def name(self) -> str:
        """The node's name, for messages."""
        return self.target.name

    def run(
        self,
        argv: Sequence[str],
        *,
        sudo: bool = False,
        stdin: bytes | None = None,
        timeout: float = 60,
        max_output: int = MAX_OUTPUT,
    ) -> RemoteResult:
        """Run argv on the node over the master's connection (`ssh -S`: no second handshake), as SshSession.run.

        The client is given every option the master has (strict, pinned known_hosts), so were the control
        socket gone it would connect just as strictly; Unreachable if ssh itself fails (exit 255). Secrets go
        on `stdin` only; more than `max_output` bytes back and the command is cut off and reported.
        """
        command = shlex.join(["sudo", "-n", "--", *argv] if sudo else list(argv))
        t = self.target
        client = [self.ssh, *openssh_options(t, self.ssh), "-o", "ControlMaster=no"]
        client += ["-o", f"ControlPath={str(self.control).replace('%', '%%')}", "-o", f"HostName={t.hostname}"]
        client += ["-T", "-l", t.user, "-p", str(t.port), "--", destination(t), command]
        try:
            proc = subprocess.Popen(client, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=scrubbed_environ(), start_new_session=True,  # a 2nd Ctrl-C spares a drop
                                    preexec_fn=_PREEXEC)  # fmt: skip
        except OSError as exc:
            raise Unreachable(f"node {t.name}: cannot run {self.ssh}: {exc.strerror or exc}", node=t.name) from None
        try:
            out, err = _collect(proc, stdin or b"", time.monotonic() + timeout, max_output)
        except TimeoutError:
            raise CommandTimeout(
                f"node {t.name}: command did not finish within {timeout:g} s and was abandoned: {_brief(command)}. "
                "Check what it waits for on the host, or allow it more time.",
                node=t.name,
                command=command,
            ) from None
        except _TooMuch:
            raise SvcctlError(
                f"node {t.name} sent more than {max_output / 1048576:g} MiB of output for {_brief(command)}; svcctl "
                "stopped reading and ended the command. No command svcctl runs prints that much: is the node "
                "compromised? Check it before running svcctl against it again."
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if proc.returncode == 255:  # ssh's own failure: the connection is gone (a command of svcctl's never exits 255)
            said = err.decode("utf-8", "replace").strip()[-300:] or "(nothing)"
            raise Unreachable(f"node {t.name}: the SSH connection was lost under a command; ssh said: {said}",
                              node=t.name)  # fmt: skip
        return RemoteResult(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    @property
    def stderr(self) -> str:
        """What ssh wrote to stderr so far (the last 200 lines), for messages."""
        return "\n".join(self._stderr)

    def ready(self, timeout: float) -> None:
        """Return once the master is connected and authenticated (its control socket exists); else raise."""
        deadline = time.monotonic() + timeout
        while not self.control.exists():
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise self.failure()
            if time.monotonic() > deadline:
                raise TunnelError(
                    f"ssh to node {self.target.name} ({self.target.address}) was not connected within "
                    f"{timeout:.0f} s; check that the node is up and reachable. ssh said: {self.stderr or '(nothing)'}"
                )
            time.sleep(0.005)

    def failure(self) -> SvcctlError:
        """Why ssh exited: a changed or unknown host key, a refused login, or ssh's own words."""
        text, t = self.stderr, self.target
        pinned = t.known_hosts_files[0] if t.known_hosts_files else None
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested strict" in text:
            return HostKeyChanged(t.name, pinned)
        if "Host key verification failed" in text:
            return HostKeyUnknown(t.name, pinned)
        if "Permission denied" in text:
            return TunnelError(
                f"node {t.name} refused the SSH login as {t.user}; check the identity file and the user's "
                f"authorized_keys. ssh said: {text}"
            )
        return TunnelError(f"ssh to node {t.name} exited ({self.proc.returncode}); ssh said: {text or '(nothing)'}")

    def forward(self, bind: str, port: int, remote_host: str, remote_port: int) -> None:
        """Have the master listen on bind:port and forward to remote_host:remote_port; PortInUse if it cannot."""
        spec = f"{_hostport(bind)}:{port}:{_hostport(remote_host)}:{remote_port}"
        argv = [self.ssh, "-F", "none", "-o", f"ControlPath={str(self.control).replace('%', '%%')}"]
        argv += ["-O", "forward", "-L", spec, "--", destination(self.target)]
        try:
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=15,
                                 env=scrubbed_environ())  # fmt: skip
        except subprocess.TimeoutExpired:
            raise TunnelError(f"the ssh master for node {self.target.name} did not answer within 15 s") from None
        if res.returncode == 0:
            return
        if "forwarding failed" in res.stderr.lower() and self.proc.poll() is None:
            raise PortInUse(bind, port)
        if self.proc.poll() is not None:
            self._reader.join(2)
            raise self.failure()
        raise TunnelError(f"ssh could not add the forward to node {self.target.name}: {res.stderr.strip()}")

    def close(self) -> None:
        """Terminate ssh (its forwards close with it) and remove the control directory; safe to call twice."""
        _LIVE.discard(self)
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(2)
        shutil.rmtree(self._dir, ignore_errors=True)


class _TooMuch(Exception):
    """`_collect`'s signal that a command sent more than its limit."""


def _brief(command: str, limit: int = 200) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _collect(proc: subprocess.Popen[bytes], stdin: bytes, deadline: float, limit: int) -> tuple[bytes, bytes]:
    """Feed `stdin` and read stdout and stderr to their ends, at most `limit` bytes in all, before `deadline`."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    total, pending = 0, memoryview(stdin)
    with selectors.DefaultSelector() as sel:
        for fd in (out_fd, err_fd):
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if pending:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for key, _ in sel.select(left):
                if key.fd == in_fd:
                    try:
                        pending = pending[os.write(in_fd, pending) :]
                    except BrokenPipeError:  # the command did not read it all: its exit status says why
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(in_fd)
                        proc.stdin.close()
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    continue
                total += len(data)
                if total > limit:
                    raise _TooMuch
                chunks[key.fd].append(data)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


class MasterForwarder:
    """A local port forwarded through an `SshMaster`; if the master's connection drops, a new one takes over.

    `connect()` may be called early (the master then connects while the caller does other work); `start()`
    waits for it and adds the forward.
    """

    def __init__(
        self,
        spec: ForwardSpec,
        target: ResolvedTarget,
        *,
        ssh: str | None = None,
        say: Say | None = None,
        master: SshMaster | None = None,
    ) -> None:
        self.spec = spec  # what to forward (its SSH fields are `target`'s business)
        self.target = target
        self.node = spec.name or target.name
        self._ssh = master.ssh if master is not None else ssh or self.ssh_client()
        self._port: int | None = None
        self._say = say or (lambda text: log.warning("%s", text))
        self._master = master  # one already connecting (started early by the caller), now this forwarder's
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.connects = 0 if master is None else 1  # masters started (1 + reconnects)

    @staticmethod
    def ssh_client() -> str:
        """The `ssh` on PATH, or TunnelError."""
        found = shutil.which("ssh")
        if found is None:
            raise TunnelError("no `ssh` client on PATH; install openssh-client or use the built-in forwarder.")
        return found

    @classmethod
    def from_spec(cls, spec: ForwardSpec) -> MasterForwarder:
        """The forwarder a ForwardSpec describes, its target resolved through ssh_config as plan and apply do."""
        from svcctl.tunnel.connector import spec_target

        return cls(spec, resolve(spec_target(spec)))

    @property
    def local_port(self) -> int:
        """The local port clients connect to (known once start has chosen it)."""
        if self._port is None:
            raise RuntimeError("the forwarder has not been started")
        return self._port

    @property
    def master(self) -> SshMaster | None:
        """The running master (None before connect and after close)."""
        return self._master

    def connect(self) -> SshMaster:
        """Start the master's connection now, without waiting for it (the one running, if there is one)."""
        with self._lock:
            if self._closing.is_set():
                raise TunnelError(f"the tunnel to node {self.node} is closing")
            if self._master is None:
                self._master = SshMaster(self.target, self._ssh)
                self.connects += 1
            return self._master

    def start(self, timeout: float = 15.0) -> None:
        """Choose the port (PortInUse if --port is taken), connect, and return once the master listens on it."""
        if self._port is not None:
            raise RuntimeError("the forwarder was already started")
        self._port = pick_port(self.spec.bind, self.spec.local_port)  # a busy --port fails before ssh is even asked
        try:
            self._open(self.connect(), timeout)
        except BaseException:
            self.close()
            raise
        self._watcher = threading.Thread(target=self._watch, name=f"ssh-master-{self._port}", daemon=True)
        self._watcher.start()

    def _open(self, master: SshMaster, timeout: float) -> None:
        port = self.local_port
        master.ready(timeout)
        for attempt in range(_PORT_ATTEMPTS):
            try:
                master.forward(self.spec.bind, port, self.spec.remote_host, self.spec.remote_port)
                return
            except PortInUse:
                # Taken between the check and ssh's bind: the next free one, unless this port was asked for
                # (or the tunnel is reopening the port its clients know).
                if self.spec.local_port is not None or self.connects > 1 or attempt == _PORT_ATTEMPTS - 1:
                    raise
                port = self._port = pick_port(self.spec.bind, None)

    def _watch(self) -> None:
        """Replace a master that exited while the tunnel is open (the connection dropped): same port again."""
        while not self._closing.is_set():
            master = self._master
            if master is None:
                return
            master.proc.wait()
            if self._closing.is_set():
                return
            self._say(f"the SSH connection to node {self.node} dropped; reconnecting")
            with self._lock:
                master.close()
                self._master = None
            while not self._closing.is_set():
                try:
                    self._open(self.connect(), timeout=30)
                    break
                except Exception as exc:  # a thread of its own: nothing above it to tell
                    if self._closing.is_set():
                        return
                    self._say(f"reconnecting to node {self.node} failed: {exc}")
                    with self._lock:
                        if self._master is not None:
                            self._master.close()
                            self._master = None
                    self._closing.wait(RECONNECT_PAUSE)

    def close(self) -> None:
        """Stop forwarding: the master ends, and the local port is free when this returns; safe to call twice."""
        self._closing.set()
        with self._lock:
            master, self._master = self._master, None
        if master is not None:
            master.close()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# Masters still running when the interpreter exits (an exception past the CLI, sys.exit) are ended.
_LIVE: set[SshMaster] = set()


@atexit.register
def _close_live() -> None:
    for master in list(_LIVE):
        with contextlib.suppress(Exception):
            master.close()
