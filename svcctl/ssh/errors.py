"""Errors of the SSH layer: each one paragraph naming the node and host, and what to check or do."""

from __future__ import annotations

from svcctl.errors import SvcctlError


class SshConfigError(SvcctlError):
    """The OpenSSH client config (or a jump host spec) cannot be used."""


class UnknownHostKey(SvcctlError):
    """The host presented a key that no known_hosts entry pins; svcctl refuses until it is recorded."""

    def __init__(self, message: str, *, node: str, host: str, key_type: str, fingerprint: str) -> None:
        super().__init__(message)
        self.node, self.host, self.key_type, self.fingerprint = node, host, key_type, fingerprint


class ChangedHostKey(SvcctlError):
    """The host presented a key other than the one known_hosts pins: always refused."""

    def __init__(self, message: str, *, node: str, host: str, expected: list[str], presented: str) -> None:
        super().__init__(message)
        self.node, self.host, self.expected, self.presented = node, host, expected, presented


class Unreachable(SvcctlError):
    """The node could not be reached or logged into (refused, timeout, no route, DNS, authentication)."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message)
        self.node = node


class CommandTimeout(SvcctlError):
    """A remote command did not finish in time; its channel was closed."""

    def __init__(self, message: str, *, node: str, command: str) -> None:
        super().__init__(message)
        self.node, self.command = node, command
