"""The SSH layer everything else goes through: OpenSSH-style resolution, pinned host keys, commands, forwards.

Host keys are always checked against known_hosts before any credential is sent, and a changed key is always
refused. Failures become one-paragraph `SvcctlError`s that name the node and say what to check.
"""

from __future__ import annotations

from svcctl.ssh.errors import ChangedHostKey, CommandTimeout, SshConfigError, UnknownHostKey, Unreachable
from svcctl.ssh.known_hosts import KnownHostEntry, check_host_key, fingerprint, known_entries, read_known_hosts
from svcctl.ssh.session import CommandResult, Sessions, SshSession, connect, run_on_nodes
from svcctl.ssh.target import DEFAULT_PORT, ResolvedTarget, SshTarget, parse_jump, resolve

__all__ = [
    "DEFAULT_PORT",
    "ChangedHostKey",
    "CommandResult",
    "CommandTimeout",
    "KnownHostEntry",
    "ResolvedTarget",
    "Sessions",
    "SshConfigError",
    "SshSession",
    "SshTarget",
    "UnknownHostKey",
    "Unreachable",
    "check_host_key",
    "connect",
    "fingerprint",
    "known_entries",
    "parse_jump",
    "read_known_hosts",
    "resolve",
    "run_on_nodes",
]
