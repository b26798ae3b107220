"""svcctl's SSH layer against the lab's real sshd: commands, sudo, quoting, host keys, jump hosts, failures."""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from svcctl.errors import SvcctlError
from svcctl.ssh import (
    ChangedHostKey,
    CommandResult,
    CommandTimeout,
    Sessions,
    SshSession,
    SshTarget,
    UnknownHostKey,
    Unreachable,
    connect,
    run_on_nodes,
)
from tests.conftest import Lab


@pytest.fixture(autouse=True)
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the keys a test names may log in: an operator's ssh-agent must not make a test pass."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def target(lab: Lab, host: str, **fields: object) -> SshTarget:
    """A lab node as a user would declare it: its alias plus the lab's ssh_config."""
    return SshTarget(name=host, host=host, ssh_config=str(lab.ssh_config), **fields)  # type: ignore[arg-type]


def host_fingerprint(lab: Lab, host: str) -> str:
    """The host's real ed25519 key fingerprint, as ssh-keygen reports it."""
    pub = lab.root / "hosts" / host / "ssh_host_ed25519_key.pub"
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def known_hosts_line(lab: Lab, host: str) -> str:
    return next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(f"{host},")) + "\n"


def assert_one_paragraph(error: SvcctlError, node: str) -> None:
    message = str(error)
    assert message.startswith(f"node {node}: ")
    assert "\n" not in message and "Traceback" not in message and 'File "' not in message


def test_commands_run_as_deploy_and_as_root_on_every_host_in_parallel(lab: Lab) -> None:
    seen: list[tuple[str, str]] = []

    def whoami(session: SshSession) -> tuple[str, str, str]:
        return (
            session.run(["id", "-un"]).stdout,
            session.run(["id", "-u"], sudo=True).stdout,
            session.run(["hostname"]).stdout,
        )

    results = run_on_nodes(
        [target(lab, h) for h in sorted(lab.hosts)], whoami, progress=lambda n, s: seen.append((n, s))
    )
    assert results == {h: ("deploy\n", "0\n", f"{h}\n") for h in lab.hosts}
    for host in lab.hosts:
        assert [s for n, s in seen if n == host] == ["connecting", "running", "done"]


def test_sessions_keep_one_connection_per_node_for_a_whole_command(lab: Lab) -> None:
    targets = [target(lab, h) for h in sorted(lab.hosts)]

    def transport(session: SshSession) -> object:
        assert session.run(["true"]).rc == 0
        return session.transport

    with Sessions() as pool:
        first = run_on_nodes(targets, transport, sessions=pool)
        second = run_on_nodes(targets, transport, sessions=pool)
        assert all(first[h] is second[h] for h in lab.hosts)  # reused, not dialled again
        lost = pool.get(targets[0])
        lost.close()  # a connection that died is dialled again, with the same checks
        again = run_on_nodes(targets[:1], transport, sessions=pool)
        assert again[targets[0].name] is not lost.transport
    assert not any(t.is_active() for t in (*first.values(), again[targets[0].name]))  # type: ignore[attr-defined]
    # a changed host key is refused through the pool exactly as through connect
    bad = target(lab, "lab-1", known_hosts=str(lab.root / "nonexistent-known-hosts"))
    with Sessions() as pool:
        assert isinstance(run_on_nodes([bad], transport, sessions=pool)["lab-1"], UnknownHostKey)


def test_arguments_arrive_literally_with_and_without_sudo(lab: Lab) -> None:
    args = ["a b", "it's", '"double"', "$(id -u)", "`id`", "; touch /tmp/pwned", "*", "", "back\\slash", "ü"]
    with connect(target(lab, "lab-1")) as session:
        for sudo in (False, True):
            assert session.run(["printf", "%s\\n", *args], sudo=sudo) == CommandResult(0, "\n".join(args) + "\n", "")
        assert session.run(["test", "-e", "/tmp/pwned"]).rc == 1


def test_exit_code_stdout_and_stderr_are_kept_apart(lab: Lab) -> None:
    with connect(target(lab, "lab-1")) as session:
        result = session.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert result == CommandResult(3, "out\n", "err\n")


