"""The SSH layer everything else goes through: settings from OpenSSH (`ssh -G`), pinned host keys, commands, forwards.

Host keys are always checked against known_hosts before any credential is sent, and a changed key is always
refused. An ssh_config named by the YAML is untrusted: refused if it could run or load anything (see
docs/security.md). The agent is never forwarded. Failures become one-paragraph `SvcctlError`s that name
the node and say what to check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from svcctl.ssh.config_scan import Finding, scan_ssh_config
from svcctl.ssh.effective import Effective, parse_ssh_g
from svcctl.ssh.errors import ChangedHostKey, CommandTimeout, SshConfigError, UnknownHostKey, Unreachable
from svcctl.ssh.known_hosts import (
    KnownHostEntry,
    check_host_key,
    fingerprint,
    known_entries,
    read_known_hosts,
    valid_known_host_name,
)
from svcctl.ssh.openssh import openssh_options
from svcctl.ssh.target import (
    DEFAULT_PORT,
    ResolvedTarget,
    SshTarget,
    check_host,
    check_untrusted_config,
    check_user,
    parse_jump,
    resolve,
)

if TYPE_CHECKING:
    from svcctl.ssh.session import CommandResult, Sessions, SshSession, connect, run_on_nodes

_SESSION_NAMES = ("CommandResult", "Sessions", "SshSession", "connect", "run_on_nodes")


def __getattr__(name: str) -> Any:
    """svcctl.ssh.session's names, imported on first use: it imports paramiko (about 0.1 s), which a tunnel
    through OpenSSH does not need."""
    if name in _SESSION_NAMES:
        from svcctl.ssh import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PORT",
    "ChangedHostKey",
    "CommandResult",
    "CommandTimeout",
    "Effective",
    "Finding",
    "KnownHostEntry",
    "ResolvedTarget",
    "Sessions",
    "SshConfigError",
    "SshSession",
    "SshTarget",
    "UnknownHostKey",
    "Unreachable",
    "check_host",
    "check_host_key",
    "check_untrusted_config",
    "check_user",
    "connect",
    "fingerprint",
    "known_entries",
    "openssh_options",
    "parse_jump",
    "parse_ssh_g",
    "read_known_hosts",
    "resolve",
    "run_on_nodes",
    "scan_ssh_config",
    "valid_known_host_name",
]
