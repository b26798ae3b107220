"""Hosts far away: `svcctl plan` over 1, 4 and 8 lab hosts 25 ms away each way, against Ansible's check mode.

The latency run of the fleet-scale benchmark (issue #15; benchmarks/scale.py is the object-count run). Every
SSH connection to the hosts goes through benchmarks/delayline.py, which holds each byte --ms milliseconds
in each direction (the lab's kernel has no netem), named in an ssh_config of this run's own (HostName
127.0.0.1, the relay's port, HostKeyAlias the host's name, so the lab's known_hosts still pins each key).
The set-up is benchmarks/plan.py's (its environment and its Ansible baseline, built the same way), applied
over the direct links; then, interleaved across host counts, it times over the delayed links:

  - `svcctl plan --detailed-exitcode`, a fresh process, which must say no changes;
  - `ansible-playbook --check playbooks/apply.yml` over the same hosts with the environment's full desired
    state as changes (benchmarks/plan.py's baseline), with Ansible's default forks (5) and its own
    ControlPersist connections;

each with the SSH connections and commands that reached the busiest node (benchmarks/labhosts.py).
Targets: plan over 8 hosts <= 1.5x plan over 1; plan >= 10x faster than Ansible's check mode over 8 hosts.

    .venv/bin/python benchmarks/latency.py [--ms 25] [--hosts 1,4,8] [--runs 3] [--first 5] [--no-ansible]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan as plan_bench
from labhosts import LAB, close_masters, journal_cursor, measure, rounds_since

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent


def delayed_config(path: Path, nodes: list[str], first_port: int) -> Path:
    """An ssh_config reaching each node through its relay port, its host key still pinned under its name."""
    lines = []
    for i, node in enumerate(nodes):
        lines += [f"Host {node}", "  HostName 127.0.0.1", f"  Port {first_port + i}", f"  HostKeyAlias {node}",
                  "  User deploy", f"  IdentityFile {LAB}/id_ed25519", "  IdentitiesOnly yes",
                  f"  UserKnownHostsFile {LAB}/known_hosts", "  StrictHostKeyChecking yes", ""]  # fmt: skip
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", type=float, default=25, help="delay each way, in milliseconds")
    p.add_argument("--hosts", default="1,4,8", help="host counts to time")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--first", type=int, default=5, help="first lab host (the e2e tests use lab-1..lab-4)")
    p.add_argument("--instances", type=int, default=2, help="PostgreSQL instances (+ a binding each) per node")
    p.add_argument("--port", type=int, default=42100, help="first local port of the relays")
    p.add_argument("--no-ansible", action="store_true", help="time svcctl plan only")
    a = p.parse_args()
    counts = [int(x) for x in a.hosts.split(",")]
    nodes = [f"lab-{i}" for i in range(a.first, a.first + max(counts))]
    hosts = json.loads((LAB / "hosts.json").read_text())
    if missing := [n for n in nodes if n not in hosts]:
        raise SystemExit(
            f"the lab lacks {', '.join(missing)}: run `lab/labctl.py up --hosts {a.first + max(counts) - 1}`"
        )
    key = os.urandom(32)
    old_umask = os.umask(0o077)  # the work directory holds inventories with passwords
    work = Path(tempfile.mkdtemp(prefix="svcctl-latency-"))
    os.umask(old_umask)
    os.environ["SVCCTL_KEY"] = base64.b64encode(key).decode()
    env = {**os.environ, "PATH": f"{Path(PY).parent}:{os.environ['PATH']}", "ANSIBLE_HOST_KEY_CHECKING": "True",
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"), "ANSIBLE_PIPELINING": "True",
           "ANSIBLE_NOCOLOR": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}  # fmt: skip
    svcctl = [PY, "-m", "svcctl"]
    playbook = str(Path(PY).parent / "ansible-playbook")
    routes = [f"{a.port + i}={hosts[n]['address']}:22" for i, n in enumerate(nodes)]
    relay = subprocess.Popen([PY, str(Path(__file__).parent / "delayline.py"), "--ms", str(a.ms), *routes],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert relay.stdout is not None
    if relay.stdout.readline().strip() != "ready":
        raise SystemExit("the delay relay did not start")
    config = delayed_config(work / "ssh_config", nodes, a.port)
    apply_yml, extra = plan_bench.ansible_project(work, env)
    full = plan_bench.write_environment(work / "all", nodes, a.instances)  # the set-up goes over the direct links
    print(f"set-up: {a.instances} PostgreSQL instance(s) + binding(s) on each of {', '.join(nodes)}", flush=True)
    plan_bench.run([*svcctl, "apply", str(full), "--auto-approve"], env)
    try:
        cases: dict[int, dict[str, Any]] = {}
        for n in counts:
            env_dir = plan_bench.write_environment(work / f"n{n}", nodes[:n], a.instances, ssh_config=config)
            hv = plan_bench.full_state_hostvars(env_dir, key)
            inv = work / f"full{n}.json"
            plan_bench.write_inventory(inv, env_dir, hv)
            cases[n] = {
                "plan": [*svcctl, "plan", str(env_dir), "--detailed-exitcode"],
                "ansible": [playbook, "--check", "-i", str(inv), *extra, apply_yml],
            }
        sides = ("plan",) if a.no_ansible else ("plan", "ansible")
        rows: dict[int, dict[str, list[dict[str, float]]]] = {n: {s: [] for s in sides} for n in counts}
        for r in range(a.runs):
            for n in counts:
                for side in sides:
                    cursors = {node: journal_cursor(node) for node in nodes[:n]}
                    m = measure(cases[n][side], env, cwd=REPO)
                    if m.returncode != 0:
                        raise SystemExit(f"{side} over {n} host(s) exited {m.returncode}:\n{m.stdout[-3000:]}")
                    counted = [rounds_since(node, c) for node, c in cursors.items()]
                    rows[n][side].append({"wall": m.wall, "cpu": m.cpu,
                                          "connections": max(x.connections for x in counted),
                                          "commands": max(x.commands for x in counted)})  # fmt: skip
                print(f"  run {r + 1}, {n} host(s): " + ", ".join(f"{s} {rows[n][s][-1]['wall']:.2f}s" for s in sides),
                      flush=True)  # fmt: skip

        def med(n: int, side: str, k: str = "wall") -> float:
            return statistics.median(x[k] for x in rows[n][side]) if rows[n].get(side) else float("nan")

        print(f"\n{a.ms:g} ms each way; medians of {a.runs}; connections and commands: the busiest node's")
        print(f"{'hosts':>5} {'svcctl plan':>12} {'conns':>6} {'commands':>9} {'ansible --check':>16} {'conns':>6} "
              f"{'commands':>9} {'speed-up':>9}")  # fmt: skip
        for n in counts:
            print(f"{n:>5} {med(n, 'plan'):>11.2f}s {med(n, 'plan', 'connections'):>6.0f} "
                  f"{med(n, 'plan', 'commands'):>9.0f} {med(n, 'ansible'):>15.2f}s "
                  f"{med(n, 'ansible', 'connections'):>6.0f} {med(n, 'ansible', 'commands'):>9.0f} "
                  f"{med(n, 'ansible') / med(n, 'plan'):>8.1f}x")  # fmt: skip
        lo, hi = min(counts), max(counts)
        print(f"svcctl plan, {hi} hosts / {lo}: {med(hi, 'plan') / med(lo, 'plan'):.2f}x (target <= 1.5x); "
              f"ansible --check / svcctl plan at {hi} hosts: {med(hi, 'ansible') / med(hi, 'plan'):.1f}x "
              f"(target >= 10x)")  # fmt: skip
        print(json.dumps({"ms": a.ms, "runs": a.runs, "raw": rows}))
    finally:
        relay.terminate()
        close_masters(nodes)
        print("clean-up: destroying the bench instances", flush=True)
        plan_bench.write_environment(work / "all", nodes, 0)
        plan_bench.run([*svcctl, "apply", str(full), "--auto-approve", "--allow-destroy"], env)


if __name__ == "__main__":
    main()
