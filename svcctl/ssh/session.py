"""Connections: dial through jump hosts, check the host key before any credential, authenticate, run."""

from __future__ import annotations

import copy
import errno
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import paramiko
from paramiko.pkey import PublicBlob

from svcctl.errors import SvcctlError
from svcctl.ssh.errors import CommandTimeout, SshConfigError, Unreachable
from svcctl.ssh.known_hosts import check_host_key, fingerprint, known_entries, preferred_key_types
from svcctl.ssh.proxy import ProxyProcess
from svcctl.ssh.target import ResolvedTarget, SshTarget, resolve

T = TypeVar("T")

KEEPALIVE_SECONDS = 15
# paramiko's transport threads log failures (with tracebacks) at ERROR; without a handler Python would print
# them to stderr. Our errors already say what went wrong, so they are silent unless the CLI configures logging.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass(frozen=True)
class CommandResult:
    """What a remote command returned: exit code and its decoded output."""

    rc: int
    stdout: str
    stderr: str


def _command_line(argv: Sequence[str], sudo: bool) -> str:
    if isinstance(argv, str) or not argv:
        raise ValueError("argv must be a non-empty sequence of arguments, not a string")
    return shlex.join(["sudo", "-n", "--", *argv] if sudo else list(argv))


def _brief(command: str, limit: int = 200) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


