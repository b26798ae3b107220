"""The CLI's smaller promises, on the lab: a node behind a jump host, `plan --parallel`, `svcctl --version`.

Nothing here applies: the plans observe real nodes over real SSH and change nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab
from tests.e2e.envs import REPO, SVCCTL, Env, make_env

LAB_KEY = "/var/lib/svcctl-lab/id_ed25519"
AUTHORIZED_KEYS = "/home/deploy/.ssh/authorized_keys"


def plan_doc(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert res.returncode in (0, 2), res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def mine(doc: dict[str, Any], token: str) -> list[dict[str, Any]]:
    """The plan's changes to this test's own objects (other tests' applies may touch the shared engines)."""
    return [c for c in doc["changes"] if token in c["address"]]


# --- a node reached through a jump host ------------------------------------------------------------------


@pytest.fixture
def jump_only_key(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Path]:
    """A new key lab-1's deploy user accepts only from lab-2's address (`from=`): a login with it proves the
    connection came through lab-2. The line is removed again (atomically, by sed's rename) afterwards."""
    key = tmp_path / "jump_only_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"svcctl-e2e-jump-{unique}", "-f", str(key)],
                   check=True)  # fmt: skip
    line = f'from="{lab.hosts["lab-2"]}" ' + key.with_suffix(".pub").read_text().strip() + "\n"
    before = lab.ssh("lab-1", f"sudo -n stat -c '%U:%G %a' {AUTHORIZED_KEYS}").stdout
    lab.ssh("lab-1", f"sudo -n tee -a {AUTHORIZED_KEYS} >/dev/null", stdin=line)
    try:
        yield key
    finally:
        lab.ssh("lab-1", f"sudo -n sed -i '/ svcctl-e2e-jump-{unique}$/d' {AUTHORIZED_KEYS}")
        assert f"svcctl-e2e-jump-{unique}" not in lab.ssh("lab-1", f"sudo -n cat {AUTHORIZED_KEYS}").stdout
        assert lab.ssh("lab-1", f"sudo -n stat -c '%U:%G %a' {AUTHORIZED_KEYS}").stdout == before


def jump_env(lab: Lab, tmp_path: Path, token: str, key: Path, *, jump: bool) -> Env:
    """lab-1 (postgres) reached with `key` through `jump_host: lab-2` (or directly), lab-2 (mysql) directly."""
    config = tmp_path / f"ssh_config_{token}"
    known = lab.known_hosts
    config.write_text(
        f"Host lab-1\n  HostName {lab.hosts['lab-1']}\n  User deploy\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n"
        f"Host lab-2\n  HostName {lab.hosts['lab-2']}\n  User deploy\n  IdentityFile {LAB_KEY}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n"
    )
    env = make_env(tmp_path, token)
    hop = "\n    jump_host: lab-2" if jump else ""
    env.write_raw(
        "nodes:\n"
        f"  lab-1:\n    host: lab-1\n    ssh_config: {config}{hop}\n"
        "    engines: [postgres]\n    capacity: {memory_mb: 4096, storage_mb: 40960}\n"
        f"  lab-2:\n    host: lab-2\n    ssh_config: {config}\n"
        "    engines: [mysql]\n    capacity: {memory_mb: 4096, storage_mb: 40960}\n"
        'services:\n  postgres: {engine: postgres, versions: ["15"]}\n  mysql: {engine: mysql, versions: ["10.11"]}\n'
        "plans:\n  pg-small: {service: postgres, storage_mb: 512, connections: 20}\n"
        "  mysql-small: {service: mysql, storage_mb: 512, connections: 20}\n"
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n  {env.my()}: {{plan: mysql-small, node: lab-2}}\n"
    )
    return env


def test_plan_reaches_a_node_through_its_jump_host(
    lab: Lab, tmp_path: Path, unique: str, jump_only_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # only the keys the config names may log in
    through = jump_env(lab, tmp_path, unique, jump_only_key, jump=True)
    res = through.run("plan", ".", "-o", "json", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    doc = plan_doc(res)
    created = {(c["address"], c["node"], c["action"]) for c in mine(doc, unique)}
    assert created == {(f"instance.{through.pg()}", "lab-1", "create"), (f"instance.{through.my()}", "lab-2", "create")}
    assert doc["errors"] == []

    # The same node without its jump host: lab-1 refuses that key from this machine's address.
    direct = jump_env(lab, tmp_path, unique[::-1], jump_only_key, jump=False)
    res = direct.run("plan", ".")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "node lab-1" in res.stderr and "authentication failed" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


# --- plan --parallel --------------------------------------------------------------------------------------


def test_plan_parallel_1_observes_node_by_node_and_plans_the_same(lab: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n  {env.my()}: {{plan: mysql-small}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-2}}\n"
        f"apps:\n  {env.app()}: {{manifest: app.env, format: dotenv}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )
    default = plan_doc(env.run("plan", ".", "-o", "json"))
    one = plan_doc(env.run("plan", ".", "-o", "json", "--parallel", "1"))
    assert mine(one, unique) == mine(default, unique)
    assert {(c["address"], c["node"]) for c in mine(default, unique)} == {
        (f"instance.{env.pg()}", "lab-1"),
        (f"instance.{env.my()}", "lab-2"),
        (f"instance.{env.rd()}", "lab-2"),
        (f"binding.{env.app()}.{env.pg()}", "lab-1"),
        (f"binding.{env.app()}.{env.rd()}", "lab-2"),
    }
    assert one["errors"] == default["errors"] == []

    res = env.run("plan", ".", "--parallel", "0")
    assert res.returncode == 1 and "--parallel" in res.stderr, res.stdout + res.stderr
    assert "Traceback" not in res.stderr


# --- svcctl --version -------------------------------------------------------------------------------------


def declared_version() -> str:
    """The version as svcctl/__init__.py declares it (the one place it is kept), read as text."""
    found = re.search(r'^__version__ = "([^"]+)"$', (REPO / "svcctl" / "__init__.py").read_text(), re.MULTILINE)
    assert found is not None
    return found[1]


@pytest.mark.parametrize(
    "argv",
    [
        [*SVCCTL, "--version"],  # the launcher's fast path
        [str(Path(sys.executable).parent / "svcctl"), "--version"],  # the installed command
        [*SVCCTL, "--version", "plan", "/nonexistent"],  # typer's eager option: answers before the command runs
    ],
    ids=["python-m", "console-script", "eager-option"],
)
def test_version_prints_the_declared_version(argv: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SVCCTL_KEY", "SVCCTL_KEY_FILE")}
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"svcctl {declared_version()}\n", ""), shlex.join(argv)
