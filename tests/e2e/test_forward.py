"""Local port forwards to a node, through the system's OpenSSH (a master, or `ssh -L`) and through paramiko,
against the real lab."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from svcctl.errors import SvcctlError
from svcctl.tunnel import (
    Forwarder,
    ForwardSpec,
    OpenSshForwarder,
    ParamikoForwarder,
    PortInUse,
    open_forwarder,
    pick_port,
)
from svcctl.tunnel.master import MasterForwarder
from tests.conftest import Lab

HOST = "lab-1"

# An echo server on the node's loopback: prints its port, echoes each connection (half-close included),
# and exits when ssh's stdin closes, so it cannot outlive the test session.
ECHO = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def echo(c):
    with c:
        while True:
            data = c.recv(1 << 16)
            if not data:
                c.shutdown(socket.SHUT_WR)
                return
            c.sendall(data)
def loop():
    while True:
        threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
threading.Thread(target=loop, daemon=True).start()
sys.stdin.read()
"""

KINDS: dict[str, Callable[[ForwardSpec], Forwarder]] = {
    "master": MasterForwarder.from_spec,
    "openssh": OpenSshForwarder,
    "paramiko": ParamikoForwarder,
}


@pytest.fixture(scope="module")
def echo_port(lab: Lab) -> Iterator[int]:
    proc = subprocess.Popen(
        ["ssh", "-F", str(lab.ssh_config), HOST, "python3", "-c", f"'{ECHO}'"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        proc.wait(15)


@pytest.fixture
def spec(lab: Lab, echo_port: int) -> ForwardSpec:
    return ForwardSpec(
        host=HOST,
        remote_port=echo_port,
        ssh_config=lab.ssh_config,
        known_hosts=lab.known_hosts,
        identity=lab.identity,
        name=HOST,
    )


@pytest.fixture
def own_spec(spec: ForwardSpec, private_loopback: str) -> ForwardSpec:
    """The spec bound to a loopback address of this test's own: the ports it gets are not anyone else's."""
    return ForwardSpec(**{**vars(spec), "bind": private_loopback})


@pytest.fixture(params=sorted(KINDS))
def make(request: pytest.FixtureRequest) -> Callable[[ForwardSpec], Forwarder]:
    return KINDS[request.param]


def round_trip(port: int, payload: bytes, address: str = "127.0.0.1") -> bytes:
    """Send everything, half-close, read the echo back to EOF."""
    with socket.create_connection((address, port), timeout=30) as s:
        sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
        sender.start()
        chunks = []
        while data := s.recv(1 << 16):
            chunks.append(data)
        sender.join()
    return b"".join(chunks)


def rebindable(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a new listener can take address:port (as ssh and servers bind: SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            s.listen(1)
        except OSError:
            return False
    return True


def test_bytes_round_trip_unchanged(spec: ForwardSpec, make: Callable[[ForwardSpec], Forwarder]) -> None:
    payload = os.urandom(8 * 2**20)
    with make(spec) as fwd:
        echoed = round_trip(fwd.local_port, payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_many_connections_at_once_through_one_tunnel(
    spec: ForwardSpec, make: Callable[[ForwardSpec], Forwarder]
) -> None:
    payloads = [os.urandom(2**20 + i) for i in range(8)]
    results: dict[int, bytes] = {}
    with make(spec) as fwd:

        def one(i: int) -> None:
            results[i] = round_trip(fwd.local_port, payloads[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert {i: hashlib.sha256(r).digest() for i, r in results.items()} == {
        i: hashlib.sha256(p).digest() for i, p in enumerate(payloads)
    }


def test_close_frees_the_local_port_at_once(own_spec: ForwardSpec, make: Callable[[ForwardSpec], Forwarder]) -> None:
    address = own_spec.bind
    fwd = make(own_spec)
    fwd.start()
    port = fwd.local_port
    assert round_trip(port, b"hello", address) == b"hello"
    # a client still connected when the tunnel closes must not keep the port
    lingering = socket.create_connection((address, port), timeout=10)
    try:
        assert not rebindable(port, address)
        fwd.close()
        assert rebindable(port, address)
        assert pick_port(address, port) == port
    finally:
        lingering.close()
    fwd.close()  # twice is harmless


def test_the_first_free_port_from_10000_is_the_default_and_a_second_tunnel_takes_the_next(
    own_spec: ForwardSpec, make: Callable[[ForwardSpec], Forwarder]
) -> None:
    address = own_spec.bind  # nothing else listens there: the ports are known in advance
    with make(own_spec) as first:
        assert first.local_port == 10000
        with make(own_spec) as second:
            assert second.local_port == 10001
            assert round_trip(10000, b"first", address) == b"first"
            assert round_trip(10001, b"second", address) == b"second"
        assert not rebindable(10000, address)  # the first still holds its port


def test_a_busy_requested_port_raises_port_in_use(spec: ForwardSpec, make: Callable[[ForwardSpec], Forwarder]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        fwd = make(ForwardSpec(**{**vars(spec), "local_port": busy}))
        with pytest.raises(PortInUse, match=rf"local port {busy} on 127\.0\.0\.1 .*--port"):
            fwd.start()
        fwd.close()


def wrong_known_hosts(lab: Lab, tmp_path: Path) -> Path:
    """A known_hosts that pins another key for lab-1 (as if the node had been rebuilt or impersonated)."""
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = key.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{HOST},{lab.hosts[HOST]} {kind} {blob}\n")
    return wrong


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_changed_host_key_fails_fast_naming_the_node(
    lab: Lab, own_spec: ForwardSpec, tmp_path: Path, kind: str
) -> None:
    bad = ForwardSpec(**{**vars(own_spec), "known_hosts": wrong_known_hosts(lab, tmp_path)})
    fwd = KINDS[kind](bad)
    with pytest.raises(SvcctlError) as caught:  # tunnel.HostKeyChanged (ssh) or ssh.ChangedHostKey (paramiko)
        fwd.start(timeout=20)
    message = str(caught.value)
    assert f"node {HOST}" in message and "ssh-keygen -R" in message and str(bad.known_hosts) in message
    assert rebindable(fwd.local_port, bad.bind)  # nothing was left listening


def test_paramiko_reconnects_after_its_connection_dropped(spec: ForwardSpec) -> None:
    with ParamikoForwarder(spec) as fwd:
        assert round_trip(fwd.local_port, b"before") == b"before"
        transport = fwd._transport
        assert transport is not None
        transport.close()  # as if the network or sshd had dropped it
        assert round_trip(fwd.local_port, b"after") == b"after"
        assert fwd.connects == 2


def test_openssh_command_is_isolated_strict_and_carries_no_secret(spec: ForwardSpec) -> None:
    argv = OpenSshForwarder(ForwardSpec(**{**vars(spec), "bind": "::1", "jump": "lab-2"})).command(10000)
    joined = " ".join(argv)
    for option in ("ControlMaster=no", "ControlPath=none", "BatchMode=yes", "StrictHostKeyChecking=yes",
                   "ExitOnForwardFailure=yes", "ServerAliveInterval=15", "ServerAliveCountMax=3"):  # fmt: skip
        assert f"-o {option}" in joined
    assert argv[argv.index("-L") + 1] == f"[::1]:10000:127.0.0.1:{spec.remote_port}"
    assert argv[-2:] == ["--", HOST]
    assert "assword" not in joined


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_through_a_jump_host(lab: Lab, spec: ForwardSpec, kind: str) -> None:
    via = ForwardSpec(**{**vars(spec), "host": lab.hosts[HOST], "user": "deploy", "jump": "lab-2"})
    with KINDS[kind](via) as fwd:
        assert round_trip(fwd.local_port, b"jumped") == b"jumped"


def test_the_default_forwarder_is_the_openssh_master(spec: ForwardSpec) -> None:
    with open_forwarder(spec) as fwd:
        assert isinstance(fwd, MasterForwarder)
        assert round_trip(fwd.local_port, b"default") == b"default"


def test_master_reconnects_after_its_connection_dropped(own_spec: ForwardSpec) -> None:
    with MasterForwarder.from_spec(own_spec) as fwd:
        port = fwd.local_port
        assert round_trip(port, b"before", own_spec.bind) == b"before"
        first = fwd.master
        assert first is not None
        first.proc.send_signal(signal.SIGKILL)  # as if the network or sshd had dropped it
        first.proc.wait(10)
        echoed = b""
        for _ in range(120):  # a bound for a wait, not a measurement: a reconnect takes well under a second
            try:
                echoed = round_trip(port, b"after", own_spec.bind)
                break
            except OSError:
                time.sleep(0.25)
        assert echoed == b"after"
        assert fwd.connects == 2 and fwd.master is not first
        assert fwd.local_port == port  # the port the clients know


def test_a_port_taken_under_the_master_is_port_in_use_and_the_master_keeps_running(spec: ForwardSpec) -> None:
    """The race `pick_port` cannot close (taken between its check and ssh's bind) ends as PortInUse too."""
    fwd = MasterForwarder.from_spec(spec)
    master = fwd.connect()
    try:
        master.ready(30)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            busy = holder.getsockname()[1]
            with pytest.raises(PortInUse, match=rf"local port {busy} "):
                master.forward("127.0.0.1", busy, "127.0.0.1", spec.remote_port)
        assert master.proc.poll() is None  # a refused forward does not take the connection down
        free = pick_port("127.0.0.1", None)
        master.forward("127.0.0.1", free, "127.0.0.1", spec.remote_port)
        assert round_trip(free, b"still up") == b"still up"
    finally:
        fwd.close()


def test_master_command_is_isolated_strict_and_carries_no_secret(spec: ForwardSpec) -> None:
    fwd = MasterForwarder.from_spec(ForwardSpec(**{**vars(spec), "jump": "lab-2"}))
    fwd.connect()
    try:
        master = fwd.master
        assert master is not None
        argv = master.command()
        joined = " ".join(argv)
        for option in ("-F none", "-o ControlMaster=yes", "-o ControlPersist=no", "-o BatchMode=yes",
                       "-o StrictHostKeyChecking=yes", "-o ExitOnForwardFailure=yes", "-o ForwardAgent=no",
                       "-o UpdateHostKeys=no", f"-o UserKnownHostsFile={spec.known_hosts}",
                       "-o GlobalKnownHostsFile=none", "-o IdentitiesOnly=yes"):  # fmt: skip
            assert option in joined
        assert "-o Ciphers=aes128-gcm@openssh.com," in joined  # first, the client's others after it
        assert "ProxyCommand=" in joined and "-W" in joined  # the jump host, as strict as the node
        assert argv[-2:] == ["--", HOST]  # the name the lab's known_hosts pins
        assert str(master.control).startswith("/") and os.stat(master.control.parent).st_mode & 0o077 == 0
        assert "assword" not in joined and "SVCCTL_KEY" not in joined
    finally:
        fwd.close()
    assert fwd.master is None
