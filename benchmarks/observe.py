"""The CPU one lab host spends per observe (issue #15): its cgroup's cpu.stat usage_usec around each observe.

Set-up: one environment `obsbench` on one node (lab-4 by default; the e2e tests use lab-1 and lab-2) with
--instances PostgreSQL, MariaDB and Redis instances, each bound to one app, applied once before anything is
timed, so the script reads real clusters, databases, users, grants and ACL files (`--env DIR` uses an
environment already applied instead, and leaves it in place).

Each tree (this one, and with `--also DIR` another, e.g. a `git archive` of an older commit) gets a worker
process of its own, started in that tree, that builds its observe script and holds one SSH connection to
the node; each run asks every worker for one observe in turn, sequentially, nothing else running on the
node from here, and reads the node's cgroup before and after (sshd's channel, sudo, python3, every program
the script runs and the server processes that answer it: all of the host's CPU). An idle window of the
same length is measured too (what the node spends with nobody asking: timers, autovacuum, ...). The
documents each worker got are compared in every run: a change that alters what observe reports shows up
as a difference, named by its path.

It prints per-tree medians, the ratio to --also and the target (0.10 s per observe), then destroys what it
created (protect is false on every instance; --keep leaves them).

    .venv/bin/python benchmarks/observe.py [--node lab-4] [--runs 21] [--instances 3] [--also DIR]
        [--env DIR] [--keep]
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
CGROUPS = Path("/sys/fs/cgroup/unified/svclab")  # each lab host's cgroup (lab/labctl.py)
PY = sys.executable
ENV_NAME = "obsbench"
TARGET = 0.10  # seconds of host CPU per observe (issue #15)
SETTLE = 0.15  # seconds to wait after an observe returns, so the node's last exits are counted

# The worker runs in the tree it times (`python -c` puts the working directory first on sys.path): it builds
# that tree's observe script and fetches with that tree's runner, over one connection, once per line read.
WORKER = r"""
import json, sys
from pathlib import Path
import svcctl
if not Path(svcctl.__file__).resolve().is_relative_to(Path.cwd().resolve()):
    raise SystemExit(f"worker imported svcctl from {svcctl.__file__}, not from {Path.cwd()}")
from svcctl.drivers import observe_script
from svcctl.model.loader import load_environment
from svcctl.plan.observe import DEFAULT_OPTIONS, fetch
from svcctl.ssh import SshTarget
from svcctl.ssh.session import connect

env = load_environment(Path(sys.argv[1]))
node = sys.argv[2]
script = observe_script()
with connect(SshTarget.from_node(node, env.nodes[node])) as session:
    print(json.dumps({"ready": len(script)}), flush=True)
    for _line in sys.stdin:
        doc = fetch(session, script, DEFAULT_OPTIONS.command_timeout)
        print(json.dumps(doc, sort_keys=True), flush=True)
"""


def write_environment(directory: Path, node: str, instances: int) -> Path:
    """Environment `obsbench` on `node`: `instances` each of PostgreSQL, MariaDB and Redis, each bound to app
    `bench` (PostgreSQL and MariaDB readwrite, readonly, ...); instances 0 leaves only the node (to destroy)."""
    env = directory / ENV_NAME
    (env / "apps").mkdir(parents=True, exist_ok=True)
    manifest = env / "apps" / "bench.yml"
    if not manifest.exists():
        manifest.write_text("applications:\n  - name: bench\n    memory: 256M\n")
    lines = [
        f"environment: {ENV_NAME}",
        "nodes:",
        f"  {node}: {{host: {node}, ssh_config: {LAB}/ssh_config, engines: [postgres, mysql, redis]}}",
        "services:",
        "  postgres: {engine: postgres, versions: ['15']}",
        "  mysql: {engine: mysql, versions: ['10.11']}",
        "  redis: {engine: redis, versions: ['7']}",
        "plans:",
        "  pg: {service: postgres, storage_mb: 100, connections: 5}",
        "  my: {service: mysql, storage_mb: 100, connections: 5}",
        "  rd: {service: redis, memory_mb: 16, eviction: allkeys-lru, connections: 10}",
    ]
    names = [(f"{plan}{j}", plan) for plan in ("pg", "my", "rd") for j in range(1, instances + 1)]
    if names:
        lines.append("instances:")
        lines += [f"  {name}: {{plan: {plan}, node: {node}, protect: false}}" for name, plan in names]
        lines += ["apps:", "  bench: {manifest: apps/bench.yml, format: cf}", "bindings:"]
        for i, (name, plan) in enumerate(names):
            role = "" if plan == "rd" else f", role: {'readwrite' if i % 2 == 0 else 'readonly'}"
            lines.append(f"  - {{app: bench, instance: {name}{role}}}")
    (env / "svcctl.yaml").write_text("\n".join(lines) + "\n")
    return env


def run(cmd: list[str], env: dict[str, str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def host_usage(node: str) -> float:
    """CPU seconds the node's cgroup has used so far (every process on it)."""
    stat = (CGROUPS / node / "cpu.stat").read_text()
    return int(stat.split("usage_usec", 1)[1].split()[0]) / 1e6


