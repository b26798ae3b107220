"""Why a tunnel could not be opened, said so that the operator knows what to do next."""

from __future__ import annotations

from pathlib import Path

from svcctl.errors import SvcctlError


class TunnelError(SvcctlError):
    """The tunnel could not be opened or broke; the message carries ssh's own words."""


class HostKeyChanged(TunnelError):
    """The node presented a host key other than the pinned one: refuse, never re-learn it silently."""

    def __init__(self, node: str, known_hosts: Path | None) -> None:
        where = str(known_hosts) if known_hosts else "your known_hosts"
        super().__init__(
            f"the host key of node {node} does not match the one pinned in {where}; refusing to connect. "
            f"The node may have been rebuilt, or someone may be intercepting the connection. Check the node's "
            f"new key out of band (e.g. `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on its console), "
            f"then replace the entry (`ssh-keygen -R {node} -f {where}`) and add the verified key."
        )
        self.node = node


class HostKeyUnknown(TunnelError):
    """No pinned host key for the node: strict checking never trusts on first use."""

    def __init__(self, node: str, known_hosts: Path | None) -> None:
        where = str(known_hosts) if known_hosts else "your known_hosts"
        super().__init__(
            f"no host key for node {node} in {where}; svcctl never trusts a key on first use. Add the node's "
            f"verified key to {where} (e.g. from `ssh-keyscan`, checked against the node's console), then retry."
        )
        self.node = node
