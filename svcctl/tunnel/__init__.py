"""`svcctl tunnel`: a local port forwarded over SSH to an engine's port on a node."""

from svcctl.tunnel.errors import HostKeyChanged, HostKeyUnknown, TunnelError
from svcctl.tunnel.forward import (
    Connect,
    Forwarder,
    ForwardSpec,
    OpenSshForwarder,
    ParamikoForwarder,
    open_forwarder,
)
from svcctl.tunnel.ports import PortInUse, pick_port

__all__ = [
    "Connect",
    "ForwardSpec",
    "Forwarder",
    "HostKeyChanged",
    "HostKeyUnknown",
    "OpenSshForwarder",
    "ParamikoForwarder",
    "PortInUse",
    "TunnelError",
    "open_forwarder",
    "pick_port",
]