@dataclass
class SshSession:
    """One authenticated connection to a node (through its jump hosts); run commands or open forwards."""

    target: ResolvedTarget
    transport: paramiko.Transport
    hops: list[paramiko.Transport] = field(default_factory=list)
    proxies: list[ProxyProcess] = field(default_factory=list)  # ProxyCommands the connection runs over

    @property
    def name(self) -> str:
        """The node's name, for messages."""
        return self.target.name

    MAX_OUTPUT = 16 * 1024 * 1024
    """Bytes of stdout plus stderr any command may send back (svcctl's largest, observe, sends kilobytes)."""

    class OutputTooLarge(Exception):
        """`_collect`'s signal that a command sent more than its limit; `run` reports it naming the node."""

    def run(
        self,
        argv: Sequence[str],
        *,
        sudo: bool = False,
        stdin: bytes | None = None,
        timeout: float = 60,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        """Run argv (each argument shell-quoted) on the node, optionally via `sudo -n`, within `timeout` s.

        The command line can appear in error messages: pass secrets through `stdin`, never argv. A node
        that sends more than `max_output` bytes is cut off (channel closed) and reported: a compromised
        node must not exhaust the controller's memory.
        """
        command = _command_line(argv, sudo)
        deadline = time.monotonic() + timeout
        try:
            channel = self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise self._lost(exc) from None
        try:
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = self._collect(channel, deadline, max_output)
            if not channel.status_event.wait(max(deadline - time.monotonic(), 0)):
                raise TimeoutError
            if channel.exit_status == -1 and not self.transport.is_active():
                raise self._lost(EOFError("the connection closed before the command's exit status arrived"))
            return CommandResult(channel.exit_status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        except SshSession.OutputTooLarge:
            raise SvcctlError(
                f"node {self.name} sent more than {max_output / 1048576:g} MiB of output for {_brief(command)}; svcctl "
                "stopped reading and closed the channel. No command svcctl runs prints that much: is the node "
                "compromised? Check it before running svcctl against it again."
            ) from None
        except TimeoutError:
            raise CommandTimeout(
                f"node {self.name}: command did not finish within {timeout:g} s and was abandoned: "
                f"{_brief(command)}. Check what it waits for on the host, or allow it more time.",
                node=self.name,
                command=command,
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        finally:
            channel.close()

    @staticmethod
    def _collect(channel: paramiko.Channel, deadline: float, max_output: int = MAX_OUTPUT) -> tuple[bytes, bytes]:
        """Read stdout and stderr until EOF; OutputTooLarge (reading stops) once together they pass `max_output`."""
        out, err = bytearray(), bytearray()
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
                if len(out) + len(err) > max_output:
                    raise SshSession.OutputTooLarge
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                if len(out) + len(err) > max_output:
                    raise SshSession.OutputTooLarge
            if (channel.eof_received or channel.closed) and not (channel.recv_ready() or channel.recv_stderr_ready()):
                return bytes(out), bytes(err)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            select.select([channel], [], [], remaining)

    def open_forward(self, remote_host: str, remote_port: int, *, timeout: float | None = None) -> paramiko.Channel:
        """A direct-tcpip channel to remote_host:remote_port as seen from the node (what a tunnel carries)."""
        try:
            return self.transport.open_channel(
                "direct-tcpip",
                (remote_host, remote_port),
                ("127.0.0.1", 0),
                timeout=timeout if timeout is not None else self.target.connect_timeout,
            )
        except paramiko.ChannelException as exc:
            raise Unreachable(
                f"node {self.name}: the SSH server of {self.target.shown} refused to forward to "
                f"{remote_host}:{remote_port} ({exc.text}). Check that something listens there on the node "
                "and that sshd allows TCP forwarding (AllowTcpForwarding).",
                node=self.name,
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None

    def _lost(self, exc: BaseException) -> Unreachable:
        reason = str(exc) or type(exc).__name__
        return Unreachable(
            f"node {self.name}: the SSH connection to {self.target.shown} was lost ({reason}). "
            "Check that the host is still up and reachable, then retry.",
            node=self.name,
        )

    def close(self) -> None:
        """Close the connection, then the jump hosts' connections it went through, then its ProxyCommand."""
        self.transport.close()
        for hop in reversed(self.hops):
            hop.close()
        for proxy in self.proxies:
            proxy.close()

    def __enter__(self) -> SshSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(target: SshTarget | ResolvedTarget) -> SshSession:
    """Resolve, dial (through jump hosts), check the host key before sending credentials, authenticate."""
    resolved = resolve(target) if isinstance(target, SshTarget) else target
    chain: list[ResolvedTarget] = []
    hop: ResolvedTarget | None = resolved
    while hop is not None:
        chain.insert(0, hop)
        hop = hop.jump
    transports: list[paramiko.Transport] = []
    proxies: list[ProxyProcess] = []
    try:
        for index, hop_target in enumerate(chain):
            is_final = index == len(chain) - 1
            role = "" if is_final else "jump host "
            via = transports[-1] if transports else None
            transports.append(_open_transport(hop_target, via, role, proxies))
    except BaseException:
        for transport in reversed(transports):
            transport.close()
        for proxy in proxies:
            proxy.close()
        raise
    return SshSession(resolved, transports[-1], transports[:-1], proxies)


def _unreachable(target: ResolvedTarget, role: str, reason: str, advice: str) -> Unreachable:
    via = f" through jump host {target.jump.shown}" if target.jump is not None else ""
    if target.proxy_command is not None:
        via = f" through the ProxyCommand of {target.config_file}"
    return Unreachable(
        f"node {target.name}: cannot connect to {role}{target.shown}{via}: {reason}. {advice}",
        node=target.name,
    )


def _dial(
    target: ResolvedTarget, via: paramiko.Transport | None, role: str, proxies: list[ProxyProcess]
) -> socket.socket | paramiko.Channel:
    timeout = target.connect_timeout
    check = f"Check that the host is up and sshd listens on port {target.port}"
    if target.proxy_command is not None:
        try:
            proxy = ProxyProcess(target.proxy_command)
        except OSError as exc:
            raise _unreachable(
                target, role, f"cannot start the ProxyCommand ({exc.strerror or exc})", "Check $SHELL and the command."
            ) from None
        proxies.append(proxy)
        proxy.socket.settimeout(timeout)
        return proxy.socket
    if via is not None:
        try:
            return via.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:
            raise _unreachable(target, role, f"the jump host could not connect ({exc.text})", check + ".") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _unreachable(target, role, f"the jump host did not open a channel ({exc})", check + ".") from None
    try:
        return socket.create_connection((target.hostname, target.port), timeout=timeout)
    except socket.gaierror as exc:
        raise _unreachable(
            target, role, f"cannot resolve {target.hostname} ({exc.strerror})", "Check the host name and DNS."
        ) from None
    except TimeoutError:
        raise _unreachable(
            target, role, f"timed out after {timeout:g} s", check + ", and that no firewall drops packets."
        ) from None
    except ConnectionRefusedError:
        raise _unreachable(target, role, "connection refused", check + ".") from None
    except OSError as exc:
        unroutable = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        reason = "no route to host" if unroutable else (exc.strerror or str(exc))
        raise _unreachable(target, role, reason, check + ", and the network path to it.") from None


FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


_PUBKEY_ALGORITHMS: tuple[str, ...] = tuple(getattr(paramiko.Transport, "_preferred_pubkeys", ()))
_SECURITY_OPTION = {"ciphers": "ciphers", "macs": "digests", "kexalgorithms": "kex", "hostkeyalgorithms": "key_types"}


def _restrict(options: paramiko.SecurityOptions, target: ResolvedTarget, chosen: dict[str, tuple[str, ...]]) -> None:
    """The algorithm lists the config chose, in its order, as far as paramiko has them; none at all: an error."""
    for keyword, attribute in _SECURITY_OPTION.items():
        if keyword not in chosen:
            continue
        supported = tuple(getattr(options, attribute))
        usable = [name for name in chosen[keyword] if name in supported]
        if not usable:
            raise SshConfigError(
                f"node {target.name}: the ssh_config {target.config_file} allows only {','.join(chosen[keyword])} as "
                f"{keyword} for {target.alias}, and svcctl's SSH client (paramiko) has none of them (it has "
                f"{','.join(supported)}). Add one of those to the list for this host."
            )
        setattr(options, attribute, usable)


def _open_transport(
    target: ResolvedTarget, via: paramiko.Transport | None, role: str, proxies: list[ProxyProcess]
) -> paramiko.Transport:
    chosen = dict(target.algorithms)
    accepted = chosen.get("pubkeyacceptedalgorithms")
    disabled = {"pubkeys": [a for a in _PUBKEY_ALGORITHMS if a not in accepted]} if accepted else None
    sock = _dial(target, via, role, proxies)
    transport = paramiko.Transport(sock, disabled_algorithms=disabled)
    try:
        transport.banner_timeout = target.connect_timeout
        transport.handshake_timeout = target.connect_timeout
        transport.auth_timeout = target.connect_timeout
        options = transport.get_security_options()
        _restrict(options, target, chosen)
        options.key_types = preferred_key_types(known_entries(target), list(options.key_types))
        if "ciphers" not in chosen:
            # AES-GCM does cipher and MAC in one OpenSSL pass: 1.5-2x paramiko's default for tunnels
            # (docs/tunnel.md). Preferred, not required: a server without it still negotiates the others.
            fast = [c for c in FAST_CIPHERS if c in options.ciphers]
            options.ciphers = (*fast, *(c for c in options.ciphers if c not in fast))
        try:
            transport.start_client(timeout=target.connect_timeout)
            if not transport.initial_kex_done:  # start_client returns quietly when its timeout passes
                raise paramiko.SSHException(f"no key exchange within {target.connect_timeout:g} s")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            reason = str(exc) or type(exc).__name__
            advice = f"Check that an SSH server answers on port {target.port}."
            if target.proxy_command is not None and proxies:
                said = proxies[-1].said()
                advice = f"The ProxyCommand said: {said}" if said else "The ProxyCommand said nothing."
                advice += " Check that `ssh -F <that config> <host>` works on its own."
            raise _unreachable(target, role, f"SSH handshake failed ({reason})", advice) from None
        server_key = transport.get_remote_server_key()
        check_host_key(target, server_key.asbytes(), role=role)
        _authenticate(transport, target, role)
        transport.set_keepalive(KEEPALIVE_SECONDS)
        return transport
    except BaseException:
        transport.close()
        raise


def _described(path: Path, key: paramiko.PKey) -> str:
    cert = " certificate" if key.public_blob is not None else ""
    return f"{path} ({key.get_name()}{cert} {fingerprint(key.asbytes())})"


def _key_fields(blob: bytes, *, certificate: bool) -> bytes:
    """A public key blob without its type name (and a certificate's nonce): the key's own numbers first."""
    message = paramiko.Message(blob)
    message.get_string()
    if certificate:
        message.get_string()
    return bytes(message.get_remainder())


def _with_certificates(
    keys: list[tuple[Path, paramiko.PKey]], certificates: Sequence[Path], problems: list[str]
) -> list[tuple[Path, paramiko.PKey]]:
    """Each CertificateFile paired with the identity whose public key it certifies, as OpenSSH pairs them.

    Nothing of a file that is not a certificate reaches a message (a YAML-named config chooses the path).
    """
    paired: list[tuple[Path, paramiko.PKey]] = []
    for path in certificates:
        try:
            blob = PublicBlob.from_file(str(path))
            fields = _key_fields(blob.key_blob, certificate=True)
        except FileNotFoundError:
            problems.append(f"certificate {path} does not exist")
            continue
        except (OSError, ValueError, TypeError, IndexError, paramiko.SSHException):
            problems.append(f"certificate {path} is not an OpenSSH certificate")
            continue
        if not blob.key_type.endswith("-cert-v01@openssh.com"):
            problems.append(f"certificate {path} is not an OpenSSH certificate")
            continue
        for _, key in keys:
            if blob.key_type.startswith(key.get_name()) and fields.startswith(
                _key_fields(key.asbytes(), certificate=False)
            ):
                certified = copy.copy(key)
                certified.public_blob = blob
                paired.append((path, certified))
                break
        else:
            problems.append(f"certificate {path} certifies none of the identity files' keys")
    return paired


def _load_key(path: Path) -> list[paramiko.PKey]:
    """The key in `path`: with its `-cert.pub` first when there is one (as OpenSSH loads it), then plain."""
    key = paramiko.PKey.from_path(path)
    if key.public_blob is None:
        return [key]
    plain = copy.copy(key)
    plain.public_blob = None
    return [key, plain]


def _identities(target: ResolvedTarget) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """Keys to offer, described, in order: CertificateFile certificates, identity files (each with its own
    `-cert.pub` first), the agent (unless IdentitiesOnly or IdentityAgent none), the default keys."""
    problems: list[str] = []
    files: list[tuple[Path, paramiko.PKey]] = []
    for path in target.identity_files:
        try:
            files += [(path, key) for key in _load_key(path)]
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
        except paramiko.PasswordRequiredException:
            problems.append(f"{path} is encrypted (load it into ssh-agent instead)")
        except (OSError, paramiko.SSHException, ValueError) as exc:
            problems.append(f"{path} cannot be read ({exc})")
    defaults: list[tuple[Path, paramiko.PKey]] = []
    if not target.identity_files:
        for name in _DEFAULT_KEYS:
            path = Path.home() / ".ssh" / name
            if path.is_file():
                try:
                    defaults += [(path, key) for key in _load_key(path)]
                except (OSError, paramiko.SSHException, ValueError):
                    continue
    plain = [(p, k) for p, k in files + defaults if k.public_blob is None]
    certified = _with_certificates(plain, target.certificate_files, problems)
    keys = [(_described(path, key), key) for path, key in [*certified, *files]]
    if target.use_agent and os.environ.get("SSH_AUTH_SOCK") and not (target.identities_only and target.identity_files):
        try:
            agent_keys = paramiko.Agent().get_keys()
        except (paramiko.SSHException, OSError) as exc:
            problems.append(f"ssh-agent unusable ({exc})")
        else:
            keys += [(f"agent key {k.get_name()} {fingerprint(k.asbytes())}", k) for k in agent_keys]
    keys += [(_described(path, key), key) for path, key in defaults]
    return keys, problems


def _authenticate(transport: paramiko.Transport, target: ResolvedTarget, role: str) -> None:
    keys, problems = _identities(target)
    tried: list[str] = []
    for described, key in keys:
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as exc:
            allowed = ", ".join(exc.allowed_types) or "nothing"
            raise _unreachable(
                target,
                role,
                f"authentication failed for user {target.user}: the server accepts only {allowed}",
                "svcctl logs in with keys only; allow publickey authentication for that user.",
            ) from None
        except paramiko.AuthenticationException:
            tried.append(described)
            continue
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _unreachable(target, role, f"connection lost during authentication ({exc})", "Retry.") from None
        if transport.is_authenticated():
            return
    offered = "; ".join(tried) if tried else "no usable key"
    notes = f" ({'; '.join(problems)})" if problems else ""
    raise _unreachable(
        target,
        role,
        f"authentication failed for user {target.user} with keys: {offered}{notes}",
        f"Check the user, the identity_file / IdentityFile, and that the public key is in "
        f"~{target.user}/.ssh/authorized_keys on the host.",
    )


class Sessions:
    """One connection per node for a whole command (apply: lock, observe, release, observe again).

    Each connection is made by `connect`, so host keys and authentication are checked exactly as for a
    single use; a connection is keyed by its `SshTarget`, so a target declared differently gets its own.
    One that died since its last use is dialled again.  `close` (or leaving the `with`) closes them all.
    """

    def __init__(self) -> None:
        self._open: dict[SshTarget | ResolvedTarget, SshSession] = {}
        self._guard = threading.Lock()
        self._dialling: dict[SshTarget | ResolvedTarget, threading.Lock] = {}

    def get(self, target: SshTarget | ResolvedTarget) -> SshSession:
        """The open connection to target, made now if there is none (or it was lost)."""
        with self._guard:
            dialling = self._dialling.setdefault(target, threading.Lock())
        with dialling:
            with self._guard:
                session = self._open.get(target)
            if session is not None and session.transport.is_active():
                return session
            if session is not None:
                session.close()
            session = connect(target)
            with self._guard:
                self._open[target] = session
            return session

    def close(self) -> None:
        """Close every connection."""
        with self._guard:
            sessions, self._open = list(self._open.values()), {}
        for session in sessions:
            session.close()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run_on_nodes(
    targets: Sequence[SshTarget],
    fn: Callable[[SshSession], T],
    *,
    max_parallel: int = 8,
    progress: Callable[[str, str], None] | None = None,
    sessions: Sessions | None = None,
) -> dict[str, T | SvcctlError]:
    """Connect to each node (one connection each, bounded parallelism) and run fn; per-node result or error.

    Errors are returned, not raised, so callers can fail closed on partial information. `progress`, if
    given, is called from worker threads with (node, status): connecting, running, done or failed. With
    `sessions`, connections come from (and stay in) that pool; without, each is closed when fn returns.
    """
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate node names: {', '.join(duplicates)}")

    def report(node: str, status: str) -> None:
        if progress is not None:
            progress(node, status)

    def one(target: SshTarget) -> T | SvcctlError:
        report(target.name, "connecting")
        try:
            if sessions is not None:
                session = sessions.get(target)
                report(target.name, "running")
                result = fn(session)
            else:
                with connect(target) as session:
                    report(target.name, "running")
                    result = fn(session)
        except SvcctlError as exc:
            report(target.name, "failed")
            return exc
        report(target.name, "done")
        return result

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(targets))), thread_name_prefix="ssh") as pool:
        futures = {t.name: pool.submit(one, t) for t in targets}
        return {name: future.result() for name, future in futures.items()}
