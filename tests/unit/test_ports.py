"""Local port choice for tunnels: checked by binding, first free from 10000, a busy request is a clear error."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from svcctl.errors import SvcctlError
from svcctl.tunnel.ports import FIRST_PORT, PortInUse, bind_listener, pick_port, port_is_free


@contextmanager
def held(port: int, *, listen: bool = True) -> Iterator[socket.socket]:
    """Hold 127.0.0.1:port the way another program would.

    A listener takes SO_REUSEADDR as servers do (earlier tests' connections may leave the port in TIME_WAIT);
    a socket that is only bound does without it, so that nothing else may share the port.
    """
    with socket.socket() as s:
        if listen:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        if listen:
            s.listen(1)
        yield s


def test_default_is_the_first_free_port_from_10000() -> None:
    first = pick_port("127.0.0.1", None)
    assert first >= FIRST_PORT
    assert all(not port_is_free("127.0.0.1", p) for p in range(FIRST_PORT, first))


def test_a_port_held_open_is_skipped() -> None:
    first = pick_port("127.0.0.1", None)
    with held(first):
        second = pick_port("127.0.0.1", None)
        assert second > first
        assert all(not port_is_free("127.0.0.1", p) for p in range(first, second))
    assert pick_port("127.0.0.1", None) == first


def test_a_port_bound_but_not_listening_is_in_use_too() -> None:
    with held(0, listen=False) as s, pytest.raises(PortInUse):
        pick_port("127.0.0.1", s.getsockname()[1])


def test_a_free_requested_port_is_returned() -> None:
    port = pick_port("127.0.0.1", None)
    assert pick_port("127.0.0.1", port) == port


def test_a_busy_requested_port_says_which_and_how_to_choose_another() -> None:
    with held(0) as s:
        busy = s.getsockname()[1]
        with pytest.raises(PortInUse) as caught:
            pick_port("127.0.0.1", busy)
    assert isinstance(caught.value, SvcctlError)
    assert f"local port {busy} on 127.0.0.1 is already in use" in caught.value.message
    assert "--port" in caught.value.message


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_a_requested_port_outside_tcp_range_is_refused(port: int) -> None:
    with pytest.raises(SvcctlError, match="not a TCP port"):
        pick_port("127.0.0.1", port)


def test_an_address_not_on_this_machine_is_a_clear_error() -> None:
    with pytest.raises(SvcctlError, match=r"cannot listen on 192\.0\.2\.1"):
        pick_port("192.0.2.1", None)  # TEST-NET-1: never local


def test_bind_listener_holds_the_port_until_closed() -> None:
    port = pick_port("127.0.0.1", None)
    listener = bind_listener("127.0.0.1", port)
    try:
        assert not port_is_free("127.0.0.1", port)
        with pytest.raises(PortInUse):
            bind_listener("127.0.0.1", port)
    finally:
        listener.close()
    assert port_is_free("127.0.0.1", port)
