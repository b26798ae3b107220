"""No secret leaks: every password svcctl derives during a run of plan, apply, tunnel, rotation and destroy
appears nowhere (outputs, files left in /tmp, ~/.ansible, the lab hosts' journals, logs and temporary
files) except in the apps' manifests, which are 0600.

The scanner is shown to work on the manifests themselves: it must find the current passwords there.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path

from tests.conftest import Lab
from tests.e2e.applying import apply, password
from tests.e2e.envs import Env, make_env

MAX_FILE = 20 * 1024 * 1024

# Run on each lab host as root: secrets on stdin, one per line; prints how many of them (not which, nor
# where) it found in the journal since START or in recently changed files of the places svcctl and
# Ansible touch.  Prints indexes only, so a leak never reaches this test's own output.
HOST_SCAN = r"""
import json, os, subprocess, sys
start = float(sys.argv[1])
secrets = [s for s in sys.stdin.read().split("\n") if s]
found = {}
journal = subprocess.run(["journalctl", "--since", "@%d" % int(start), "-o", "export", "--no-pager"],
                         capture_output=True).stdout.decode("utf-8", "replace")
for i, s in enumerate(secrets):
    if s in journal:
        found.setdefault("journal", []).append(i)
roots = ["/tmp", "/var/tmp", "/root", "/home", "/var/log", "/var/lib/svcctl", "/usr/local/lib/svcctl", "/etc/redis",
         "/etc/postgresql", "/etc/mysql", "/run"]
for root in roots:
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if not os.path.isfile(path) or os.path.islink(path) or st.st_size > 20 * 1024 * 1024:
                    continue
                if st.st_mtime < start - 5:
                    continue
                with open(path, "rb") as f:
                    data = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            hits = [i for i, s in enumerate(secrets) if s in data]
            if hits:
                found[path] = hits
print(json.dumps(found))
"""


def body(env: Env, rotation: int) -> str:
    return (
        f"instances:\n"
        f"  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"  {env.my()}: {{plan: mysql-small, protect: false}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n"
        f"  - {{app: {env.app()}, instance: {env.pg()}, rotation: {rotation}}}\n"
        f"  - {{app: {env.app()}, instance: {env.my()}, role: readonly, rotation: {rotation}}}\n"
        f"  - {{app: {env.app()}, instance: {env.rd()}, rotation: {rotation}}}\n"
    )


def local_files_with(secrets: list[str], roots: list[Path], since: float) -> dict[str, list[int]]:
    """Files under `roots` changed since `since` that contain one of the secrets: path -> indexes."""
    found: dict[str, list[int]] = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE or st.st_mtime < since - 5:
                        continue
                    data = path.read_bytes().decode("utf-8", "replace")
                except OSError:
                    continue
                hits = [i for i, s in enumerate(secrets) if s in data]
                if hits:
                    found[str(path)] = hits
    return found


def test_no_secret_outside_the_0600_manifests(lab: Lab, tmp_path: Path, unique: str) -> None:
    start = time.time()
    env = make_env(tmp_path, unique)
    (env.path / "apps").mkdir()
    manifest = env.path / "apps" / "manifest.yml"
    outputs: list[str] = []

    def run(*args: str) -> str:
        res = env.run(*args)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode in (0, 2), res.stdout + res.stderr
        return res.stdout + res.stderr  # the tunnel names its user on stderr

    def applied(*args: str) -> None:
        res = apply(env, *args)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == 0, res.stdout + res.stderr

    env.write(body(env, rotation=0))
    try:
        run("plan", ".")
        applied()
        run("plan", ".", "-o", "json")
        run("plan", ".", "-o", "markdown")
        # Tunnels as the app's binding and as temporary users (their passwords are derived too).
        run("tunnel", env.pg(), "--env", ".", "--app", env.app(), "--", "psql", "-XAtc", "select session_user")
        run("tunnel", env.my(), "--env", ".", "--app", env.app(), "--", "mariadb", "-N", "-e", "select 1")
        run("tunnel", env.rd(), "--env", ".", "--app", env.app(), "--", "redis-cli", "ping")
        sessions = [
            run("tunnel", env.pg(), "--env", ".", "--", "psql", "-XAtc", "select session_user"),
            run("tunnel", env.my(), "--env", ".", "--", "mariadb", "-N", "-e", "select current_user()"),
            run("tunnel", env.rd(), "--env", ".", "--", "redis-cli", "ping"),
        ]
        # A rotation (new users, the old kept), the apply that retires the old ones, then the destroy.
        env.write(body(env, rotation=1))
        applied()
        applied()
        in_manifest = manifest.read_text()
        assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
        env.write(f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n")
        applied("--allow-destroy")
        run("plan", ".")
    finally:
        env.write(f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n")
        apply(env, "--allow-destroy")

    ids = {
        (inst, m.group(1))
        for inst, out in zip((env.pg(), env.my(), env.rd()), sessions, strict=True)
        for m in re.finditer(rf"svs_{inst}_([0-9a-f]{{6}})", out)
    }
    assert len(ids) == 3, sessions
    purposes = [f"binding/{env.app()}/{i}/{r}" for i in (env.pg(), env.my(), env.rd()) for r in (0, 1)]
    purposes += [f"instance/{env.rd()}/admin"] + [f"session/{i}/{sid}" for i, sid in sorted(ids)]
    secrets = [password(p) for p in purposes]
    assert len(set(secrets)) == len(secrets) == 10

    # The scanner finds what is there: the manifest held the current (rotation 1) binding passwords.
    current = {password(f"binding/{env.app()}/{i}/1") for i in (env.pg(), env.my(), env.rd())}
    assert {s for s in secrets if s in in_manifest} == current

    # Outputs of every command run.
    assert [i for i, s in enumerate(secrets) if any(s in out for out in outputs)] == []
    # Files on this machine: /tmp (ansible-runner's private directories included) and ~/.ansible; the
    # manifest is the one allowed place.
    local = local_files_with(secrets, [Path("/tmp"), Path("/var/tmp"), Path.home() / ".ansible"], start)
    assert {p: hits for p, hits in local.items() if p != str(manifest)} == {}
    # The lab hosts: journals since the start, logs, temporary files, home directories, svcctl's files.
    for host in ("lab-1", "lab-2"):
        res = lab.ssh(host, f"sudo python3 -c '{HOST_SCAN}' {start}", stdin="\n".join(secrets) + "\n")
        assert json.loads(res.stdout) == {}, (host, res.stdout)
