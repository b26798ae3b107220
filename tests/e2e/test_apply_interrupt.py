"""An apply killed half-way (SIGINT as Ctrl-C sends it, or SIGKILL) leaves nothing broken, and the next converges.

After an interrupted apply the app's manifest is either absent or whole (valid YAML whose VCAP_SERVICES is
valid JSON); after an apply that succeeded it is whole and binds exactly the environment's instances. A
SIGINT releases the locks and removes the run's private directory (it holds the secrets); after a SIGKILL
the lock stays, the next apply says why and that --break-lock removes it, and that apply also removes the
dead run's private directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.conftest import Lab
from tests.e2e.applying import LOCK_WAIT_S, apply, assert_converged, held_by_another_apply, load_vcap, password
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env

RUN_DIR_PREFIX = "svcctl-apply-"


def body(env: Env, rotation: int = 0) -> str:
    return (
        f"instances:\n"
        f"  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"  {env.my()}: {{plan: mysql-small, protect: false}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-2, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n"
        f"  - {{app: {env.app()}, instance: {env.pg()}, rotation: {rotation}}}\n"
        f"  - {{app: {env.app()}, instance: {env.my()}, role: readonly}}\n"
        f"  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )


def new_env(tmp_path: Path, token: str) -> Env:
    env = make_env(tmp_path, token)
    (env.path / "apps").mkdir()
    env.write(body(env))
    return env


def manifest_is_absent_or_whole(env: Env) -> None:
    """After an interrupted apply: no manifest, or one that parses and binds only the environment's instances."""
    manifest = env.path / "apps" / "manifest.yml"
    if manifest.exists():
        bound = {label: [e["instance_name"] for e in entries] for label, entries in load_vcap(manifest).items()}
        assert set(bound) <= {"mysql", "postgresql", "redis"}, bound
        assert {name for names in bound.values() for name in names} <= {env.pg(), env.my(), env.rd()}, bound


def manifest_is_whole(env: Env) -> None:
    """After an apply that succeeded: the manifest exists, parses, and binds each of the three instances once."""
    manifest = env.path / "apps" / "manifest.yml"
    assert manifest.is_file(), f"the apply succeeded but {manifest} does not exist"
    bound = {label: [e["instance_name"] for e in entries] for label, entries in load_vcap(manifest).items()}
    assert bound == {"postgresql": [env.pg()], "mysql": [env.my()], "redis": [env.rd()]}


class Apply:
    """`svcctl apply --auto-approve` in the background, in its own process group as a shell job would be."""

    def __init__(self, env: Env, *args: str) -> None:
        run_env = {**os.environ, "SVCCTL_KEY": TEST_KEY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            [*SVCCTL, "apply", ".", "--auto-approve", *args], cwd=env.path, env=run_env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.stderr: list[str] = []
        self.stdout = ""
        self._threads = [threading.Thread(target=self._read_err), threading.Thread(target=self._read_out)]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    def wait(self, timeout: float = 600) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=30)
        return rc

    @property
    def output(self) -> str:
        return self.stdout + "".join(self.stderr)


def recorded_on_a_node(lab: Lab, env: Env) -> bool:
    """Whether a node's registry records an object of this environment: each is recorded right before it is
    made, so the playbook is making its first change."""
    for host in ("lab-1", "lab-2"):
        found = lab.ssh(
            host, f'sudo grep -c \'"environment": "{env.name}"\' /var/lib/svcctl/registry.json', check=False
        )
        if found.stdout.strip() not in ("", "0"):
            return True
    return False


def start_and_wait_for_a_change(lab: Lab, env: Env) -> Apply:
    """An apply that has got past the locks and is making a first change (retrying while others hold a lock)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        run = Apply(env)
        while run.proc.poll() is None and not recorded_on_a_node(lab, env):
            time.sleep(0.05)
        if run.proc.poll() is None:
            return run
        rc = run.wait()
        if rc == 1 and held_by_another_apply("".join(run.stderr)) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        raise AssertionError(f"apply made no change before exiting {rc}:\n{run.output}")


def run_dirs(pid: int) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}{pid}-*"))


def processes_of_run(pid: int) -> list[int]:
    """Ansible processes (ansible-playbook and its workers) whose environment names that run's private directory.

    Its ssh control masters (ControlPersist) outlive every run, finished or not, and change nothing: not counted.
    """
    marker = f"{tempfile.gettempdir()}/{RUN_DIR_PREFIX}{pid}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes() and b"ansible" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.2)
    return bool(callable(condition) and condition())


def lock_holders(lab: Lab) -> dict[str, int | None]:
    """The pid recorded in each node's apply lock (None: no lock)."""
    out: dict[str, int | None] = {}
    for host in ("lab-1", "lab-2"):
        text = lab.ssh(host, "sudo cat /var/lib/svcctl/apply.lock 2>/dev/null || true").stdout.strip()
        out[host] = json.loads(text)["pid"] if text else None
    return out


