"""How long `svcctl plan` takes over 1, 2, 4 and 8 lab hosts, against Ansible telling the same thing.

Set-up: one environment `bench` with --instances PostgreSQL instances per node (each with a readwrite or
readonly binding of one app), applied once before anything is timed, so both sides inspect real objects.
Then, for each host count N (lab-F..lab-F+N-1), runs interleaved across N and both sides, it times:

  - `svcctl plan` (the whole command, a fresh process: imports, SSH, observe, diff, render); it must say
    "no changes" (exit 0 with --detailed-exitcode), or the benchmark stops; with the CPU it used here and
    the CPU the N hosts used meanwhile (their cgroups' cpu.stat: sshd, sudo, the script, psql, backends);
  - the observe step alone, in process (one SSH round trip per node, nodes in parallel);
  - the baseline: `ansible-playbook --check playbooks/apply.yml` over the same N hosts with the
    environment's full desired state as changes (every engine, instance and binding as an ensure-present
    create, with the secrets its tasks need, built by svcctl.apply.execute.hostvars as apply builds them,
    inventory and settings as svcctl.apply.runner gives Ansible): what Ansible alone needs to tell whether
    the hosts match the YAML;
  - for reference, the same playbook in check mode with no changes (Ansible's floor: connect, run nothing).

It prints medians, plan/baseline ratios and 8-vs-1 host scaling, then destroys what it created (protect is
false on every bench instance; --keep leaves them). Needs lab-F..lab-F+7, F being 5 by default since the e2e
tests use lab-1..lab-4 (and stop or reinstall some): `lab/labctl.py up --hosts 12`.

    .venv/bin/python benchmarks/plan.py [--hosts 1,2,4,8] [--runs 5] [--first 5] [--instances 2] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from labhosts import LAB, hosts_cpu  # noqa: E402

PY = sys.executable
ENV_NAME = "bench"  # every host count's environment has this name, so all see the same registry records


def write_environment(directory: Path, nodes: list[str], instances: int, ssh_config: Path = LAB / "ssh_config") -> Path:
    """An environment `bench` over `nodes`: `instances` PostgreSQL instances pinned to each, each bound to app
    `bench` (readwrite, readonly, readwrite, ...); instances: 0 leaves only the nodes (used to destroy)."""
    env = directory / ENV_NAME
    (env / "apps").mkdir(parents=True, exist_ok=True)  # a manifest lives inside its environment (#17)
    lines = [f"environment: {ENV_NAME}", "nodes:"]
    for node in nodes:
        lines.append(f"  {node}: {{host: {node}, ssh_config: {ssh_config}, engines: [postgres, redis]}}")
    lines += [
        "services:",
        "  postgres: {engine: postgres, versions: ['15']}",
        "plans:",
        "  small: {service: postgres, storage_mb: 100, connections: 5}",
    ]
    names = [(node, f"{node}-db{j}") for node in nodes for j in range(1, instances + 1)]
    if names:
        lines.append("instances:")
        lines += [f"  {name}: {{plan: small, node: {node}, protect: false}}" for node, name in names]
        lines += ["apps:", "  bench: {manifest: apps/bench.yml, format: cf}", "bindings:"]
        lines += [
            f"  - {{app: bench, instance: {name}, role: {'readwrite' if i % 2 == 0 else 'readonly'}}}"
            for i, (_node, name) in enumerate(names)
        ]
    (env / "svcctl.yaml").write_text("\n".join(lines) + "\n")
    return env


def run(
    cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,), cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=cwd)
    if res.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,), cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    run(cmd, env, ok, cwd)
    return time.perf_counter() - t0


def timed_cpu(cmd: list[str], env: dict[str, str], nodes: list[str]) -> tuple[float, float, float | None]:
    """Wall time, this machine's CPU in the command (its processes), the hosts' CPU meanwhile."""
    c0, h0 = resource.getrusage(resource.RUSAGE_CHILDREN), hosts_cpu(nodes)
    wall = timed(cmd, env)
    c1, h1 = resource.getrusage(resource.RUSAGE_CHILDREN), hosts_cpu(nodes)
    local = c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime
    return wall, local, None if h0 is None or h1 is None else h1 - h0


def observe_only(env_dir: Path, key: bytes) -> float:
    from svcctl.model.loader import load_environment
    from svcctl.plan.observe import observe
    from svcctl.plan.planner import password_source

    env = load_environment(env_dir)
    t0 = time.perf_counter()
    observe(env, env.name, password_source(key))
    return time.perf_counter() - t0


def full_state_hostvars(env_dir: Path, key: bytes) -> dict[str, dict[str, Any]]:
    """apply.yml's per-host variables if every desired resource were missing: all of it as creates."""
    from svcctl.apply.execute import hostvars
    from svcctl.model.loader import load_environment
    from svcctl.model.placement import place
    from svcctl.plan.desired import desired_state
    from svcctl.plan.diff import diff
    from svcctl.plan.planner import Planned, password_source
    from svcctl.state import State

    env = load_environment(env_dir)
    name = env.name
    nothing = State.of([])
    placement = place(env, {})
    desired = desired_state(env, placement, nothing)
    plan = diff(desired, nothing, protected={n for n, i in env.instances.items() if i.protect}, environment=name)
    planned = Planned(plan=plan, desired=desired, observed=nothing, placement=placement)
    return hostvars(planned, password_source(key))


