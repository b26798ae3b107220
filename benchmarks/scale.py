"""Fleet scale: svcctl over environments of 100, 300 and 1,000 objects on 4 lab hosts.

An environment of S objects is S/2 instances (half PostgreSQL, half MariaDB, pinned round-robin to the hosts)
each bound once to one app, so S/2 bindings. For each size, on hosts that hold nothing of it yet, it times as
whole CLI commands in fresh processes:

  - the first `svcctl apply --auto-approve` (every object created; the engines already run: a warm-up
    environment is applied first, untimed, so this measures objects, not apt);
  - the converged `svcctl plan --detailed-exitcode` (must say no changes) and the converged apply (must run
    no playbook), --runs times each;
  - an apply of a one-object change in that environment (one binding's role flipped, readwrite <-> readonly;
    the plan is checked to hold exactly one change first), --runs times;
  - the destroy of the environment (`--allow-destroy`), once, for reference.

Per command it reports the wall time, the CPU used here (the command and its children: ansible-playbook and
its workers), the largest resident set among them, the CPU the hosts used meanwhile (their cgroups), and the
SSH connections and commands that reached each node (counted in the nodes' journals: benchmarks/labhosts.py).
Targets (issue #15): converged plan of 1,000 objects <= 5 s; first apply of 1,000 <= 120 s; an apply of one
changed object <= 2x the converged plan. The smallest size is the baseline for the growth ratios.

    .venv/bin/python benchmarks/scale.py [--sizes 100,300,1000] [--hosts 4] [--first 9] [--runs 3]

Needs lab-F..lab-F+hosts-1 (F = 9 by default: the e2e tests use lab-1..lab-4, benchmarks/plan.py lab-5..):
`lab/labctl.py up --hosts 12`. What a destroy dumps into /var/backups/svcctl on the hosts is removed after.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labhosts import LAB, Measured, close_masters, hosts_cpu, journal_cursor, measure, rounds_since, ssh

PY = sys.executable
ENV_NAME = "scale"


def write_environment(directory: Path, nodes: list[str], objects: int, flipped: int | None = None) -> Path:
    """The environment of `objects` objects over `nodes` (0: only the nodes and engines, to warm up or destroy);
    binding `flipped` (an index) gets readonly instead of readwrite."""
    env = directory / ENV_NAME
    (env / "apps").mkdir(parents=True, exist_ok=True)
    lines = [f"environment: {ENV_NAME}", "nodes:"]
    for node in nodes:
        lines.append(f"  {node}: {{host: {node}, ssh_config: {LAB}/ssh_config, engines: [postgres, mysql],"
                     " capacity: {storage_mb: 1000000}}")  # fmt: skip
    lines += [
        "services:",
        "  postgres: {engine: postgres, versions: ['15']}",
        "  mysql: {engine: mysql, versions: ['10.11']}",
        "plans:",
        "  pg: {service: postgres, storage_mb: 10, connections: 2}",
        "  my: {service: mysql, storage_mb: 10, connections: 2}",
    ]
    count = objects // 2
    if count:
        lines.append("instances:")
        for i in range(count):
            plan, node = ("pg", "my")[i % 2], nodes[(i // 2) % len(nodes)]
            lines.append(f"  s{i}-{plan}: {{plan: {plan}, node: {node}, protect: false}}")
        lines += ["apps:", "  app: {manifest: apps/app.yml, format: cf}", "bindings:"]
        for i in range(count):
            role = "readonly" if i == flipped else "readwrite"
            lines.append(f"  - {{app: app, instance: s{i}-{('pg', 'my')[i % 2]}, role: {role}}}")
    (env / "svcctl.yaml").write_text("\n".join(lines) + "\n")
    return env


class Bench:
    """Runs svcctl commands against the hosts and records what each cost."""

    def __init__(self, nodes: list[str], env: dict[str, str]) -> None:
        self.nodes, self.env = nodes, env

    def cmd(self, *args: str, ok: tuple[int, ...] = (0,), rounds: bool = True) -> dict[str, Any]:
        """One svcctl command, measured; it must exit with one of `ok`."""
        cursors = {n: journal_cursor(n) for n in self.nodes} if rounds else {}
        h0 = hosts_cpu(self.nodes)
        m: Measured = measure([PY, "-m", "svcctl", *args], self.env)
        h1 = hosts_cpu(self.nodes)
        if m.returncode not in ok:
            raise SystemExit(f"svcctl {' '.join(args)} exited {m.returncode}:\n{m.stdout[-4000:]}")
        out: dict[str, Any] = {"wall": m.wall, "cpu": m.cpu, "peak_mb": m.peak_mb, "stdout": m.stdout,
                               "hosts_cpu": None if h0 is None or h1 is None else h1 - h0}  # fmt: skip
        if rounds:
            counted = {n: rounds_since(n, c) for n, c in cursors.items()}
            out["connections"] = max(r.connections for r in counted.values())
            out["commands"] = max(r.commands for r in counted.values())
        return out


def one_change(bench: Bench, env_dir: Path) -> None:
    """Stop unless the environment's plan holds exactly one change (the flipped binding)."""
    doc = json.loads(bench.cmd("plan", str(env_dir), "-o", "json", ok=(0, 2), rounds=False)["stdout"])
    summary = doc.get("summary", {})
    changed = sum(int(summary.get(k, 0)) for k in ("add", "change", "destroy", "adopt"))
    if changed != 1:
        raise SystemExit(f"a one-object change planned {summary}, not one change")