class Worker:
    """One tree's observer: a process started in `tree` that observes `node` once per request."""

    def __init__(self, tree: Path, env_dir: Path, node: str, env: dict[str, str]) -> None:
        self.tree = tree
        self.proc = subprocess.Popen(
            [PY, "-c", WORKER, str(env_dir), node],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.script_bytes = json.loads(self._line())["ready"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the worker for {self.tree} stopped (exit {self.proc.wait()})")
        return line

    def observe(self) -> dict[str, Any]:
        """One observe; the node's document."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        doc: dict[str, Any] = json.loads(self._line())
        return doc

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first path at which two JSON documents differ, with both values (shortened); None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}/{key}: only in {'the first' if key in a else 'the second'}"
            found = difference(a[key], b[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path or '/'}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"


def measured(node: str, fn: Any) -> tuple[float, Any]:
    """(host CPU seconds, result) of fn(), the node's cgroup read before and SETTLE s after it returns."""
    time.sleep(SETTLE)
    u0 = host_usage(node)
    result = fn()
    time.sleep(SETTLE)
    return host_usage(node) - u0, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node", default="lab-4", help="the lab host to observe (the e2e tests use lab-1, lab-2)")
    p.add_argument("--runs", type=int, default=21, help="observes per tree (medians are printed)")
    p.add_argument("--instances", type=int, default=3, help="instances (+ a binding each) per engine")
    p.add_argument("--env", type=Path, help="an environment already applied on --node: use it, set up nothing")
    p.add_argument("--keep", action="store_true", help="leave the bench instances on the node")
    p.add_argument("--also", type=Path, help="another svcctl tree (e.g. `git archive` of an older commit) whose "
                   "observe is timed too, interleaved, for a before/after on the same node")  # fmt: skip
    a = p.parse_args()
    node = a.node
    if not (CGROUPS / node / "cpu.stat").exists():
        raise SystemExit(f"no cgroup for {node} under {CGROUPS}: is the lab up (`lab/labctl.py up`)?")
    env = {**os.environ, "PATH": f"{Path(PY).parent}:{os.environ['PATH']}"}
    if "SVCCTL_KEY" not in env:
        env["SVCCTL_KEY"] = base64.b64encode(os.urandom(32)).decode()
    svcctl = [PY, "-m", "svcctl"]
    old_umask = os.umask(0o077)  # the environment's app manifest receives the bindings' credentials
    work = Path(tempfile.mkdtemp(prefix="svcctl-observe-bench-"))
    os.umask(old_umask)
    env_dir = a.env
    full: Path | None = None
    if env_dir is None:
        full = env_dir = write_environment(work, node, a.instances)
        print(f"set-up: applying {a.instances} PostgreSQL, MariaDB and Redis instance(s) + bindings on {node}",
              flush=True)  # fmt: skip
        t0 = time.perf_counter()
        run([*svcctl, "apply", str(full), "--auto-approve"], env)
        print(f"set-up: applied in {time.perf_counter() - t0:.1f} s", flush=True)
    trees = {"now": REPO, **({"also": a.also.resolve()} if a.also else {})}
    try:
        workers = {label: Worker(tree, env_dir.resolve(), node, env) for label, tree in trees.items()}
        for label, w in workers.items():
            print(f"{label}: {w.tree} (observe script {w.script_bytes} bytes)", flush=True)
            w.observe()  # warm-up: page cache, the servers' caches, the node's own caches
        cpu: dict[str, list[float]] = {label: [] for label in [*workers, "idle"]}
        differences: list[str] = []
        for i in range(a.runs):  # interleaved, so whatever else the machine does hits every tree alike
            docs = {}
            for label, w in workers.items():
                used, docs[label] = measured(node, w.observe)
                cpu[label].append(used)
            used, _ = measured(node, lambda: time.sleep(0.3))
            cpu["idle"].append(used)
            if "also" in docs:
                found = difference(docs["now"], docs["also"])
                if found:
                    differences.append(f"run {i + 1}: {found}")
            print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in cpu.items()), flush=True)
        for w in workers.values():
            w.close()
        med = {k: statistics.median(v) for k, v in cpu.items()}
        window = 0.3 + 2 * SETTLE
        print(f"\nhost CPU per observe on {node}, medians of {a.runs} runs (idle: the node alone for {window:.1f} s):")
        for label, value in med.items():
            where = f"  ({trees[label]})" if label in trees else ""
            print(f"  {label:>5}: {value * 1000:6.1f} ms{where}")
        print(f"target: <= {TARGET * 1000:.0f} ms per observe: {'met' if med['now'] <= TARGET else 'NOT met'}")
        if "also" in med:
            print(f"now / also: {med['now'] / med['also']:.2f}x")
            print("documents: " + ("identical in every run" if not differences else "DIFFER"))
            for line in differences[:10]:
                print(f"  {line}")
        print(json.dumps({"node": node, "runs": a.runs, "instances_per_engine": a.instances, "raw": cpu}))
    finally:
        if full is not None and not a.keep:
            print("clean-up: destroying the bench instances", flush=True)
            write_environment(work, node, 0)
            run([*svcctl, "apply", str(full), "--auto-approve", "--allow-destroy"], env)


if __name__ == "__main__":
    main()
