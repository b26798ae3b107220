"""`svcctl tunnel`: find the instance, open the forward, log in (binding or temporary user), run or wait, clean up.

The forward is OpenSSH's (`svcctl.tunnel.master`) unless `--via paramiko` or there is no `ssh` on PATH.  When
the instance can only be on one node, ssh connects to it while svcctl imports the drivers, and the node's
registry is read and the temporary user created and dropped through that one connection (no second SSH
handshake, no paramiko); else svcctl's own sessions read the candidates' registries.  The forward itself is
added (the port bound) before anything is created on the node.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.spec import Environment
from svcctl.secrets import load_key
from svcctl.ssh import SshTarget, Unreachable, known_entries, resolve
from svcctl.tunnel.connector import SshConnector
from svcctl.tunnel.forward import NO_SSH_FALLBACK, Forwarder, ForwardSpec, ParamikoForwarder, use_openssh
from svcctl.tunnel.master import MasterForwarder, SshMaster

if TYPE_CHECKING:  # imported when needed: the drivers load while ssh connects
    from svcctl.tunnel.access import Located, NodeCommands, TempUser

Say = Callable[[str], None]


@dataclass(frozen=True)
class TunnelOptions:
    """What the command line asked for."""

    instance: str
    env_path: Path = Path()
    app: str | None = None
    port: int | None = None
    bind: str = "127.0.0.1"
    write: bool = False
    show_password: bool = False
    command: tuple[str, ...] = ()
    via: str = "auto"  # forward.VIAS


def _raise_interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP close the tunnel the way Ctrl-C does: temporary user dropped, port freed."""
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait_forever() -> None:
    """Block until Ctrl-C (or SIGTERM/SIGHUP)."""
    stop = threading.Event()
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(3600):
            pass


def run_tunnel(opts: TunnelOptions, say: Say, started: float | None = None) -> int:
    """Open the tunnel and run the command (its exit code) or wait for Ctrl-C (0); always clean up."""
    started = time.monotonic() if started is None else started
    env = load_environment(opts.env_path)
    environment = env.name
    key = load_key(environment)
    openssh = use_openssh(opts.via)
    if not openssh and opts.via == "auto":
        say(NO_SSH_FALLBACK)
    with _stop_signals_interrupt():
        early = _connect_early(env, opts.instance) if openssh else None
        try:
            from svcctl.tunnel.access import locate, locate_through, target_of

            if early is not None:
                located, session = locate_through(early, env, environment, opts.instance), None
            else:
                located, session = locate(env, environment, opts.instance)
        except BaseException:
            if early is not None:
                early.close()
            raise
        if early is not None and early.target.name != located.node:
            early.close()
            early = None
        connector = SshConnector(target_of(env, located.node), session)
        try:
            return _forward(opts, say, env, environment, key, located, connector, started, openssh, early)
        finally:
            connector.close()


def _connect_early(env: Environment, instance: str) -> SshMaster | None:
    """An ssh master already connecting to the one node the instance can be on (pinned, or the only candidate).

    None when that is not known before the registries are read, or when no key is pinned for the node yet
    (svcctl's own connection may record one under `accept-new`, and the master must see it).
    """
    if instance not in env.instances:
        return None  # locate says so, with the instances there are
    engine = env.engine_of(instance)
    pinned = env.instances[instance].node
    candidates = [pinned] if pinned else [n for n, node in env.nodes.items() if engine in node.engines]
    if len(candidates) != 1 or candidates[0] not in env.nodes:
        return None
    node = candidates[0]
    try:
        target = resolve(SshTarget.from_node(node, env.nodes[node]))
        if not known_entries(target):
            return None
        return SshMaster(target, MasterForwarder.ssh_client())
    except SvcctlError:
        return None  # locate connects through the same settings and says what is wrong


def _forward(
    opts: TunnelOptions,
    say: Say,
    env: Environment,
    environment: str,
    key: bytes,
    located: Located,
    connector: SshConnector,
    started: float,
    openssh: bool,
    early: SshMaster | None,
) -> int:
    """Forward, log in, run or wait; the temporary user is dropped and the port freed whatever happens."""
    from svcctl.tunnel.access import TempUser, binding_login
    from svcctl.tunnel.clients import Connection, run_client

    try:
        database = located.database  # what the node's registry says, checked before anything starts or is created
        spec = ForwardSpec(
            host=located.node, remote_port=located.remote_port, bind=opts.bind, local_port=opts.port, name=located.node
        )
        forwarder: Forwarder
        if openssh:
            target = early.target if early is not None else resolve(connector.target)
            forwarder = MasterForwarder(spec, target, master=early, say=say)
        else:
            forwarder = ParamikoForwarder(spec, connector)
    except BaseException:
        if early is not None:
            early.close()
        raise
    forwarder.start()  # binds the port first: a busy --port fails before anything is created on the node
    temp: TempUser | None = None
    try:
        if opts.app is not None:
            user, password = binding_login(env, located, opts.app, key)
        else:
            temp = TempUser.new(located, environment, key, opts.write)
            temp.create(_commands(forwarder, connector))
            user, password = temp.user, temp.password
        host = "127.0.0.1" if opts.bind in ("0.0.0.0", "::", "") else opts.bind  # noqa: S104
        conn = Connection(located.engine, host, forwarder.local_port, user, password, database)
        who = f"app {opts.app}'s binding" if opts.app else f"temporary {temp.role if temp else ''} user"
        say(f"Tunnel to {located.engine} instance {located.instance} on node {located.node} as {who}:")
        for line in conn.describe(opts.show_password):
            say(f"  {line}")
        ready = time.monotonic() - started
        if opts.command:
            say(f"ready in {ready:.2f} s; running {opts.command[0]}")
            return run_client(conn, opts.command)
        say(f"ready in {ready:.2f} s on {opts.bind}:{forwarder.local_port}; press Ctrl-C to close")
        _wait_forever()
        say("closing the tunnel")
        return 0
    finally:
        try:
            if temp is not None:
                with _uninterrupted():
                    _drop(temp, forwarder, connector)
        finally:
            forwarder.close()


def _commands(forwarder: Forwarder, connector: SshConnector) -> NodeCommands:
    """Where the session helper runs: the OpenSSH master's connection when there is one, else svcctl's session."""
    if isinstance(forwarder, MasterForwarder) and (master := forwarder.master) is not None:
        return master
    return connector.live()


def _drop(temp: TempUser, forwarder: Forwarder, connector: SshConnector) -> None:
    """Drop the temporary user; if the connection is lost under the drop (it carried the client's channels
    until a moment ago), once more over a new one of svcctl's own, so the user does not outlive the tunnel."""
    try:
        temp.drop(_commands(forwarder, connector))
    except Unreachable:
        temp.drop(connector.fresh())


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Cleanup must finish: a second Ctrl-C while the temporary user is being dropped is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def tunnel_main(opts: TunnelOptions, started: float | None = None) -> int:
    """The CLI's entry: messages on stderr (the client's stdout stays its own), exit code back."""

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        return run_tunnel(opts, say, started)
    except KeyboardInterrupt:
        say("interrupted; the tunnel is closed")
        return 130