def write_inventory(path: Path, env_dir: Path, hostvars: dict[str, dict[str, Any]]) -> None:
    """The inventory svcctl apply would hand Ansible (SSH settings per host), 0600: it holds passwords."""
    from svcctl.apply.runner import inventory
    from svcctl.model.loader import load_environment
    from svcctl.ssh import SshTarget, resolve

    env = load_environment(env_dir)
    targets = {n: resolve(SshTarget.from_node(n, node)) for n, node in env.nodes.items()}
    path.touch(mode=0o600)
    path.write_text(json.dumps(inventory(targets, hostvars)))


def ansible_project(work: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """apply.yml of the project svcctl apply runs (playbooks/ and every engine's ansible/, merged by
    svcctl.apply.project) with the run's host programs, as svcctl.apply.runner gives them to Ansible: the
    playbook's path and the extra variables; `env` gets the module_utils path."""
    from svcctl.apply import project
    from svcctl.apply.runner import write_host_programs

    programs = write_host_programs(work / "private")
    env["ANSIBLE_MODULE_UTILS"] = str(programs / "module_utils")
    apply_yml = project.assemble(work / "project") / "apply.yml"
    return str(apply_yml), ["-e", f"svcctl_environment={ENV_NAME}", "-e", f"svcctl_programs={programs}"]


def count_changes(hostvars: dict[str, dict[str, Any]]) -> int:
    return sum(len(v["svcctl_changes"]) for v in hostvars.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="1,2,4,8", help="host counts to time")
    p.add_argument("--runs", type=int, default=5, help="runs per host count and side (medians are printed)")
    p.add_argument("--first", type=int, default=5, help="first lab host (the e2e tests use lab-1..lab-4)")
    p.add_argument("--instances", type=int, default=2, help="PostgreSQL instances (+ a binding each) per node")
    p.add_argument("--keep", action="store_true", help="leave the bench instances on the hosts")
    p.add_argument("--no-ansible", action="store_true", help="time svcctl only (a quick before/after with --also)")
    p.add_argument("--also", type=Path, help="another svcctl tree (e.g. `git archive` of an older commit) whose "
                   "`svcctl plan` is timed too, interleaved, for a before/after on the same hosts")  # fmt: skip
    a = p.parse_args()
    counts = [int(x) for x in a.hosts.split(",")]
    all_nodes = [f"lab-{i}" for i in range(a.first, a.first + max(counts))]
    available = json.loads((LAB / "hosts.json").read_text())
    missing = [n for n in all_nodes if n not in available]
    if missing:
        last = a.first + max(counts) - 1
        raise SystemExit(f"the lab lacks {', '.join(missing)}: run `lab/labctl.py up --hosts {last}`")
    key = os.urandom(32)
    old_umask = os.umask(0o077)  # the work directory holds inventories with passwords
    work = Path(tempfile.mkdtemp(prefix="svcctl-bench-"))
    os.umask(old_umask)
    (work / "apps").mkdir()
    env = {
        **os.environ,
        "SVCCTL_KEY": base64.b64encode(key).decode(),
        "PATH": f"{Path(PY).parent}:{os.environ['PATH']}",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
    }
    os.environ["SVCCTL_KEY"] = env["SVCCTL_KEY"]
    svcctl = [PY, "-m", "svcctl"]
    playbook = str(Path(PY).parent / "ansible-playbook")
    apply_yml, extra = ansible_project(work, env)

    full = write_environment(work / "all", all_nodes, a.instances)
    print(f"set-up: applying {a.instances} PostgreSQL instance(s) + binding(s) on each of {', '.join(all_nodes)}",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    run([*svcctl, "apply", str(full), "--auto-approve"], env)
    print(f"set-up: applied in {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        cases: dict[int, dict[str, Any]] = {}
        for n in counts:
            env_dir = write_environment(work / f"n{n}", all_nodes[:n], a.instances)
            hv = full_state_hostvars(env_dir, key)
            full_inv, noop_inv = work / f"full{n}.json", work / f"noop{n}.json"
            write_inventory(full_inv, env_dir, hv)
            write_inventory(
                noop_inv, env_dir, {node: {"svcctl_changes": [], "svcctl_steps": []} for node in all_nodes[:n]}
            )
            cases[n] = {
                "env": env_dir,
                "changes": count_changes(hv),
                "plan": [svcctl[0], *svcctl[1:], "plan", str(env_dir), "--detailed-exitcode"],
                "full": [playbook, "--check", "-i", str(full_inv), *extra, apply_yml],
                "noop": [playbook, "--check", "-i", str(noop_inv), *extra, apply_yml],
            }
            # warm-up (SSH control masters are per run, but page cache and the hosts' caches are not)
            run(cases[n]["plan"], env)
            if not a.no_ansible:
                run(cases[n]["full"], env)
        columns = ("plan", "plan_cpu", "hosts_cpu", "observe", "full", "noop", "also")
        times: dict[int, dict[str, list[float]]] = {n: {k: [] for k in columns} for n in counts}
        for _ in range(a.runs):  # interleaved, so machine noise hits every column alike
            for n in counts:
                c, t = cases[n], times[n]
                wall, local, hosts = timed_cpu(c["plan"], env, all_nodes[:n])  # exit 0: no changes, or this stops
                t["plan"].append(wall)
                t["plan_cpu"].append(local)
                t["hosts_cpu"].append(hosts if hosts is not None else float("nan"))
                t["observe"].append(observe_only(c["env"], key))
                if a.also:
                    t["also"].append(timed(c["plan"], env, cwd=a.also))  # `-m svcctl` finds the tree in cwd
                if not a.no_ansible:
                    t["full"].append(timed(c["full"], env))
                    t["noop"].append(timed(c["noop"], env))
                done = ", ".join(f"{k} {t[k][-1]:.2f}s" for k in columns if t[k])
                print(f"  run {len(t['plan'])}, {n} host(s): {done}", flush=True)
        med = {n: {k: statistics.median(v) if v else float("nan") for k, v in times[n].items()} for n in counts}
        print(f"\n{'hosts':>5} {'changes':>7} {'svcctl plan':>12} {'(cpu here':>9} {'on hosts)':>9} {'observe':>8} "
              f"{'ansible --check':>16} {'speed-up':>9} {'ansible no-op':>14} {'plan (--also)':>14}")  # fmt: skip
        for n in counts:
            m = med[n]
            speedup = m["full"] / m["plan"]
            print(f"{n:>5} {cases[n]['changes']:>7} {m['plan']:>11.2f}s {m['plan_cpu']:>8.2f}s {m['hosts_cpu']:>8.2f}s "
                  f"{m['observe']:>7.2f}s {m['full']:>15.2f}s {speedup:>8.1f}x {m['noop']:>13.2f}s "
                  f"{m['also']:>13.2f}s")  # fmt: skip
        lo, hi = min(counts), max(counts)
        print(f"\nmedians of {a.runs} runs; 'ansible --check' = apply.yml in check mode over the full desired state; "
              f"speed-up = ansible --check / svcctl plan (target >= 5x)")  # fmt: skip
        if lo != hi:
            print(f"svcctl plan, {hi} hosts / {lo}: {med[hi]['plan'] / med[lo]['plan']:.2f}x (target <= 1.5x); "
                  f"observe {med[hi]['observe'] / med[lo]['observe']:.2f}x; "
                  f"ansible --check {med[hi]['full'] / med[lo]['full']:.2f}x; "
                  f"--also plan {med[hi]['also'] / med[lo]['also']:.2f}x")  # fmt: skip
        print(json.dumps({"runs": a.runs, "instances_per_node": a.instances, "raw": times}))
    finally:
        if not a.keep:
            print("clean-up: destroying the bench instances", flush=True)
            write_environment(work / "all", all_nodes, 0)
            run([*svcctl, "apply", str(full), "--auto-approve", "--allow-destroy"], env)


if __name__ == "__main__":
    main()
