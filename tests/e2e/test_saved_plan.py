"""Saved plans on the lab: `apply PLAN` carries out exactly what was reviewed, or refuses and changes nothing.

Also the environment's identity: its declared name is the owner the hosts' registries record, whichever way
its path is typed (the directory, its file, from another directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from svcctl import __version__
from svcctl.model.names import sql_ident
from svcctl.plan.types import Plan
from tests.conftest import Lab
from tests.e2e.applying import LOCK_WAIT_S, assert_converged, destroy_all, held_by_another_apply
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env

HOST = "lab-1"


def body(env: Env, *extra: str) -> str:
    """One PostgreSQL instance on lab-1 (throwaway: protect false), plus `extra` instances of the same plan."""
    instances = "".join(f"  {name}: {{plan: pg-small, node: {HOST}, protect: false}}\n" for name in (env.pg(), *extra))
    return f"instances:\n{instances}"


def svcctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run in `cwd` with no terminal (stdin is an empty pipe), retried while another apply holds a lock."""
    environ = {**os.environ, "SVCCTL_KEY": TEST_KEY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        res = subprocess.run(
            [*SVCCTL, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=900, input=""
        )
        if res.returncode == 1 and held_by_another_apply(res.stderr) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        return res


def databases(lab: Lab, *instances: str) -> list[str]:
    """Which of the instances' databases exist on lab-1's PostgreSQL."""
    names = ", ".join(f"'{sql_ident(i)}'" for i in instances)
    res = lab.ssh(HOST, f'sudo -u postgres psql -XAtc "select datname from pg_database where datname in ({names})"')
    return sorted(res.stdout.split())


def registry(lab: Lab) -> dict[str, Any]:
    """The objects lab-1's registry records, by address."""
    objects: dict[str, Any] = json.loads(lab.ssh(HOST, "sudo cat /var/lib/svcctl/registry.json").stdout)["objects"]
    return objects


def test_a_saved_plan_is_refused_once_the_yaml_moved_and_applied_exactly_from_elsewhere_once_it_is_back(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    env = make_env(tmp_path, unique)
    extra = f"ex{unique}"
    env.write(body(env))
    saved = tmp_path / "reviewed" / "prod.plan"
    res = env.run("plan", ".", "--out", str(saved), "--no-color")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"instance.{env.pg()} will be created" in res.stdout
    text = saved.read_text()
    assert str(tmp_path) not in text  # no absolute path: it applies from any directory or checkout
    doc = json.loads(text)
    assert (doc["environment"], doc["svcctl_version"]) == (env.name, __version__)
    planned = [c["address"] for c in doc["plan"]["changes"]]
    assert f"instance.{env.pg()}" in planned
    # the saved changes by action: besides the test's creates, a shared engine may be updated (another
    # environment's network closing, say), and the apply must report exactly these
    counts = Plan.model_validate(doc["plan"]).counts()
    created = [c["address"] for c in doc["plan"]["changes"] if c["action"] == "create"]

    try:
        # An instance added to the YAML after review: refused, naming it, before any host is touched.
        env.write(body(env, extra))
        res = env.run("apply", str(saved))
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"instance.{extra} was added to the YAML (svcctl.yaml:" in res.stderr
        assert "Nothing was changed" in res.stderr and "Traceback" not in res.stderr
        assert databases(lab, env.pg(), extra) == []
        assert not [a for a in registry(lab) if unique in a]

        # Back as it was reviewed: applied from another directory and another checkout of the same files, with
        # no terminal and no --auto-approve (the saved plan is the approval).
        env.write(body(env))
        checkout = tmp_path / "second-checkout" / env.path.name
        shutil.copytree(env.path, checkout)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        res = svcctl(elsewhere, "apply", str(saved), "--env", str(checkout), "--no-color")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Do you want to perform these actions?" not in res.stdout + res.stderr
        assert "Resources: {} added, {} changed, {} destroyed.".format(*counts) in res.stdout
        assert f"instance.{env.pg()}" in created
        for address in created:
            assert f"# {address} will be created" in res.stdout
        assert databases(lab, env.pg(), extra) == [sql_ident(env.pg())]
        assert registry(lab)[f"instance.{env.pg()}"]["environment"] == env.name
        assert_converged(env)

        # The same plan again: the hosts moved (it was applied), so it is stale, and says where.
        res = svcctl(elsewhere, "apply", str(saved), "--env", str(env.path), "--no-color")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "is stale: the hosts changed since it was made: " in res.stderr
        assert f"instance.{env.pg()} appeared" in res.stderr
    finally:
        destroy_all(env)
    assert databases(lab, env.pg(), extra) == []


def test_a_plan_file_of_another_format_or_svcctl_version_is_refused_and_changes_nothing(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    env = make_env(tmp_path, unique)
    env.write(body(env))
    saved = tmp_path / "prod.plan"
    res = env.run("plan", ".", "--out", str(saved))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(saved.read_text())

    old = {"kind": "svcctl-plan", "format_version": 1, "environment_path": str(env.path), "plan": doc["plan"]}
    (tmp_path / "old.plan").write_text(json.dumps(old))
    res = env.run("apply", str(tmp_path / "old.plan"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr == (
        f"error: {tmp_path / 'old.plan'} is a saved plan of format 1; this svcctl ({__version__}) reads only "
        "format 2. Make the plan again with this svcctl (`svcctl plan --out`) and review it; nothing was changed.\n"
    )

    (tmp_path / "other.plan").write_text(json.dumps({**doc, "svcctl_version": "0.0.1"}))
    res = env.run("apply", str(tmp_path / "other.plan"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'was made by svcctl "0.0.1", and this is svcctl' in res.stderr
    assert "Make the plan again with this svcctl" in res.stderr
    assert databases(lab, env.pg()) == []
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 2  # still all to do


def test_the_registry_records_the_declared_name_however_the_path_is_typed(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    """Applied through the directory, planned through the file (whose stem once named the environment
    `svcctl`) and from elsewhere by a relative path: one environment, its objects its own."""
    env = make_env(tmp_path, unique)
    env.write(body(env))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        res = svcctl(elsewhere, "apply", str(env.path), "--auto-approve", "--no-color")
        assert res.returncode == 0, res.stdout + res.stderr
        recorded = {a: o["environment"] for a, o in registry(lab).items() if unique in a}
        assert recorded == {f"instance.{env.pg()}": env.name}
        assert env.name != "svcctl"
        for cwd, path in [
            (env.path, "svcctl.yaml"),
            (elsewhere, str(env.path / "svcctl.yaml")),
            (elsewhere, os.path.relpath(env.path, elsewhere)),
            (tmp_path, f"{env.path.name}/svcctl.yaml"),
        ]:
            res = svcctl(cwd, "plan", path, "--detailed-exitcode", "--no-color")
            assert res.returncode == 0, f"plan {path} in {cwd}:\n{res.stdout}{res.stderr}"
            assert "No changes." in res.stdout and env.pg() not in res.stdout  # not listed as unmanaged
        assert {a: o["environment"] for a, o in registry(lab).items() if unique in a} == recorded
    finally:
        destroy_all(env)
