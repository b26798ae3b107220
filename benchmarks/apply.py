"""How long `svcctl apply` takes on one lab host: a first apply of 1 vs N instances, a converged apply vs a plan.

Each run makes two environments with this run's unique names on one host (PostgreSQL, or Redis with
`--engine redis`; one app bound to every instance) and times, as whole CLI commands in fresh processes:
  - the first `svcctl apply --auto-approve` of 1 instance + 1 binding, and of N instances + N bindings
    (the engine is installed and running already: a warm-up environment is applied, untimed, before each
    run, so this measures instances, not apt or an engine start);
  - on the N-instance environment, converged: `svcctl plan` (the baseline) and `svcctl apply --auto-approve`
    with nothing to do (which must run no playbook at all).
Targets (the issue): first apply of N within 2x of 1; a converged apply within 1.2x of a plan.
`--also DIR` times the first applies of another tree too (a `git worktree` of an older commit), in the
same runs, interleaved with this tree's and in alternating order, on the same host: a before/after. Each
tree runs its own svcctl (`python -m svcctl` in that tree) and its own Ansible files (SVCCTL_PLAYBOOKS:
the tree's playbooks/ and engines' ansible/ merged, as `svcctl.apply.project` merges them), so neither
borrows the installed checkout's.
Afterwards every instance is deleted through svcctl (declared `protect: false`, `--allow-destroy`), the dumps
that deleting made are removed, and an engine record our environments wrote into the host's registry is put
back as it was, under the host's apply lock.

    .venv/bin/python benchmarks/apply.py [--host lab-1] [--runs 3] [--instances 10] [--engine redis] [--also DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
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
LOCK_WAIT = 600  # seconds to wait, in total, for another engineer's apply to release the host's lock
DUMP_DIR = "/var/backups/svcctl"


ENGINES = {
    # engine: (service and plan lines, the dumps a delete leaves)
    "postgres": ("postgres: {engine: postgres, versions: ['15']}", "small: {service: postgres, storage_mb: 64, "
                 "connections: 5}", "*.pgc"),
    "redis": ("redis: {engine: redis, versions: ['7']}", "small: {service: redis, memory_mb: 16, eviction: "
              "allkeys-lru, connections: 20}", "*.rdb"),
}  # fmt: skip


def merged_project(tree: Path, into: Path) -> Path:
    """A tree's whole Ansible project (playbooks/ plus each engine's ansible/), as svcctl.apply.project merges it."""
    parts = [tree / "playbooks", *sorted(tree.glob("svcctl/drivers/*/ansible"))]
    for part in parts:
        for file in part.rglob("*"):
            if file.is_file() and file.name != "__init__.py" and "__pycache__" not in file.parts:
                target = into / file.relative_to(part)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file.read_bytes())
    return into


class Bench:
    """The environments of one benchmark, the CLI run in them, and their clean-up."""

    def __init__(self, host: str, work: Path, engine: str = "postgres") -> None:
        self.host = host
        self.work = work
        self.engine = engine
        self.created: list[Path] = []
        self.instances: list[str] = []
        self.env = {
            **os.environ,
            "SVCCTL_KEY": base64.b64encode(os.urandom(32)).decode(),
            "PATH": f"{Path(PY).parent}:{os.environ['PATH']}",
        }
        self.trees: dict[Path, dict[str, str]] = {}  # tree -> its environment variables

    def tree_env(self, tree: Path) -> dict[str, str]:
        """The environment that runs `tree`'s svcctl with `tree`'s own Ansible files."""
        if tree not in self.trees:
            project = merged_project(tree, self.work / f"project-{len(self.trees)}")
            self.trees[tree] = {**self.env, "SVCCTL_PLAYBOOKS": str(project)}
        return self.trees[tree]

    def environment(self, token: str, count: int) -> Path:
        """An environment `ba<token>` on the host: `count` PostgreSQL instances, one app bound to each."""
        path = self.work / f"ba{token}"
        (path / "apps").mkdir(parents=True)
        names = [f"ba{token}-{i}" for i in range(1, count + 1)]
        self.instances += names
        self.created.append(path)
        self.write(path, names)
        return path

    def write(self, path: Path, names: list[str]) -> None:
        app = path.name
        service, plan, _ = ENGINES[self.engine]
        instances = "".join(f"  {n}: {{plan: small, node: {self.host}, protect: false}}\n" for n in names)
        bindings = "".join(f"  - {{app: {app}, instance: {n}}}\n" for n in names)
        body = (
            f"instances:\n{instances}apps:\n  {app}: {{manifest: apps/manifest.yml, format: cf}}\nbindings:\n{bindings}"
            if names
            else "instances: {}\n"
        )
        (path / "svcctl.yaml").write_text(
            f"nodes:\n  {self.host}:\n    host: {self.host}\n    ssh_config: {LAB}/ssh_config\n"
            f"    engines: [{self.engine}]\n    capacity: {{memory_mb: 65536, storage_mb: 1000000}}\n"
            f"services:\n  {service}\nplans:\n  {plan}\n{body}environment: {app}\n"
        )

    def svcctl(self, path: Path, *args: str, ok: tuple[int, ...] = (0,), expect: str = "", tree: Path = REPO) -> float:
        """Seconds one CLI command of `tree`'s svcctl took (its output must hold `expect`); waits, untimed,
        while another apply holds the host's lock."""
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            t0 = time.perf_counter()
            res = subprocess.run(
                [PY, "-m", "svcctl", *args, str(path)], capture_output=True, text=True, env=self.tree_env(tree),
                check=False, cwd=tree,  # `-m svcctl` finds the tree's package first
            )  # fmt: skip
            elapsed = time.perf_counter() - t0
            if res.returncode in ok and expect in res.stdout:
                return elapsed
            if "is locked by" in res.stdout + res.stderr and time.monotonic() < deadline:
                print(f"  {self.host} is locked by another apply; waiting", file=sys.stderr, flush=True)
                time.sleep(10)
                continue
            raise SystemExit(f"svcctl {' '.join(args)} {path} exited {res.returncode}:\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}")  # fmt: skip

    def apply(self, path: Path, *extra: str, tree: Path = REPO) -> float:
        return self.svcctl(path, "apply", "--auto-approve", *extra, tree=tree)

    def delete(self, path: Path) -> None:
        """Delete the environment's instances through svcctl (they are dumped first, as always)."""
        self.write(path, [])
        self.apply(path, "--allow-destroy")
        self.created.remove(path)

    def ssh(self, command: str) -> str:
        res = subprocess.run(
            ["ssh", "-F", str(LAB / "ssh_config"), self.host, command], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise SystemExit(f"ssh {self.host} {command!r} failed: {res.stderr.strip()[-500:]}")
        return res.stdout

    def registry_record(self, address: str) -> object:
        doc = json.loads(self.ssh("sudo -n cat /var/lib/svcctl/registry.json 2>/dev/null || echo '{}'") or "{}")
        return doc.get("objects", {}).get(address)

    def restore_record(self, address: str, before: object) -> None:
        """Put a registry record back as it was, if one of our environments rewrote it (under the host's lock)."""
        from svcctl.apply.lock import locked
        from svcctl.ssh import SshTarget

        now = self.registry_record(address)
        if not isinstance(now, dict) or not str(now.get("environment", "")).startswith("ba") or now == before:
            return
        target = SshTarget(name=self.host, host=self.host, ssh_config=str(LAB / "ssh_config"))
        script = (
            "import json, os, sys\n"
            "path = '/var/lib/svcctl/registry.json'\n"
            "address, before = sys.argv[1], json.loads(sys.argv[2])\n"
            "doc = json.load(open(path))\n"
            "if before is None:\n    doc['objects'].pop(address, None)\n"
            "else:\n    doc['objects'][address] = before\n"
            "tmp = path + '.bench'\n"
            "with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w') as f:\n"
            "    json.dump(doc, f, indent=1, sort_keys=True)\n"
            "os.replace(tmp, path)\n"
        )
        with locked([target]):
            self.ssh(f"sudo -n python3 -c {shlex.quote(script)} {shlex.quote(address)} "
                     f"{shlex.quote(json.dumps(before))}")  # fmt: skip

    def cleanup(self, engine_before: object) -> None:
        for path in list(self.created):
            self.delete(path)
        if self.instances:
            dumps = ENGINES[self.engine][2]
            files = " ".join(shlex.quote(f"{DUMP_DIR}/{n}-") + dumps for n in self.instances)
            self.ssh(f"sudo -n sh -c {shlex.quote('rm -f ' + files)}")
        self.restore_record(f"engine.{self.host}.{self.engine}", engine_before)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="lab-1")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--instances", type=int, default=10)
    p.add_argument("--engine", choices=sorted(ENGINES), default="postgres")
    p.add_argument("--also", type=Path, help="another svcctl tree whose first applies are timed too, interleaved")
    a = p.parse_args()
    if not 1 <= a.runs <= 20 or not 2 <= a.instances <= 50:
        raise SystemExit("--runs is 1-20 and --instances 2-50")
    os.environ.setdefault("PATH", "")
    bench = Bench(a.host, Path(tempfile.mkdtemp(prefix="svcctl-bench-apply-")), a.engine)
    os.environ["SVCCTL_KEY"] = bench.env["SVCCTL_KEY"]
    engine_before = bench.registry_record(f"engine.{a.host}.{a.engine}")
    trees = [REPO] if a.also is None else [REPO, a.also.resolve()]
    first1: dict[Path, list[float]] = {t: [] for t in trees}
    firstn: dict[Path, list[float]] = {t: [] for t in trees}
    plans: list[float] = []
    converged: list[float] = []
    try:
        warm = bench.environment(secrets.token_hex(3), 1)
        print(f"warm-up apply on {a.host} (installs and starts {a.engine} if needed) ...", file=sys.stderr, flush=True)
        bench.apply(warm)
        for run in range(a.runs):
            bench.apply(warm)  # untimed: starts the engine again if another user of the lab stopped it
            # interleaved, and the order alternates, so drift on the machine hits both trees alike
            for tree in trees if run % 2 == 0 else trees[::-1]:
                one = bench.environment(secrets.token_hex(3), 1)
                many = bench.environment(secrets.token_hex(3), a.instances)
                first1[tree].append(bench.apply(one, tree=tree))
                firstn[tree].append(bench.apply(many, tree=tree))
                if tree == REPO:
                    for step in ("plan", "apply") if run % 2 == 0 else ("apply", "plan"):
                        if step == "plan":  # 2 would mean not converged
                            plans.append(bench.svcctl(many, "plan", "--detailed-exitcode"))
                        else:  # nothing to do: no playbook, no "Apply complete"
                            converged.append(bench.svcctl(many, "apply", "--auto-approve", expect="No changes."))
                name = "this tree" if tree == REPO else str(tree)
                figures = f"{name}: first apply 1: {first1[tree][-1]:.1f}s, {a.instances}: {firstn[tree][-1]:.1f}s"
                if tree == REPO:
                    figures += f"; plan {plans[-1]:.1f}s, converged apply {converged[-1]:.1f}s"
                print(f"run {run + 1}/{a.runs}: {figures}", file=sys.stderr, flush=True)
                bench.delete(one)
                bench.delete(many)
    finally:
        bench.cleanup(engine_before)
    mp, mc = median(plans), median(converged)
    print(f"\n{a.engine} on {a.host}, medians of {a.runs} runs (whole CLI commands)\n")
    print(f"{'measure':44} {'seconds':>8} {'ratio':>7} {'target':>7}")
    for tree in trees:
        m1, mn = median(first1[tree]), median(firstn[tree])
        if len(trees) > 1:
            print("this tree" if tree == REPO else f"--also {tree}")
        print(f"{'first apply, 1 instance + 1 binding':44} {m1:8.2f}")
        many_label = f"first apply, {a.instances} instances + {a.instances} bindings"
        print(f"{many_label:44} {mn:8.2f} {mn / m1:6.2f}x {'2.0x':>7}")
    print(f"{'plan, converged':44} {mp:8.2f}")
    print(f"{'apply, converged (nothing to do)':44} {mc:8.2f} {mc / mp:6.2f}x {'1.2x':>7}")
    print(
        json.dumps(
            {
                "engine": a.engine,
                "host": a.host,
                "runs": a.runs,
                "instances": a.instances,
                "first_1": {str(t): v for t, v in first1.items()},
                "first_n": {str(t): v for t, v in firstn.items()},
                "plan": plans,
                "converged": converged,
            }
        )
    )


if __name__ == "__main__":
    main()