def test_stdin_passes_bytes_unchanged(lab: Lab) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024) + b"\x00\xff\n"
    with connect(target(lab, "lab-2")) as session:
        result = session.run(["sha256sum"], stdin=data)
        assert session.run(["cat"], stdin=b"line one\nline two") == CommandResult(0, "line one\nline two", "")
    assert result == CommandResult(0, f"{hashlib.sha256(data).hexdigest()}  -\n", "")


def test_a_command_that_overruns_its_timeout_raises_while_it_still_runs(lab: Lab, unique: str) -> None:
    """CommandTimeout comes while the command is still waiting, not after it finished.

    The command waits for a gate file that the test opens only after CommandTimeout arrived, or, if it
    never does, from a watchdog long after: a run() that waited for the command would finish with the
    gate open (a different result), so no stopwatch is needed.
    """
    gate = f"/tmp/svcctl-gate-{unique}"
    opened = threading.Event()

    def open_gate() -> None:
        opened.set()
        lab.ssh("lab-1", f"touch {gate}")

    watchdog = threading.Timer(120, open_gate)
    watchdog.start()
    try:
        with connect(target(lab, "lab-1")) as session:
            with pytest.raises(CommandTimeout) as caught:
                session.run(["sh", "-c", f"while ! test -e {gate}; do sleep 0.1; done; rm -f {gate}"], timeout=1)
            assert not opened.is_set(), "CommandTimeout came only after the command could finish"
            assert str(caught.value).startswith("node lab-1: command did not finish within 1 s and was abandoned: ")
            assert session.run(["true"]).rc == 0  # the session outlives an abandoned command
    finally:
        watchdog.cancel()
        # let the abandoned loop end (it removes the gate), or remove the gate if nothing is left to
        lab.ssh(
            "lab-1", f"touch {gate}; for i in $(seq 50); do test -e {gate} || exit 0; sleep 0.1; done; rm -f {gate}"
        )


def test_a_command_timeout_names_the_command_and_the_session_stays_usable(lab: Lab) -> None:
    with connect(target(lab, "lab-1")) as session:
        with pytest.raises(CommandTimeout) as caught:
            session.run(["sleep", "30"], timeout=1)
        assert (caught.value.node, caught.value.command) == ("lab-1", "sleep 30")
        assert str(caught.value).startswith(
            "node lab-1: command did not finish within 1 s and was abandoned: sleep 30."
        )
        assert_one_paragraph(caught.value, "lab-1")
        with pytest.raises(CommandTimeout, match="sudo -n -- sleep 30"):
            session.run(["sleep", "30"], sudo=True, timeout=1)
        assert session.run(["true"]).rc == 0


def test_an_unknown_host_key_is_refused_then_accept_new_records_it(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "known_hosts"  # absent, as on a fresh laptop
    expected = host_fingerprint(lab, "lab-1")
    with pytest.raises(UnknownHostKey) as caught:
        connect(target(lab, "lab-1", known_hosts=str(store)))
    assert (caught.value.node, caught.value.host, caught.value.fingerprint) == ("lab-1", "10.211.37.11", expected)
    assert f"the host presented ssh-ed25519 {expected}" in str(caught.value)
    assert f"ssh-keyscan -t ssh-ed25519 10.211.37.11 >> {store}" in str(caught.value)
    assert_one_paragraph(caught.value, "lab-1")
    assert not store.exists()

    with connect(target(lab, "lab-1", known_hosts=str(store), accept_new_host_keys=True)) as session:
        assert session.run(["hostname"]).stdout == "lab-1\n"
    kind, blob = (lab.root / "hosts" / "lab-1" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert store.read_text() == f"lab-1,10.211.37.11 {kind} {blob}\n"
    assert oct(store.stat().st_mode & 0o777) == "0o600"
    with connect(target(lab, "lab-1", known_hosts=str(store))) as session:
        assert session.run(["hostname"]).stdout == "lab-1\n"


def test_a_changed_host_key_is_refused_naming_both_fingerprints(lab: Lab, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    store = tmp_path / "known_hosts"
    store.write_text(known_hosts_line(lab, "lab-2") + f"lab-1,10.211.37.11 {kind} {blob}\n")
    pinned = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "other.pub")], capture_output=True, text=True)
    pinned_fp = pinned.stdout.split()[1]
    # accept-new must not help: a changed key is always refused.
    with pytest.raises(ChangedHostKey) as caught:
        connect(target(lab, "lab-1", known_hosts=str(store), accept_new_host_keys=True))
    assert (caught.value.expected, caught.value.presented) == ([pinned_fp], host_fingerprint(lab, "lab-1"))
    message = str(caught.value)
    assert f"known_hosts expects ssh-ed25519 {pinned_fp} ({store}:2)" in message
    assert f"the host presented ssh-ed25519 {host_fingerprint(lab, 'lab-1')}" in message
    assert_one_paragraph(caught.value, "lab-1")
    assert store.read_text().count("\n") == 2


