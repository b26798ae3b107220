"""The paramiko forwarder's `connect`: SSH connections made by svcctl's own SSH layer, reconnecting on demand.

Every tunnel connection goes through `svcctl.ssh`, so host keys, jump hosts and ssh_config are handled
exactly as by plan and apply: one SSH stack, not two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from svcctl.ssh import SshTarget
from svcctl.tunnel.forward import ForwardSpec

if TYPE_CHECKING:  # paramiko (0.1 s to import) only once a connection is made: a tunnel through OpenSSH may need none
    import paramiko

    from svcctl.ssh import SshSession


def connect(target: SshTarget) -> SshSession:
    """svcctl.ssh.connect, imported when first called."""
    from svcctl.ssh import connect as ssh_connect

    return ssh_connect(target)


def spec_target(spec: ForwardSpec) -> SshTarget:
    """The SSH target a ForwardSpec describes."""
    return SshTarget(
        name=spec.node,
        host=spec.host,
        user=spec.user,
        port=spec.port,
        identity_file=str(spec.identity) if spec.identity else None,
        jump_host=spec.jump,
        ssh_config=str(spec.ssh_config) if spec.ssh_config else None,
        known_hosts=str(spec.known_hosts) if spec.known_hosts else None,
    )


class SshConnector:
    """First the session given (e.g. the one that located the instance), then new ones through svcctl.ssh."""

    def __init__(self, target: SshTarget, first: SshSession | None = None) -> None:
        self._first = first
        self._target = target
        self.sessions: list[SshSession] = [first] if first is not None else []

    @property
    def target(self) -> SshTarget:
        """The node's SSH target, as declared."""
        return self._target

    def __call__(self) -> paramiko.Transport:
        if self._first is not None:
            first, self._first = self._first, None
            if first.transport.is_active():
                return first.transport
        session = connect(self._target)
        self.sessions.append(session)
        return session.transport

    def live(self) -> SshSession:
        """A session whose connection is up, for commands on the node (reconnecting if it dropped)."""
        for session in reversed(self.sessions):
            if session.transport.is_active():
                return session
        session = connect(self._target)
        self.sessions.append(session)
        return session

    def fresh(self) -> SshSession:
        """A new connection, whatever the state of the others (a retry after one was lost under a command)."""
        session = connect(self._target)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        """Close every session this connector made (jump hosts included)."""
        for session in self.sessions:
            session.close()
