"""How long `svcctl plan` takes over 1, 2, 4 and 8 lab hosts, against Ansible touching the same hosts.

For each host count N it times, median of --runs runs:
  - `svcctl plan` (the whole command, a fresh process: imports, SSH, observe, diff, render);
  - the observe step alone, in process (one SSH round trip per node, nodes in parallel);
  - the baseline, measured in the same run: `ansible-playbook --check playbooks/apply.yml` with no changes
    on the same N hosts (Ansible's own minimum cost to connect to the hosts and run a playbook).
and prints the ratio of plan to the baseline.  Needs the lab with 8 hosts: `LAB_HOSTS=8 make lab`.

    .venv/bin/python benchmarks/plan.py [--hosts 1,2,4,8] [--runs 5]
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LAB = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
PY = sys.executable


def environment(directory: Path, hosts: int) -> Path:
    """An environment with N lab nodes and one PostgreSQL instance pinned to each (not created)."""
    nodes = "".join(
        f"  lab-{i}:\n    host: lab-{i}\n    ssh_config: {LAB}/ssh_config\n    engines: [postgres, redis]\n"
        for i in range(1, hosts + 1)
    )
    instances = "".join(f"  bench-{i}: {{plan: small, node: lab-{i}}}\n" for i in range(1, hosts + 1))
    env = directory / f"bench{hosts}"
    env.mkdir()
    (env / "svcctl.yaml").write_text(
        f"nodes:\n{nodes}services:\n  postgres: {{engine: postgres, versions: ['15']}}\n"
        f"plans:\n  small: {{service: postgres, storage_mb: 100, connections: 5}}\ninstances:\n{instances}"
    )
    return env


def timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if res.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return elapsed


def observe_only(env_dir: Path, key: bytes) -> float:
    from svcctl.model.loader import load_environment
    from svcctl.plan.observe import observe
    from svcctl.plan.planner import environment_name, password_source

    env = load_environment(env_dir)
    t0 = time.perf_counter()
    observe(env, environment_name(env_dir), password_source(key))
    return time.perf_counter() - t0


def ansible_check(hosts: int, work: Path, env: dict[str, str]) -> float:
    inventory = work / f"inventory{hosts}.json"
    inventory.write_text(
        json.dumps({"all": {"hosts": {f"lab-{i}": {"svcctl_changes": []} for i in range(1, hosts + 1)}}})
    )
    cmd = [
        str(Path(PY).parent / "ansible-playbook"), "--check", "-i", str(inventory),
        "-e", "svcctl_environment=bench", str(REPO / "playbooks" / "apply.yml"),
    ]  # fmt: skip
    return timed(cmd, env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="1,2,4,8")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    counts = [int(x) for x in a.hosts.split(",")]
    available = json.loads((LAB / "hosts.json").read_text())
    if max(counts) > len(available):
        raise SystemExit(f"the lab has {len(available)} hosts; run `LAB_HOSTS={max(counts)} make lab` first")
    key = os.urandom(32)
    work = Path(tempfile.mkdtemp(prefix="svcctl-bench-"))
    env = {
        **os.environ,
        "SVCCTL_KEY": base64.b64encode(key).decode(),
        "PATH": f"{Path(PY).parent}:{os.environ['PATH']}",
        "ANSIBLE_SSH_ARGS": f"-F {LAB}/ssh_config -o ControlMaster=auto -o ControlPersist=60s",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }
    os.environ["SVCCTL_KEY"] = env["SVCCTL_KEY"]
    print(f"{'hosts':>5} {'svcctl plan':>12} {'observe':>9} {'ansible --check':>16} {'plan/ansible':>13}")
    for n in counts:
        env_dir = environment(work, n)
        plan_cmd = [PY, "-m", "svcctl", "plan", str(env_dir), "--detailed-exitcode"]
        plans, observes, checks = [], [], []
        for _ in range(a.runs):  # interleaved, so machine noise hits both sides alike
            plans.append(timed(plan_cmd, env, ok=(0, 2)))
            observes.append(observe_only(env_dir, key))
            checks.append(ansible_check(n, work, env))
        mp, mo, mc = statistics.median(plans), statistics.median(observes), statistics.median(checks)
        print(f"{n:>5} {mp:>11.2f}s {mo:>8.2f}s {mc:>15.2f}s {mp / mc:>12.2f}x", flush=True)
    print(f"medians of {a.runs} runs; ratio < 1 means svcctl plan is faster than Ansible's no-op check")


if __name__ == "__main__":
    main()
