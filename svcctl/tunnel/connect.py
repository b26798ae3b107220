"""A paramiko Transport to a node, host key verified against a pinned known_hosts, tuned for bulk data.

svcctl's SSH layer may hand ParamikoForwarder its own `connect`; this one keeps the tunnel usable on its own.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from svcctl.tunnel.errors import HostKeyChanged, HostKeyUnknown, TunnelError
from svcctl.tunnel.forward import Connect, ForwardSpec

# AES-GCM does cipher and MAC in one pass in OpenSSL; paramiko's default (aes128-ctr + hmac-sha2-256) is slower.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


@dataclass(frozen=True)
class _Target:
    name: str
    hostname: str
    port: int
    user: str
    identities: tuple[Path, ...]
    known_hosts: Path


def _resolve(spec: ForwardSpec, host: str, port: int | None, user: str | None) -> _Target:
    """Fill host, port, user, identity and known_hosts from spec first, then ssh_config, then defaults."""
    cfg: dict[str, object] = {}
    if spec.ssh_config is not None:
        cfg = dict(paramiko.SSHConfig.from_path(str(spec.ssh_config)).lookup(host))
    identities: list[Path] = []
    if spec.identity is not None:
        identities.append(spec.identity)
    else:
        found = cfg.get("identityfile")
        if isinstance(found, list):
            identities += [Path(str(p)).expanduser() for p in found]
    if spec.known_hosts is not None:
        known = spec.known_hosts
    else:
        files = str(cfg.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
        known = Path(files[0]).expanduser()
    return _Target(
        name=host,
        hostname=str(cfg.get("hostname", host)),
        port=port or int(str(cfg.get("port", 22))),
        user=user or str(cfg.get("user", "")) or getpass.getuser(),
        identities=tuple(identities),
        known_hosts=known,
    )


def _pinned(target: _Target) -> dict[str, paramiko.PKey]:
    """The pinned keys (by type) for a target, looked up as ssh does: by alias, address and [host]:port."""
    try:
        keys = paramiko.HostKeys(str(target.known_hosts))
    except OSError as exc:
        raise TunnelError(f"cannot read known_hosts {target.known_hosts}: {exc.strerror}") from exc
    names = [target.name, target.hostname]
    if target.port != 22:
        names = [f"[{n}]:{target.port}" for n in names]
    found: dict[str, paramiko.PKey] = {}
    for name in names:
        entry = keys.lookup(name)
        if entry is not None:
            for kind in entry:
                found.setdefault(kind, entry[kind])
    return found


def open_transport(
    target: _Target,
    spec: ForwardSpec,
    sock: socket.socket | paramiko.Channel | None = None,
    cls: type[paramiko.Transport] = paramiko.Transport,
) -> paramiko.Transport:
    """Connect, verify the host key strictly (no trust on first use) and authenticate with a key."""
    pinned = _pinned(target)
    if not pinned:
        raise HostKeyUnknown(spec.node if target.name == spec.host else target.name, target.known_hosts)
    if sock is None:
        try:
            sock = socket.create_connection((target.hostname, target.port), timeout=10)
        except OSError as exc:
            raise TunnelError(f"cannot reach node {spec.node} at {target.hostname}:{target.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = cls(sock)
    try:
        options = transport.get_security_options()
        options.ciphers = tuple(c for c in FAST_CIPHERS if c in options.ciphers)
        options.key_types = tuple(k for k in options.key_types if k in pinned)  # as ssh: offer only what we pin
        transport.start_client(timeout=10)
        key = transport.get_remote_server_key()
        if key.get_name() not in pinned or pinned[key.get_name()] != key:
            raise HostKeyChanged(spec.node if target.name == spec.host else target.name, target.known_hosts)
        for path in target.identities:
            try:
                pkey = paramiko.PKey.from_path(path)
            except (OSError, paramiko.SSHException) as exc:
                raise TunnelError(f"cannot load the identity file {path}: {exc}") from exc
            try:
                transport.auth_publickey(target.user, pkey)
                break
            except paramiko.AuthenticationException:
                continue
        if not transport.is_authenticated():
            agent_keys = paramiko.Agent().get_keys()
            for agent_key in agent_keys:
                try:
                    transport.auth_publickey(target.user, agent_key)
                    break
                except paramiko.AuthenticationException:
                    continue
        if not transport.is_authenticated():
            raise TunnelError(
                f"node {spec.node} refused the SSH login as {target.user}; check the identity file and the "
                f"user's authorized_keys (svcctl never uses passwords)."
            )
    except BaseException:
        transport.close()
        raise
    return transport


class _JumpedTransport(paramiko.Transport):
    """A Transport through a jump host's direct-tcpip channel; closing it closes the jump connection too."""

    jump: paramiko.Transport | None = None

    def close(self) -> None:
        super().close()
        if self.jump is not None:
            self.jump.close()


def paramiko_connector(spec: ForwardSpec) -> Connect:
    """A `connect` for ParamikoForwarder built from the spec alone (ssh_config, known_hosts, identity, jump)."""

    def connect() -> paramiko.Transport:
        target = _resolve(spec, spec.host, spec.port, spec.user)
        if spec.jump is None:
            return open_transport(target, spec)
        user, _, rest = spec.jump.rpartition("@")
        host, _, port = rest.partition(":")
        jump = open_transport(_resolve(spec, host, int(port) if port else None, user or None), spec)
        try:
            chan = jump.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0))
            inner = open_transport(target, spec, chan, _JumpedTransport)
        except BaseException:
            jump.close()
            raise
        assert isinstance(inner, _JumpedTransport)
        inner.jump = jump
        return inner

    return connect
