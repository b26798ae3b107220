"""`svcctl plan` against the lab: real SSH, real engines; outputs checked by parsing them."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from svcctl.secrets import binding_password, decode_key
from tests.conftest import Lab
from tests.e2e.envs import TEST_KEY, Env, make_env


def body(env: Env) -> str:
    return f"""\
instances:
  {env.pg()}: {{plan: pg-small, placement: {{labels: {{zone: a}}}}}}
  {env.my()}: {{plan: mysql-small}}
  {env.rd()}: {{plan: cache-16, node: lab-2}}
apps:
  {env.app()}: {{manifest: manifest.yml, format: cf}}
bindings:
  - {{app: {env.app()}, instance: {env.pg()}}}
  - {{app: {env.app()}, instance: {env.my()}, role: readonly}}
  - {{app: {env.app()}, instance: {env.rd()}}}
"""


def key_fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_a_fresh_environment_plans_every_instance_and_binding_as_created(lab: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    env.write(body(env))
    expected = {
        f"instance.{env.pg()}",
        f"instance.{env.my()}",
        f"instance.{env.rd()}",
        f"binding.{env.app()}.{env.pg()}",
        f"binding.{env.app()}.{env.my()}",
        f"binding.{env.app()}.{env.rd()}",
    }

    text = env.run("plan", ".", "--detailed-exitcode", "--no-color")
    assert text.returncode == 2, text.stderr
    for address in expected:
        assert f"# {address} will be created" in text.stdout
    assert "Traceback" not in text.stderr

    js = env.run("plan", ".", "-o", "json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["format_version"] == 1
    creates = {c["address"]: c for c in doc["changes"] if c["action"] == "create"}
    assert expected <= set(creates)
    assert creates[f"instance.{env.pg()}"]["node"] == "lab-1"
    assert creates[f"instance.{env.my()}"]["node"] == "lab-2"
    # Engines may also be updated: another environment on the same nodes (the lab example) may have opened
    # them to client networks that this one does not declare. Counts must still agree with the changes.
    assert doc["summary"]["add"] == sum(c["action"] in ("create", "replace") for c in doc["changes"])
    assert doc["summary"]["change"] == sum(c["action"] == "update" for c in doc["changes"])
    assert all(c["kind"] == "engine" for c in doc["changes"] if c["action"] == "update")
    assert doc["summary"]["destroy"] == 0
    key = decode_key(TEST_KEY, "test key")
    for b in (env.pg(), env.my(), env.rd()):
        password = binding_password(key, env.app(), b, 0).reveal()
        assert password not in js.stdout and password not in text.stdout

    md = env.run("plan", ".", "-o", "markdown")
    assert md.returncode == 0, md.stderr
    summary = next(line for line in md.stdout.splitlines() if line.startswith("**Plan:**"))
    counts = doc["summary"]
    assert summary.startswith(f"**Plan:** {counts['add']} to add, {counts['change']} to change, 0 to destroy")
    fence = md.stdout.split("```diff\n", 1)[1].split("\n```", 1)[0]
    assert all(line[:1] in {"+", "-", "!", " ", ""} for line in fence.splitlines())
    assert f'+   resource "instance" "{env.pg()}" {{' in fence.splitlines()


def test_a_saved_plan_is_private_and_marked_as_a_plan(lab: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    env.write(body(env))
    res = env.run("plan", ".", "--out", "saved.plan")
    assert res.returncode == 0, res.stderr
    saved = env.path / "saved.plan"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    doc = json.loads(saved.read_text())
    assert doc["kind"] == "svcctl-plan"
    assert len(doc["plan"]["fingerprint"]) == 64


@pytest.fixture
def lab_3_switched_off(lab: Lab) -> Iterator[str]:
    """lab-3 powered off for one test (a third host just to switch off, so lab-1 and lab-2 stay up), then put back.

    The default lab has two hosts, so lab-3 may not exist yet: `up --hosts 3` makes it, and it is left
    stopped, as conftest expects of hosts past LAB_HOSTS (labctl cannot remove a single host). A lab-3 that
    was running (LAB_HOSTS=3 or more, where other tests use it) is started again.
    """
    before = lab.host_state("lab-3")
    if before is None:
        lab.labctl("up", "--hosts", "3")
    if before != "stopped":
        lab.labctl("stop", "lab-3")
    yield "lab-3"
    if before == "running":
        lab.labctl("start", "lab-3")
    assert lab.host_state("lab-3") == (before or "stopped")


def test_an_unreachable_node_fails_the_plan_closed_naming_it(
    lab: Lab, lab_3_switched_off: str, tmp_path: Path, unique: str
) -> None:
    env = make_env(tmp_path, unique)
    env.write(
        body(env) + "\n# appended: a node that is down\n",
    )
    text = (
        (env.path / "svcctl.yaml")
        .read_text()
        .replace(
            "services:",
            "  lab-3:\n    host: lab-3\n    ssh_config: /var/lib/svcctl-lab/ssh_config\n    engines: [redis]\n"
            "    capacity: {memory_mb: 4096, storage_mb: 40960}\nservices:",
            1,
        )
    )
    (env.path / "svcctl.yaml").write_text(text)
    res = env.run("plan", ".", "--detailed-exitcode")
    assert res.returncode == 1
    assert "lab-3" in res.stderr
    assert "could not observe lab-3" in res.stderr
    assert "Nothing was planned" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_a_changed_host_key_is_refused_with_both_fingerprints(lab: Lab, tmp_path: Path, unique: str) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"lab-2,{lab.hosts['lab-2']} {kind} {blob}\n")
    env = make_env(tmp_path, unique)
    env.write(body(env), lab2_extra=f"\n    known_hosts: {wrong}")
    res = env.run("plan", ".")
    assert res.returncode == 1
    real = key_fingerprint(lab.root / "hosts" / "lab-2" / "ssh_host_ed25519_key.pub")
    fake = key_fingerprint(other.with_suffix(".pub"))
    assert real in res.stderr and fake in res.stderr
    assert "lab-2" in res.stderr
    assert "Traceback" not in res.stderr


def test_an_unknown_host_key_is_refused_unless_accepted_and_then_recorded(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    env = make_env(tmp_path, unique)
    env.write(body(env), lab2_extra=f"\n    known_hosts: {empty}")
    res = env.run("plan", ".")
    assert res.returncode == 1
    real = key_fingerprint(lab.root / "hosts" / "lab-2" / "ssh_host_ed25519_key.pub")
    assert real in res.stderr
    assert empty.read_text() == ""
    res = env.run("plan", ".", "--accept-new-host-keys", "--detailed-exitcode")
    assert res.returncode == 2, res.stderr
    assert (lab.root / "hosts" / "lab-2" / "ssh_host_ed25519_key.pub").read_text().split()[1] in empty.read_text()
