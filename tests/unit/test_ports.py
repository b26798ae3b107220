"""Local port choice for tunnels: checked by binding, first free from 10000, a busy request is a clear error.

The tests that expect particular ports pick them on an address of their own (the `private_loopback`
fixture), where no tunnel or server of anyone else can take a port between two lines of a test.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from svcctl.errors import SvcctlError
from svcctl.tunnel.ports import PortInUse, bind_listener, open_listener, pick_port


@contextmanager
def held(address: str, port: int, *, listen: bool = True) -> Iterator[socket.socket]:
    """Hold address:port the way another program would.

    A listener takes SO_REUSEADDR as servers do (earlier tests' connections may leave the port in TIME_WAIT);
    a socket that is only bound does without it, so that nothing else may share the port.
    """
    with socket.socket() as s:
        if listen:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        if listen:
            s.listen(1)
        yield s


def bindable(address: str, port: int) -> bool:
    """Whether a plain socket (no svcctl code) can bind and listen on address:port right now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            s.listen(1)
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
            return False
    return True


def test_default_is_the_first_free_port_from_10000(private_loopback: str) -> None:
    assert pick_port(private_loopback, None) == 10000
    assert bindable(private_loopback, 10000)  # picked, not taken: the caller binds it


def test_ports_held_open_or_only_bound_are_skipped_and_taken_again_once_released(private_loopback: str) -> None:
    with held(private_loopback, 10000):
        assert pick_port(private_loopback, None) == 10001
        with held(private_loopback, 10001, listen=False):
            assert pick_port(private_loopback, None) == 10002
        assert pick_port(private_loopback, None) == 10001
    assert pick_port(private_loopback, None) == 10000


def test_a_port_bound_but_not_listening_is_in_use_too() -> None:
    with held("127.0.0.1", 0, listen=False) as s, pytest.raises(PortInUse):
        pick_port("127.0.0.1", s.getsockname()[1])


def test_a_free_requested_port_is_returned(private_loopback: str) -> None:
    assert pick_port(private_loopback, 10003) == 10003
    assert bindable(private_loopback, 10003)


def test_a_busy_requested_port_says_which_and_how_to_choose_another() -> None:
    with held("127.0.0.1", 0) as s:
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


def test_bind_listener_holds_the_port_until_closed(private_loopback: str) -> None:
    listener = bind_listener(private_loopback, 10000)
    try:
        assert listener.getsockname() == (private_loopback, 10000)
        with socket.create_connection((private_loopback, 10000), timeout=5):
            pass  # it listens: a client connects
        assert not bindable(private_loopback, 10000)
        with pytest.raises(PortInUse):
            bind_listener(private_loopback, 10000)
        assert pick_port(private_loopback, None) == 10001
    finally:
        listener.close()
    assert bindable(private_loopback, 10000)


def test_listeners_opened_together_never_share_a_port(private_loopback: str) -> None:
    """Each port is bound as it is chosen: two tunnels starting at once get 10000 and 10001, never one port."""
    first = open_listener(private_loopback, None)
    second = open_listener(private_loopback, None)
    try:
        assert (first.getsockname()[1], second.getsockname()[1]) == (10000, 10001)
    finally:
        first.close()
        second.close()