def test_a_stopped_host_is_unreachable_quickly_and_the_others_still_answer(lab: Lab) -> None:
    lab.labctl("stop", "lab-2")
    try:
        results = run_on_nodes(
            [target(lab, h, connect_timeout=2) for h in sorted(lab.hosts)], lambda s: s.run(["hostname"]).stdout
        )
        with pytest.raises(Unreachable) as through_jump:
            connect(target(lab, "lab-2", jump_host="lab-1", connect_timeout=2))
    finally:
        lab.labctl("start", "lab-2")
    assert results["lab-1"] == "lab-1\n"
    error = results["lab-2"]
    assert isinstance(error, Unreachable)
    assert error.node == "lab-2"
    message = str(error)
    # The stopped host's network namespace outlives it, so its kernel answers the SYN with a reset.
    assert message == (
        "node lab-2: cannot connect to lab-2 (10.211.37.12:22): connection refused. "
        "Check that the host is up and sshd listens on port 22."
    )
    assert str(through_jump.value).startswith(
        "node lab-2: cannot connect to lab-2 (10.211.37.12:22) through jump host lab-1 (10.211.37.11:22): "
        "the jump host could not connect ("
    )
    assert_one_paragraph(through_jump.value, "lab-2")


def test_an_address_that_never_answers_times_out_after_connect_timeout(lab: Lab) -> None:
    silent = "10.211.37.250"  # on the lab bridge, no host: ARP goes unanswered, the SYN never leaves
    assert silent not in lab.hosts.values()
    with pytest.raises(Unreachable) as caught:
        connect(SshTarget("silent", silent, user="deploy", known_hosts=str(lab.known_hosts), connect_timeout=1))
    assert str(caught.value).startswith("node silent: cannot connect to 10.211.37.250:22: timed out after 1 s.")
    assert_one_paragraph(caught.value, "silent")
    # What the 1 s cut short: left longer, the kernel gives up on ARP itself (about 3 s) and says so.
    with pytest.raises(Unreachable) as waited:
        connect(SshTarget("silent", silent, user="deploy", known_hosts=str(lab.known_hosts), connect_timeout=20))
    assert str(waited.value).startswith("node silent: cannot connect to 10.211.37.250:22: no route to host.")


def test_a_server_that_accepts_but_never_speaks_ssh_fails_the_handshake_while_still_mute() -> None:
    """The handshake fails on connect_timeout while the server is still silent, not when the server gives up.

    The server stays mute until the client has failed, or, if it never does, until a watchdog long after
    (past paramiko's own 15 s banner timeout) closes the connection: failing only then would be too late.
    """
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        released = threading.Event()

        def release() -> None:
            released.set()
            with server.accept()[0]:
                pass  # hang up

        watchdog = threading.Timer(60, release)
        watchdog.start()
        try:
            with pytest.raises(Unreachable) as caught:
                connect(SshTarget("mute", "127.0.0.1", port=port, connect_timeout=1))
            assert not released.is_set(), "the handshake failed only once the server hung up"
        finally:
            watchdog.cancel()
    assert str(caught.value).startswith(f"node mute: cannot connect to 127.0.0.1:{port}: SSH handshake failed (")
    assert_one_paragraph(caught.value, "mute")


