"""Local port forwards to an engine's port on a node: the system's OpenSSH client, or paramiko in-process."""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

# paramiko.config imports invoke (for `Match exec`, which svcctl leaves to OpenSSH's `ssh -G`): 0.1-0.15 s of a
# tunnel's time to ready here.  Unless something imported it already, paramiko sees it as absent.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]

from svcctl.ssh import check_host, check_untrusted_config, check_user, parse_jump  # noqa: E402
from svcctl.tunnel.errors import HostKeyChanged, HostKeyUnknown, TunnelError  # noqa: E402
from svcctl.tunnel.ports import PortInUse, open_listener, pick_port  # noqa: E402

if TYPE_CHECKING:  # paramiko is imported by the paramiko forwarder's methods: OpenSSH's path never needs it
    import paramiko

    from svcctl.tunnel.connector import SshConnector

log = logging.getLogger(__name__)

# Flow-control sizes for direct-tcpip channels.  paramiko's defaults (2 MiB window, 32 KiB packets) make the
# server stop for window adjusts and make Python pay per-packet costs 8x as often; see docs/tunnel.md.
TUNED_WINDOW_SIZE = 16 * 2**20
TUNED_MAX_PACKET_SIZE = 2**18
RECV_SIZE = 2**20
KEEPALIVE_SECONDS = 15

Connect = Callable[[], "paramiko.Transport"]


@dataclass(frozen=True)
class ForwardSpec:
    """Where to forward: the SSH target (as svcctl's SshTarget has it), the engine's port, the local end."""

    host: str  # address or ssh_config alias of the node
    remote_port: int  # the engine's port on the node, e.g. 5432
    remote_host: str = "127.0.0.1"  # as seen from the node
    user: str | None = None
    port: int | None = None  # the node's SSH port
    identity: Path | None = None
    known_hosts: Path | None = None
    ssh_config: Path | None = None
    jump: str | None = None  # [user@]host[:port], or an ssh_config alias
    bind: str = "127.0.0.1"
    local_port: int | None = None  # None: the first free port from 10000
    name: str | None = None  # the node's name in svcctl, for messages

    @property
    def node(self) -> str:
        """The node's name for messages."""
        return self.name or self.host


class Forwarder(Protocol):
    """A running local port forward; `start` returns once a client can connect, `close` frees the port."""

    spec: ForwardSpec

    @property
    def local_port(self) -> int:
        """The local port clients connect to (known after start)."""
        ...

    def start(self, timeout: float = 15.0) -> None:
        """Open the forward and return once the local port accepts connections; raise SvcctlError if not."""
        ...

    def close(self) -> None:
        """Stop forwarding and free the local port at once; safe to call twice."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...


# Never on a forward's connection: the agent (a compromised node would sign with it), X11, LocalCommand.
# ClearAllForwardings would clear our own -L too; ssh_config forwards are refused by the scan instead.
_NO_SIDE_CHANNELS = {"ForwardAgent": "no", "ForwardX11": "no", "PermitLocalCommand": "no"}
_STDIO_TARGET = "[%h]:%p"


def _check_spec(spec: ForwardSpec) -> None:
    """Refuse what ssh itself would turn into a command: a hostile ssh_config, or a name with shell syntax."""
    if spec.ssh_config is not None:
        check_untrusted_config(spec.ssh_config, spec.node)
    check_host(spec.host, spec.node)
    if spec.user is not None:
        check_user(spec.user, spec.node)
    if spec.jump is not None:
        for hop in spec.jump.split(","):
            user, host, _ = parse_jump(hop)
            check_host(host, spec.node, "jump host")
            if user is not None:
                check_user(user, spec.node, "jump host user")


def _hostport(host: str) -> str:
    """A host for ssh's -L syntax: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------------------------------------------
# OpenSSH


