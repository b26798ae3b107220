"""`svcctl tunnel --env` from another directory and `--bind` on another loopback address, with real psql.

One PostgreSQL instance on lab-1 with an app's binding, applied once for the module and destroyed after.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, destroy_all
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env


@pytest.fixture(scope="module")
def applied(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = make_env(tmp_path_factory.mktemp("tunnel-options"), secrets.token_hex(3))
    (env.path / "apps").mkdir()
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/app.env, format: dotenv}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    yield env
    destroy_all(env)


def svcctl_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """svcctl (no terminal) with the tests' key, in the working directory `cwd`."""
    env = {**os.environ, "SVCCTL_KEY": TEST_KEY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([*SVCCTL, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env, input="")


WHO = ["--", "psql", "-XAtc", "select session_user, current_database()"]


def test_env_names_the_environment_when_the_current_directory_is_elsewhere(applied: Env, tmp_path: Path) -> None:
    env = applied
    expected = f"sv_{env.app()}_{env.pg()}_r0|{env.pg()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(env.path, elsewhere)
    assert relative.startswith("..")

    for cwd, given in ((elsewhere, relative), (Path("/"), str(env.path / "svcctl.yaml"))):
        res = svcctl_in(cwd, "tunnel", env.pg(), "--env", given, "--app", env.app(), *WHO)
        assert res.returncode == 0, f"--env {given} from {cwd}:\n{res.stderr}"
        assert res.stdout.strip() == expected, f"--env {given} from {cwd}"

    # Without --env, the current directory is the environment: there is none here.
    res = svcctl_in(elsewhere, "tunnel", env.pg(), "--app", env.app(), *WHO)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr, res.stderr


# Run by svcctl as the tunnel's client: the listening sockets of svcctl (its parent) and of its other children
# (the ssh it forwards with), then psql told the address and port explicitly (not through PGHOST/PGPORT),
# password from the environment svcctl gave it.
CLIENT = """
import os, subprocess, sys
svcctl = os.getppid()
ours = {svcctl}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == svcctl and int(pid) != os.getpid():
            ours.add(int(pid))
    except OSError:
        pass
ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
print(" ".join(sorted(line.split()[3] for line in ss.splitlines() if any(f"pid={p}," in line for p in ours))))
print(os.environ["PGHOST"], os.environ["PGPORT"])
psql = ["psql", "-XAt", "-h", sys.argv[1], "-p", sys.argv[2], "-c", "select session_user", "-c", "\\\\conninfo"]
done = subprocess.run(psql, capture_output=True, text=True)
print(done.stdout, done.stderr, sep="", end="")
sys.exit(done.returncode)
"""


def test_bind_listens_on_the_given_loopback_address_only(applied: Env, private_loopback: str) -> None:
    env = applied
    address = private_loopback  # not 127.0.0.1, and no one else's: the first port from 10000 is free on it
    res = env.run("tunnel", env.pg(), "--bind", address, "--app", env.app(),
                  "--", sys.executable, "-c", CLIENT, address, "10000")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    listening, told, user, *conninfo = res.stdout.splitlines()
    assert listening == f"{address}:10000"  # svcctl (its ssh) listens there and nowhere else
    assert told == f"{address} 10000"
    assert user == f"sv_{env.app()}_{env.pg()}_r0"
    assert f'on host "{address}" at port "10000"' in conninfo[0], conninfo  # then psql's SSL line, if any
    assert "ready in" in res.stderr and f"running {sys.executable}" in res.stderr