MUTE_SERVER_SCRIPT = """
import socket, threading
from svcctl.ssh import SshTarget, Unreachable, connect
with socket.create_server(("127.0.0.1", 0)) as server:
    try:
        connect(SshTarget("mute", "127.0.0.1", port=server.getsockname()[1], connect_timeout=1))
    except Unreachable as exc:
        print(exc.node)
    for thread in threading.enumerate():  # let paramiko's transport thread give up and log, if it would
        if thread is not threading.current_thread():
            thread.join(5)
"""


def test_paramiko_threads_print_nothing_on_stderr_outside_pytest() -> None:
    # A plain interpreter, not pytest: there Python's last-resort handler would print paramiko's own log
    # records (with tracebacks) to stderr unless svcctl silences them.
    res = subprocess.run([sys.executable, "-c", MUTE_SERVER_SCRIPT], capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "mute\n", "")


def test_refused_ports_unknown_names_and_rejected_keys_are_unreachable(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(Unreachable) as refused:
        connect(target(lab, "lab-1", port=1, connect_timeout=3))
    assert str(refused.value).startswith("node lab-1: cannot connect to lab-1 (10.211.37.11:1): connection refused.")

    with pytest.raises(Unreachable) as unknown:
        connect(SshTarget("ghost", "ghost.invalid", connect_timeout=3))
    assert str(unknown.value).startswith("node ghost: cannot connect to ghost.invalid:22: cannot resolve ghost.invalid")

    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    fp = subprocess.run(["ssh-keygen", "-lf", str(stranger)], capture_output=True, text=True).stdout.split()[1]
    with pytest.raises(Unreachable) as rejected:
        connect(
            SshTarget(
                "lab-1", "10.211.37.11", user="deploy", identity_file=str(stranger), known_hosts=str(lab.known_hosts)
            )
        )
    assert f"10.211.37.11:22: authentication failed for user deploy with keys: {stranger} (ssh-ed25519 {fp})." in str(
        rejected.value
    )
    for caught in (refused.value, unknown.value, rejected.value):
        assert_one_paragraph(caught, caught.node)


def test_a_jump_host_reaches_lab_2_through_lab_1(lab: Lab) -> None:
    with connect(target(lab, "lab-2", jump_host="lab-1")) as session:
        # lab-2 sees the connection come from lab-1's address, not from this machine.
        assert session.run(["sh", "-c", 'echo "${SSH_CONNECTION%% *}"; hostname']).stdout == "10.211.37.11\nlab-2\n"
        assert len(session.hops) == 1


def test_both_host_keys_are_checked_on_a_jump(lab: Lab, tmp_path: Path) -> None:
    only_lab_2 = tmp_path / "only_lab_2"
    only_lab_2.write_text(known_hosts_line(lab, "lab-2"))
    with pytest.raises(UnknownHostKey) as jump_unknown:
        connect(target(lab, "lab-2", jump_host="lab-1", known_hosts=str(only_lab_2)))
    assert jump_unknown.value.fingerprint == host_fingerprint(lab, "lab-1")
    assert str(jump_unknown.value).startswith(
        "node lab-2: the host key of jump host lab-1 (10.211.37.11:22) is not known"
    )

    only_lab_1 = tmp_path / "only_lab_1"
    only_lab_1.write_text(known_hosts_line(lab, "lab-1"))
    with pytest.raises(UnknownHostKey) as final_unknown:
        connect(target(lab, "lab-2", jump_host="lab-1", known_hosts=str(only_lab_1)))
    assert final_unknown.value.fingerprint == host_fingerprint(lab, "lab-2")
    assert str(final_unknown.value).startswith("node lab-2: the host key of lab-2 (10.211.37.12:22) is not known")


def test_a_forward_carries_bytes_to_a_port_on_the_node(lab: Lab) -> None:
    with connect(target(lab, "lab-1")) as session:
        channel = session.open_forward("127.0.0.1", 22)
        try:
            assert channel.recv(64).startswith(b"SSH-2.0-OpenSSH")
        finally:
            channel.close()
        with pytest.raises(Unreachable) as caught:
            session.open_forward("127.0.0.1", 1)
    assert str(caught.value).startswith("node lab-1: the SSH server of lab-1 (10.211.37.11:22) refused to forward")
    assert_one_paragraph(caught.value, "lab-1")
