"""What the benchmarks measure on the lab hosts, one implementation each: CPU, SSH round trips, link delay.

- CPU: each host's cgroup (lab/labctl.py) counts every process on it (sshd, sudo, python3, psql, backends).
- Round trips: every command svcctl or Ansible runs on a node goes through sudo, which logs one `COMMAND=`
  line to the node's journal, and every SSH connection one `Accepted publickey` line from sshd. Counting
  them between two journal cursors counts what reached the node, whichever tool sent it.
- Delay: tc netem on both ends of a host's veth (the lab bridge's side and the host's eth0 in its network
  namespace), so each way gets the delay; removed on exit, and with the veth by `labctl.py down` anyway.
- Commands: wall time, and the CPU and largest resident set of the command and all its children (wait4).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAB = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
CGROUPS = Path("/sys/fs/cgroup/unified/svclab")  # each lab host's cgroup (lab/labctl.py)


# The benchmarks' own connections to the hosts: one master each, kept until `close_masters`, so that counting
# a node's SSH connections never counts these.
_MASTER = ["-o", "ControlMaster=auto", "-o", f"ControlPath=/tmp/svcctl-bench-cm-{os.getpid()}-%C",
           "-o", "ControlPersist=yes"]  # fmt: skip


def ssh(node: str, command: str) -> str:
    """Run `command` on a lab host as its deploy user (OpenSSH, the lab's ssh_config); its stdout."""
    done = subprocess.run(
        ["ssh", "-F", str(LAB / "ssh_config"), *_MASTER, node, command], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ssh {node} {command!r} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def close_masters(nodes: list[str]) -> None:
    """End the benchmark's own SSH master connections."""
    for node in nodes:
        subprocess.run(["ssh", "-F", str(LAB / "ssh_config"), *_MASTER, "-O", "exit", node], capture_output=True)


def hosts_cpu(nodes: list[str]) -> float | None:
    """CPU seconds the lab hosts' cgroups have used so far (every process on them), or None if unreadable."""
    total = 0
    for node in nodes:
        try:
            stat = (CGROUPS / node / "cpu.stat").read_text()
        except OSError:
            return None
        total += int(stat.split("usage_usec", 1)[1].split()[0])
    return total / 1e6


def journal_cursor(node: str) -> str:
    """The node's journal position now."""
    out = ssh(node, "sudo -n journalctl -n 0 --show-cursor -q")
    return out.strip().removeprefix("-- cursor: ")


@dataclass(frozen=True)
class Rounds:
    """What reached one node between two cursors: commands run through sudo, and SSH connections accepted."""

    commands: int
    connections: int


def rounds_since(node: str, cursor: str) -> Rounds:
    """Count the node's sudo commands and accepted SSH connections after `cursor` (this count's own connection
    is the master `journal_cursor` opened, so it is not among them; its journalctl is left out)."""
    time.sleep(0.3)  # journald takes what sudo and sshd log asynchronously
    out = ssh(node, f"sudo -n journalctl -q -o json --after-cursor='{cursor}' _COMM=sudo + _COMM=sshd")
    commands = connections = 0
    for line in out.splitlines():
        message = str(json.loads(line).get("MESSAGE", ""))
        if "COMMAND=" in message and "COMMAND=/usr/bin/journalctl" not in message:
            commands += 1
        elif message.startswith("Accepted publickey"):
            connections += 1
    return Rounds(commands, connections)


@dataclass(frozen=True)
class Measured:
    """One command: wall seconds, CPU seconds here (it and its children), largest resident set (MiB)."""

    wall: float
    cpu: float
    peak_mb: float
    stdout: str
    returncode: int


def measure(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Measured:
    """Run `cmd` to its end; CPU and peak memory come from wait4, so every waited-for child counts."""
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out, proc.returncode)


def _tc(node: str, args: list[str]) -> list[list[str]]:
    veth = f"svl-{node}"[:15]  # lab/labctl.py's veth() and netns()
    return [["tc", *args[:2], "dev", veth, *args[2:]], ["ip", "netns", "exec", f"svclab-{node}", "tc", *args[:2],
            "dev", "eth0", *args[2:]]]  # fmt: skip


@contextlib.contextmanager
def delayed(nodes: list[str], ms: int) -> Iterator[None]:
    """Every packet to and from each node delayed by `ms` (tc netem, each way) while the block runs."""
    added: list[list[str]] = []
    try:
        for node in nodes:
            for cmd in _tc(node, ["qdisc", "add", "root", "netem", "delay", f"{ms}ms"]):
                subprocess.run(cmd, check=True, capture_output=True)
                added.append(cmd)
        yield
    finally:
        for cmd in added:
            i = cmd.index("add")
            subprocess.run([*cmd[:i], "del", *cmd[i + 1 : cmd.index("root") + 1]], check=False, capture_output=True)