class OpenSshForwarder:
    """`ssh -N -L` as a child process on its own connection (no ControlMaster), strict host keys, batch mode."""

    def __init__(self, spec: ForwardSpec, ssh: str = "ssh") -> None:
        self.spec = spec
        self._ssh = ssh
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._reader: threading.Thread | None = None

    @property
    def local_port(self) -> int:
        """The local port clients connect to (known after start)."""
        if self._port is None:
            raise RuntimeError("the forwarder has not been started")
        return self._port

    def command(self, local_port: int) -> list[str]:
        """The ssh command line; it carries paths and options only, never a secret.

        The node's ssh_config (named by the YAML) is refused if it could run anything, and the names are
        checked, before ssh sees them: ssh would run `Match exec`/ProxyCommand and expand %h into a shell.
        """
        s = self.spec
        _check_spec(s)
        opts = {
            "ExitOnForwardFailure": "yes",
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "3",
            "StrictHostKeyChecking": "yes",
            "BatchMode": "yes",
            "ControlMaster": "no",  # our own connection: terminating ssh must take the forward down with it
            "ControlPath": "none",
            "ConnectTimeout": "10",
            **_NO_SIDE_CHANNELS,
            "Tunnel": "no",
            "UpdateHostKeys": "no",  # the node must not add keys to known_hosts
        }
        if s.known_hosts is not None:
            opts["UserKnownHostsFile"] = str(s.known_hosts)
        argv = [self._ssh, "-N"]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        if s.ssh_config is not None:
            argv += ["-F", str(s.ssh_config)]
        if s.jump is not None:
            # -J would check the jump host's key with whatever ssh_config says; keep it as strict as the node.
            argv += ["-o", f"ProxyCommand={self._jump_command()}"]
        if s.identity is not None:
            argv += ["-i", str(s.identity), "-o", "IdentitiesOnly=yes"]
        if s.port is not None:
            argv += ["-p", str(s.port)]
        if s.user is not None:
            argv += ["-l", s.user]
        argv += ["-L", f"{_hostport(s.bind)}:{local_port}:{_hostport(s.remote_host)}:{s.remote_port}", "--", s.host]
        return argv

    def _jump_command(self) -> str:
        s = self.spec
        words = [self._ssh, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ControlMaster=no"]
        words += ["-o", "ControlPath=none"]
        for key, value in _NO_SIDE_CHANNELS.items():  # -W itself clears every forward but its own
            words += ["-o", f"{key}={value}"]
        if s.known_hosts is not None:
            words += ["-o", f"UserKnownHostsFile={s.known_hosts}"]
        if s.ssh_config is not None:
            words += ["-F", str(s.ssh_config)]
        if s.identity is not None:
            words += ["-i", str(s.identity)]
        words += ["-W", _STDIO_TARGET, "--", str(s.jump)]
        # ssh expands %-tokens in ProxyCommand: keep the two we mean, escape (and quote) every other word.
        return " ".join(w if w == _STDIO_TARGET else shlex.quote(w.replace("%", "%%")) for w in words)

    def start(self, timeout: float = 15.0) -> None:
        """Start ssh and return once the local port accepts connections; raise SvcctlError if ssh gives up."""
        if self._proc is not None:
            raise RuntimeError("the forwarder was already started")
        port = pick_port(self.spec.bind, self.spec.local_port)
        self._port = port
        # A session of its own: Ctrl-C at the terminal goes to the client (psql cancels a query), not to ssh.
        self._proc = subprocess.Popen(
            self.command(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read_stderr, name="ssh-stderr", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self._reader.join(2)
                self._fail(port)
            if _accepts(self.spec.bind, port):
                return
            if time.monotonic() > deadline:
                self.close()
                raise TunnelError(
                    f"ssh to node {self.spec.node} did not open local port {port} within {timeout:.0f} s; "
                    f"ssh said: {self.stderr or '(nothing)'}"
                )
            time.sleep(0.02)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr.append(line)
                log.debug("ssh %s: %s", self.spec.node, line)

    @property
    def stderr(self) -> str:
        """What ssh wrote to stderr so far (the last 200 lines), for error messages."""
        return "\n".join(self._stderr)

    def _fail(self, port: int) -> None:
        text = self.stderr
        code = self._proc.returncode if self._proc else None
        self.close()
        s = self.spec
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested strict" in text:
            raise HostKeyChanged(s.node, s.known_hosts)
        if "Host key verification failed" in text:
            raise HostKeyUnknown(s.node, s.known_hosts)
        if "Address already in use" in text or "cannot listen to port" in text:
            raise PortInUse(s.bind, port)
        if "Permission denied" in text:
            raise TunnelError(
                f"node {s.node} refused the SSH login (user {s.user or 'from ssh_config'}); check the identity "
                f"file and the user's authorized_keys. ssh said: {text}"
            )
        raise TunnelError(f"ssh to node {s.node} exited ({code}) before the tunnel was up; ssh said: {text}")

    def close(self) -> None:
        """Terminate ssh (and so the forward); the local port is free when this returns."""
        proc = self._proc
        _LIVE.discard(self)
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _accepts(bind: str, port: int) -> bool:
    """Whether something listens on bind:port (a connect that is closed at once: the engine sees an empty one)."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "") else "::1" if bind == "::" else bind  # noqa: S104
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# Forwarders still running when the interpreter exits (an exception past the CLI, sys.exit) are closed.
_LIVE: set[OpenSshForwarder] = set()


@atexit.register
def _close_live() -> None:
    for fwd in list(_LIVE):
        fwd.close()


# ---------------------------------------------------------------------------------------------------------------
# paramiko


class ParamikoForwarder:
    """A threaded local listener; each client is bridged to a direct-tcpip channel on one paramiko Transport.

    `connect` returns an authenticated Transport whose host key it has already verified.  If the Transport
    dropped, the next client connection calls `connect` again.
    """

    def __init__(
        self,
        spec: ForwardSpec,
        connect: Connect | None = None,
        *,
        window_size: int = TUNED_WINDOW_SIZE,
        max_packet_size: int = TUNED_MAX_PACKET_SIZE,
        keepalive: int = KEEPALIVE_SECONDS,
    ) -> None:
        self._owned: SshConnector | None = None
        if connect is None:
            from svcctl.tunnel.connector import SshConnector, spec_target

            connect = self._owned = SshConnector(spec_target(spec))
        self.spec = spec
        self._connect = connect
        self._window_size = window_size
        self._max_packet_size = max_packet_size
        self._keepalive = keepalive
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._conns: set[_Bridge] = set()
        self._acceptor: threading.Thread | None = None
        self.connects = 0  # how many Transports `connect` has made (1 + reconnects)

    @property
    def local_port(self) -> int:
        """The local port clients connect to (known after start)."""
        if self._port is None:
            raise RuntimeError("the forwarder has not been started")
        return self._port

    def start(self, timeout: float = 15.0) -> None:
        """Bind the local port, connect (so that auth and host-key errors show now), then accept clients."""
        if self._listener is not None:
            raise RuntimeError("the forwarder was already started")
        self._listener = open_listener(self.spec.bind, self.spec.local_port)
        self._port = port = int(self._listener.getsockname()[1])
        try:
            self._ensure_transport()
        except BaseException:
            self.close()
            raise
        self._listener.settimeout(0.5)
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tunnel-{port}", daemon=True)
        self._acceptor.start()

    def _ensure_transport(self) -> paramiko.Transport:
        with self._lock:
            t = self._transport
            if t is not None and t.is_active():
                return t
            if t is not None:
                log.info("SSH connection to %s dropped; reconnecting", self.spec.node)
                t.close()
            t = self._connect()
            self.connects += 1
            if self._keepalive:
                t.set_keepalive(self._keepalive)
            self._transport = t
            return t

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._closing.is_set():
            try:
                client, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, peer), daemon=True, name="tunnel-open").start()

    def _open_channel(self, peer: tuple[str, int]) -> paramiko.Channel:
        import paramiko  # loaded already: the transport is paramiko's

        s = self.spec
        for attempt in (1, 2):
            t = self._ensure_transport()
            try:
                return t.open_channel(
                    "direct-tcpip",
                    (s.remote_host, s.remote_port),
                    (peer[0], peer[1]),
                    window_size=self._window_size,
                    max_packet_size=self._max_packet_size,
                    timeout=15,
                )
            except paramiko.ChannelException as exc:
                raise TunnelError(
                    f"node {s.node} could not connect to {s.remote_host}:{s.remote_port}: {exc.text}; "
                    f"is the engine running?"
                ) from exc
            except (paramiko.SSHException, EOFError, OSError):
                if attempt == 2 or t.is_active():
                    raise
        raise AssertionError("unreachable")

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            chan = self._open_channel(peer)
        except Exception as exc:
            log.warning("tunnel to %s: %s", self.spec.node, exc)
            client.close()
            return
        bridge = _Bridge(client, chan, self._conns)
        if self._closing.is_set():
            bridge.close()
            return
        bridge.start()

    def close(self) -> None:
        """Stop accepting, cut every bridged connection and the Transport; the port is free on return."""
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for bridge in list(self._conns):
            bridge.close()
        if self._acceptor is not None:
            self._acceptor.join(2)
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None
        if self._owned is not None:  # its sessions hold jump-host connections too
            self._owned.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _Bridge:
    """One client socket <-> one channel, a thread per direction, half-closes passed on (EOF is data too)."""

    def __init__(self, client: socket.socket, chan: paramiko.Channel, registry: set[_Bridge]) -> None:
        self.client = client
        self.chan = chan
        self._registry = registry
        self._done = 0
        self._lock = threading.Lock()
        registry.add(self)

    def start(self) -> None:
        threading.Thread(target=self._up, daemon=True, name="tunnel-up").start()
        threading.Thread(target=self._down, daemon=True, name="tunnel-down").start()

    def _up(self) -> None:
        import paramiko  # loaded already: the channel is paramiko's

        try:
            while data := self.client.recv(RECV_SIZE):
                self.chan.sendall(data)
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            self.close()
        self._finish()

    def _down(self) -> None:
        import paramiko  # loaded already: the channel is paramiko's

        try:
            while data := self.chan.recv(RECV_SIZE):
                self.client.sendall(data)
            self.client.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            self.close()
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._done += 1
            if self._done < 2:
                return
        self.close()

    def close(self) -> None:
        self._registry.discard(self)
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_RDWR)
        self.client.close()
        self.chan.close()


# ---------------------------------------------------------------------------------------------------------------
# The default


VIAS = ("auto", "openssh", "paramiko")
"""How a tunnel forwards: auto (OpenSSH if there is an `ssh` on PATH, else paramiko), or one of them."""
NO_SSH_FALLBACK = (
    "no `ssh` client on PATH: forwarding in-process with paramiko, which is slower for bulk transfers "
    "(0.6-0.8x here); install the OpenSSH client (openssh-client) for full speed."
)


def use_openssh(via: str) -> bool:
    """Whether `via` means the system's OpenSSH client: "openssh" (TunnelError without one), or "auto" with one."""
    if via not in VIAS:
        raise ValueError(f"unknown forwarder {via!r}")
    if via == "paramiko":
        return False
    if shutil.which("ssh") is not None:
        return True
    if via == "openssh":
        raise TunnelError("no `ssh` client on PATH; install openssh-client or use the built-in forwarder.")
    return False


def open_forwarder(spec: ForwardSpec, connect: Connect | None = None, via: str = "auto") -> Forwarder:
    """The forwarder svcctl uses (via="auto"): an OpenSSH ControlMaster with svcctl's settings
    (`svcctl.tunnel.master`, the fastest measured in docs/tunnel.md), else (no `ssh`, or a `connect` given)
    tuned paramiko, with a warning logged when it is for want of `ssh`.

    `via="openssh"` insists on the system's ssh client; `via="paramiko"` asks for the in-process forwarder.
    """
    if connect is None and use_openssh(via):
        from svcctl.tunnel.master import MasterForwarder

        return MasterForwarder.from_spec(spec)
    if via == "auto" and connect is None:
        log.warning("%s", NO_SSH_FALLBACK)
    return ParamikoForwarder(spec, connect)