def run_size(bench: Bench, work: Path, size: int, runs: int) -> dict[str, list[dict[str, Any]]]:
    nodes = bench.nodes
    d = work / f"s{size}"
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in ("first", "plan", "apply", "change", "destroy")}
    env_dir = write_environment(d, nodes, size)
    print(f"size {size}: first apply", flush=True)
    results["first"].append(bench.cmd("apply", str(env_dir), "--auto-approve"))
    try:
        for r in range(runs):
            results["plan"].append(bench.cmd("plan", str(env_dir), "--detailed-exitcode"))
            converged = bench.cmd("apply", str(env_dir), "--auto-approve")
            if "No changes" not in converged["stdout"]:
                raise SystemExit(f"the converged apply changed something:\n{converged['stdout'][-2000:]}")
            results["apply"].append(converged)
            write_environment(d, nodes, size, flipped=None if r % 2 else 0)  # flip binding 0, then back
            one_change(bench, env_dir)
            results["change"].append(bench.cmd("apply", str(env_dir), "--auto-approve"))
            print(f"  run {r + 1}: " + ", ".join(f"{k} {v[-1]['wall']:.2f}s" for k, v in results.items() if v),
                  flush=True)  # fmt: skip
        if runs % 2:  # an odd number of flips left binding 0 readonly: put it back so the next plan is clean
            write_environment(d, nodes, size)
            bench.cmd("apply", str(env_dir), "--auto-approve", rounds=False)
    finally:
        write_environment(d, nodes, 0)
        print(f"size {size}: destroy", flush=True)
        results["destroy"].append(bench.cmd("apply", str(env_dir), "--auto-approve", "--allow-destroy"))
        for node in nodes:  # the dumps the destroy took of our own bench databases
            ssh(node, "sudo -n find /var/backups/svcctl -maxdepth 1 -type f -name 's[0-9]*-*' -delete")
    return results


def med(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,300,1000", help="objects per environment (instances + bindings)")
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--first", type=int, default=9, help="first lab host (the e2e tests use lab-1..lab-4)")
    p.add_argument("--runs", type=int, default=3, help="runs of the converged plan, apply and one-object change")
    a = p.parse_args()
    nodes = [f"lab-{i}" for i in range(a.first, a.first + a.hosts)]
    available = json.loads((LAB / "hosts.json").read_text())
    if missing := [n for n in nodes if n not in available]:
        raise SystemExit(f"the lab lacks {', '.join(missing)}: run `lab/labctl.py up --hosts {a.first + a.hosts - 1}`")
    work = Path(tempfile.mkdtemp(prefix="svcctl-scale-"))
    env = {**os.environ, "SVCCTL_KEY": base64.b64encode(os.urandom(32)).decode(),
           "PATH": f"{Path(PY).parent}:{os.environ['PATH']}"}  # fmt: skip
    bench = Bench(nodes, env)
    print(f"warm-up: the engines on {', '.join(nodes)}", flush=True)
    warm = write_environment(work / "warm", nodes, 4 * len(nodes))  # one instance of each engine per host
    bench.cmd("apply", str(warm), "--auto-approve", rounds=False)
    write_environment(work / "warm", nodes, 0)  # the engines stay (svcctl never removes one), the objects go
    bench.cmd("apply", str(warm), "--auto-approve", "--allow-destroy", rounds=False)
    sizes = [int(s) for s in a.sizes.split(",")]
    try:
        all_results = {size: run_size(bench, work, size, a.runs) for size in sizes}
    finally:
        close_masters(nodes)
    cols = ("first", "plan", "apply", "change", "destroy")
    print(f"\n{a.hosts} hosts ({', '.join(nodes)}); medians of {a.runs} (first apply and destroy: one run)")
    print(f"{'objects':>7} " + " ".join(f"{c:>9}" for c in cols) + "   change/plan")
    for size, res in all_results.items():
        print(f"{size:>7} " + " ".join(f"{med(res[c], 'wall'):>8.2f}s" for c in cols)
              + f"   {med(res['change'], 'wall') / med(res['plan'], 'wall'):>10.2f}x")  # fmt: skip
    print(f"\n{'objects':>7} {'command':>8} {'cpu here':>9} {'peak MB':>8} {'hosts cpu':>10} {'ssh conns':>9} "
          f"{'commands':>9}   (per node, the busiest)")  # fmt: skip
    for size, res in all_results.items():
        for c in cols:
            m = {k: med(res[c], k) for k in ("cpu", "peak_mb", "hosts_cpu", "connections", "commands")}
            print(f"{size:>7} {c:>8} {m['cpu']:>8.2f}s {m['peak_mb']:>8.0f} {m['hosts_cpu']:>9.2f}s "
                  f"{m['connections']:>9.0f} {m['commands']:>9.0f}")  # fmt: skip
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        growth = med(all_results[hi]["plan"], "wall") / med(all_results[lo]["plan"], "wall")
        print(f"\nconverged plan, {hi} / {lo} objects: {growth:.2f}x")
    raw = {s: {c: [{k: v for k, v in row.items() if k != "stdout"} for row in r[c]] for c in cols}
           for s, r in all_results.items()}  # fmt: skip
    print(json.dumps({"hosts": nodes, "runs": a.runs, "raw": raw}))


if __name__ == "__main__":
    main()
