"""A pull request's ssh_config and the controller's agent, against the lab: nothing runs here, nothing is lent out."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcctl.ssh import SshTarget, connect
from svcctl.tunnel.forward import ForwardSpec, OpenSshForwarder
from tests.conftest import Lab
from tests.e2e.envs import make_env

HOST = "lab-1"

ENVIRONMENT = """\
nodes:
  lab-1:
    host: lab-1
    ssh_config: {config}
    engines: [redis]
    capacity: {{memory_mb: 4096, storage_mb: 40960}}
services:
  redis: {{engine: redis, versions: ["7"]}}
plans:
  cache-16: {{service: redis, memory_mb: 16, eviction: allkeys-lru, connections: 50}}
"""


def lab_block(lab: Lab, host: str) -> list[str]:
    """The lab's own `Host` block for one host, as lines: a config that reaches it exactly as the lab's does."""
    lines = lab.ssh_config.read_text().splitlines()
    start = lines.index(f"Host {host}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("Host ")), len(lines))
    return [line for line in lines[start:end] if line.strip()]


@pytest.mark.parametrize(
    ("hostile", "directive", "where"),
    [
        ('Match exec "touch {marker}"', "Match exec", "before"),
        ("  ProxyCommand touch {marker}", "ProxyCommand", "inside"),
    ],
)
def test_a_yaml_named_ssh_config_that_would_run_a_command_fails_the_plan_and_runs_nothing(
    lab: Lab, tmp_path: Path, unique: str, hostile: str, directive: str, where: str
) -> None:
    marker = tmp_path / "marker"
    env = make_env(tmp_path, unique)
    config = env.path / "ssh_config"
    block = lab_block(lab, HOST)
    env.write_raw(ENVIRONMENT.format(config=config))

    # The same file without the hostile line plans fine: whatever fails below is that line.
    config.write_text("\n".join(["# from the pull request", *block]) + "\n")
    control = env.run("plan", ".", "--no-color")
    assert control.returncode == 0, control.stderr

    line = hostile.format(marker=marker)
    body = [line, *block] if where == "before" else [*block, line]
    config.write_text("\n".join(["# from the pull request", *body]) + "\n")
    number = 2 if where == "before" else len(block) + 2
    res = env.run("plan", ".", "--no-color")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout == ""
    assert "Traceback" not in res.stderr and 'File "' not in res.stderr
    message = next(text for text in res.stderr.splitlines() if f"{config}:{number}:" in text)
    assert f"node {HOST}: {config}:{number}: {directive} runs a command on this machine" in message
    assert "svcctl refuses it before reading the file" in message
    assert not marker.exists()


@pytest.fixture
def agent(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An ssh-agent of this test's own, holding the lab's key, as an operator's or a CI runner's would."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(lab.identity)], check=True, capture_output=True)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


REMOTE_AGENT = "echo ${SSH_AUTH_SOCK:-none}"


def test_svcctls_sessions_never_forward_the_agent(lab: Lab, agent: Path) -> None:
    # The lab's sshd does forward an agent to a client that asks: OpenSSH's -A gets a socket on the node.
    asked = subprocess.run(
        ["ssh", "-A", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-F", str(lab.ssh_config), HOST,
         REMOTE_AGENT],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert asked.stdout.strip().startswith("/tmp/ssh-"), asked.stdout
    # svcctl's sessions never ask, with the agent there and its key offered from it.
    with connect(SshTarget(HOST, HOST, ssh_config=str(lab.ssh_config))) as session:
        assert session.run(["sh", "-c", REMOTE_AGENT]).stdout == "none\n"
        assert session.run(["sh", "-c", REMOTE_AGENT], sudo=True).stdout == "none\n"


def test_the_openssh_forwarder_still_forwards_with_agent_forwarding_asked_for_in_its_config(
    lab: Lab, tmp_path: Path, agent: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("\n".join([*lab_block(lab, HOST), "  ForwardAgent yes", "  ForwardX11 yes"]) + "\n")
    spec = ForwardSpec(host=HOST, remote_port=22, ssh_config=config, known_hosts=lab.known_hosts, name=HOST)
    with OpenSshForwarder(spec) as fwd, socket.create_connection(("127.0.0.1", fwd.local_port), timeout=30) as s:
        assert s.recv(64).startswith(b"SSH-2.0-")  # the node's sshd, reached through our own -L
