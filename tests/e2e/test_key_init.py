"""`svcctl key init` and the key read from a file: the passwords apply derives from it are the ones that work.

Every svcctl here runs with HOME at a directory of the test's own and without SVCCTL_KEY, so the key comes
from the file it is told about (SVCCTL_KEY_FILE) or from the default key file under that HOME; the
operator's real keys are never read or written.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcctl.secrets import binding_password, decode_key
from tests.conftest import Lab
from tests.e2e.applying import LOCK_WAIT_S, apply, credentials, held_by_another_apply
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env

CREATED = re.compile(r"^Created the key of environment '([^']+)' at (.+) \(mode 0600\)\. ", re.MULTILINE)


def cli(
    env: Env, *args: str, home: Path, key_file: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """svcctl in the environment's directory with HOME at `home`, without SVCCTL_KEY; SVCCTL_KEY_FILE if given."""
    base = {k: v for k, v in os.environ.items() if k not in ("SVCCTL_KEY", "SVCCTL_KEY_FILE")}
    base |= {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if key_file is not None:
        base["SVCCTL_KEY_FILE"] = str(key_file)
    return subprocess.run(
        [*SVCCTL, *args], capture_output=True, text=True, timeout=timeout, cwd=env.path, env=base, input=""
    )


def cli_apply(env: Env, *, home: Path, key_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`svcctl apply . --auto-approve` as `cli` runs it, retried while another (live) apply holds a lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        res = cli(env, "apply", ".", "--auto-approve", home=home, key_file=key_file)
        if res.returncode == 1 and held_by_another_apply(res.stderr) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        return res


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def created_key(res: subprocess.CompletedProcess[str]) -> tuple[str, Path]:
    """(environment, key file) as `svcctl key init` reported them."""
    assert res.returncode == 0, res.stdout + res.stderr
    found = CREATED.search(res.stdout)
    assert found is not None, res.stdout
    return found[1], Path(found[2])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    directory = tmp_path / "home"
    directory.mkdir(mode=0o700)
    return directory


@pytest.fixture
def real_keys() -> Iterator[None]:
    """The operator's own key directory is the same after the test as before it."""
    keys = Path.home() / ".config" / "svcctl" / "keys"

    def snapshot() -> dict[str, tuple[int, int]]:
        if not keys.is_dir():
            return {}
        return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in keys.iterdir()}

    before = snapshot()
    yield
    assert snapshot() == before


def test_key_init_writes_a_private_key_refuses_to_replace_it_and_force_does(
    tmp_path: Path, unique: str, home: Path, real_keys: None
) -> None:
    env = make_env(tmp_path, unique)
    env.write("")
    # --file: its missing directories are created 0700, the key 0600, and the key is never printed.
    given = tmp_path / "secrets" / "nested" / "env.key"
    res = cli(env, "key", "init", ".", "--file", str(given), home=home)
    name, written = created_key(res)
    assert written == given and name == env.name
    first = given.read_text()
    assert len(decode_key(first, "key file")) == 32
    assert (mode(given), mode(given.parent), mode(given.parent.parent)) == (0o600, 0o700, 0o700)
    assert first.strip() not in res.stdout + res.stderr

    res = cli(env, "key", "init", ".", "--file", str(given), home=home)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"key file {given} already exists" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.stderr
    assert given.read_text() == first  # untouched

    res = cli(env, "key", "init", ".", "--file", str(given), "--force", home=home)
    assert created_key(res)[1] == given
    assert first.strip() not in res.stdout
    replaced = given.read_text()
    assert replaced != first and len(decode_key(replaced, "key file")) == 32
    assert mode(given) == 0o600

    # No --file: the default key file under HOME, named after the environment, in 0700 directories.
    name, written = created_key(cli(env, "key", "init", ".", home=home))
    assert written == home / ".config" / "svcctl" / "keys" / f"{name}.key"
    assert mode(written) == 0o600
    assert [mode(d) for d in (written.parent, written.parent.parent, written.parent.parent.parent)] == [0o700] * 3
    default = written.read_text()
    assert len(decode_key(default, "key file")) == 32 and default not in (first, replaced)
    res = cli(env, "key", "init", ".", home=home)
    assert res.returncode == 1 and "already exists" in res.stderr, res.stdout + res.stderr
    assert written.read_text() == default


def psql_on_lab_1(lab: Lab, user: str, password: str, database: str) -> str:
    """`select session_user` as `user` on lab-1 over TCP, the password on stdin (never in an argument)."""
    res = lab.ssh(
        "lab-1",
        "read -r PGPASSWORD; export PGPASSWORD; "
        f'psql -XAtq -h 127.0.0.1 -U {user} -d {database} -c "select session_user"',
        check=False,
        stdin=password + "\n",
    )
    return (res.stdout + res.stderr).strip()


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """A PostgreSQL instance on lab-1 bound to an app (cf manifest); destroyed afterwards."""
    env = make_env(tmp_path, unique)
    (env.path / "apps").mkdir()
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )
    yield env
    env.write("instances: {}\n")
    res = apply(env, "--allow-destroy")  # deleting needs no derived password: the tests' key will do
    assert res.returncode == 0, res.stdout + res.stderr


def test_apply_derives_the_bindings_password_from_the_key_file_and_then_from_the_default_one(
    lab: Lab, tmp_path: Path, home: Path, env: Env, real_keys: None
) -> None:
    manifest = env.path / "apps" / "manifest.yml"
    user = f"sv_{env.app()}_{env.pg()}_r0"

    # SVCCTL_KEY_FILE: a key made by `key init --file`.
    key_file = tmp_path / "team.key"
    created_key(cli(env, "key", "init", ".", "--file", str(key_file), home=home))
    from_file = binding_password(decode_key(key_file.read_text(), "key file"), env.app(), env.pg(), 0).reveal()
    res = cli_apply(env, home=home, key_file=key_file)
    assert res.returncode == 0 and "Apply complete!" in res.stdout, res.stdout + res.stderr
    creds = credentials(manifest, "postgresql", env.pg())
    assert (creds["username"], creds["password"]) == (user, from_file)
    assert from_file != binding_password(decode_key(TEST_KEY, "test key"), env.app(), env.pg(), 0).reveal()
    assert psql_on_lab_1(lab, user, from_file, env.pg()) == user
    res = cli(env, "plan", ".", "--detailed-exitcode", home=home, key_file=key_file)
    assert res.returncode == 0, res.stdout + res.stderr

    # No variable at all: the default key file under HOME. Another key, so the user's password is stale...
    _, default_file = created_key(cli(env, "key", "init", ".", home=home))
    from_default = binding_password(decode_key(default_file.read_text(), "key file"), env.app(), env.pg(), 0).reveal()
    res = cli(env, "plan", ".", "--detailed-exitcode", "--no-color", home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"binding.{env.app()}.{env.pg()}" in res.stdout and "credentials" in res.stdout
    # ... until apply sets the one derived from the default key file.
    res = cli_apply(env, home=home)
    assert res.returncode == 0 and "Apply complete!" in res.stdout, res.stdout + res.stderr
    creds = credentials(manifest, "postgresql", env.pg())
    assert (creds["username"], creds["password"]) == (user, from_default)
    assert psql_on_lab_1(lab, user, from_default, env.pg()) == user
    assert "password authentication failed" in psql_on_lab_1(lab, user, from_file, env.pg())
    for secret in (from_file, from_default):
        assert secret not in res.stdout + res.stderr