def cleanup(env: Env, lab: Lab | None = None, killed: int | None = None) -> None:
    """Destroy what the test made. A lock that the test's own killed apply (`killed`) still holds is broken
    once that run's playbook has ended: left in place, it would fail every later test that uses the nodes."""
    env.write(f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n")
    extra: list[str] = []
    if lab is not None and killed is not None and killed in lock_holders(lab).values():
        wait_for(lambda: processes_of_run(killed) == [], 300)
        extra = ["--break-lock"]
    res = apply(env, "--allow-destroy", *extra)
    assert res.returncode == 0, res.stdout + res.stderr


def test_sigint_mid_apply_releases_the_locks_and_the_next_apply_converges(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    env = new_env(tmp_path, unique)
    try:
        run = start_and_wait_for_a_change(lab, env)
        pid = run.proc.pid
        assert run_dirs(pid) != [] and processes_of_run(pid) != []  # the playbook is running
        os.killpg(pid, signal.SIGINT)  # what Ctrl-C does to the foreground job
        rc = run.wait(timeout=120)
        assert rc == 130, run.output
        assert "error: apply interrupted" in "".join(run.stderr)
        assert "Wrote the credentials" not in run.output  # no manifest names users the run may not have made
        assert "Traceback" not in run.output
        manifest_is_absent_or_whole(env)
        assert pid not in lock_holders(lab).values()  # released on the way out
        assert run_dirs(pid) == []  # the secrets' directory is gone
        assert wait_for(lambda: processes_of_run(pid) == [], 30), "the playbook outlived the interrupted apply"

        res = apply(env)
        assert res.returncode == 0, res.stdout + res.stderr
        manifest_is_whole(env)
        assert_converged(env)
    finally:
        cleanup(env)


def test_sigkill_mid_apply_leaves_a_lock_that_break_lock_removes_and_the_next_apply_converges(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    env = new_env(tmp_path, unique)
    pid: int | None = None
    try:
        run = start_and_wait_for_a_change(lab, env)
        pid = run.proc.pid
        os.kill(pid, signal.SIGKILL)
        assert run.wait(timeout=60) == -signal.SIGKILL
        manifest_is_absent_or_whole(env)
        assert wait_for(lambda: processes_of_run(pid) == [], 180), "the playbook outlived the killed apply"
        assert set(lock_holders(lab).values()) == {pid}  # both nodes were locked by it

        res = env.run("apply", ".", "--auto-approve")
        assert res.returncode == 1
        for node in ("lab-1", "lab-2"):
            assert f"{node} is locked by" in res.stderr and f"(pid {pid})" in res.stderr
        assert "the apply that took it died" in res.stderr and "--break-lock" in res.stderr, res.stderr
        assert "Traceback" not in res.stdout + res.stderr
        assert run_dirs(pid) != []  # not yet removed: that apply stopped at the locks

        res = apply(env, "--break-lock")
        assert res.returncode == 0, res.stdout + res.stderr
        assert run_dirs(pid) == []  # the killed run's secrets went with the next apply
        manifest_is_whole(env)
        assert_converged(env)
        assert pid not in lock_holders(lab).values()
    finally:
        cleanup(env, lab, pid)


def test_the_manifest_is_never_seen_partial_while_apply_rewrites_it(tmp_path: Path, unique: str, lab: Lab) -> None:
    env = new_env(tmp_path, unique)
    manifest = env.path / "apps" / "manifest.yml"
    try:
        res = apply(env)
        assert res.returncode == 0, res.stdout + res.stderr
        manifest_is_whole(env)
        old = password(f"binding/{env.app()}/{env.pg()}/0")
        new = password(f"binding/{env.app()}/{env.pg()}/1")

        seen: list[str] = []
        problems: list[str] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    creds = load_vcap(manifest)["postgresql"][0]["credentials"]
                    seen.append(creds["password"])
                except Exception as exc:  # any partial or missing file is the failure this test looks for
                    problems.append(repr(exc))
                time.sleep(0.002)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            env.write(body(env, rotation=1))  # new credentials: apply rewrites the manifest
            res = apply(env)
        finally:
            stop.set()
            poller.join()
        assert res.returncode == 0, res.stdout + res.stderr
        manifest_is_whole(env)
        assert problems == []
        assert seen[0] == old and seen[-1] == new
        assert set(seen) == {old, new}
        assert len(seen) > 100  # it really was read all along
    finally:
        cleanup(env)
