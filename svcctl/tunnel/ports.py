"""Local ports for tunnels: the first free one from 10000 up (as `vmc tunnel` did), or the one asked for."""

from __future__ import annotations

import errno
import socket

from svcctl.errors import SvcctlError

FIRST_PORT = 10000
LAST_PORT = 65535


class PortInUse(SvcctlError):
    """The local port asked for is taken by another program."""

    def __init__(self, bind: str, port: int) -> None:
        super().__init__(
            f"local port {port} on {bind} is already in use by another program; choose another with --port N, "
            f"or leave --port out to take the first free port from {FIRST_PORT}."
        )
        self.bind = bind
        self.port = port


def bind_listener(bind: str, port: int) -> socket.socket:
    """Bind and listen on bind:port the way ssh does (SO_REUSEADDR), or raise PortInUse; the caller owns it."""
    try:
        infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SvcctlError(f"cannot use {bind!r} as the local bind address: {exc.strerror}") from exc
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(bind, port) from exc
            last = exc
            continue
        return sock
    raise SvcctlError(f"cannot listen on {bind} port {port}: {last.strerror if last else 'no usable address'}")


def port_is_free(bind: str, port: int) -> bool:
    """Whether a listener could bind bind:port right now; checked by binding, not by guessing."""
    try:
        bind_listener(bind, port).close()
    except PortInUse:
        return False
    return True


def open_listener(bind: str, requested: int | None) -> socket.socket:
    """A socket listening on `requested` (else PortInUse), or on the first free port from 10000.

    The port is bound as it is chosen, so two tunnels starting at the same moment cannot both take it.
    """
    if requested is not None:
        if not 1 <= requested <= LAST_PORT:
            raise SvcctlError(f"--port {requested} is not a TCP port; use a number from 1 to {LAST_PORT}.")
        return bind_listener(bind, requested)
    for port in range(FIRST_PORT, LAST_PORT + 1):
        try:
            return bind_listener(bind, port)
        except PortInUse:
            continue
    raise SvcctlError(f"no free local port on {bind} from {FIRST_PORT} to {LAST_PORT}; close some tunnels.")


def pick_port(bind: str, requested: int | None) -> int:
    """The port `open_listener` would take, released again: for a listener another program (ssh) opens."""
    listener = open_listener(bind, requested)
    try:
        return int(listener.getsockname()[1])
    finally:
        listener.close()
