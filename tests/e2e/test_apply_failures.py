"""A failed apply says why, every time: node, task and message, or Ansible's own words, and keeps the run's log.

Both tests run svcctl's real apply (lock, observe, plan, ansible-playbook over SSH to lab-1) with a playbook
directory of their own (`SVCCTL_PLAYBOOKS`), so that the failure is certain and nothing changes on the host.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from tests.conftest import Lab
from tests.e2e.applying import apply, password
from tests.e2e.envs import make_env

FAILING = """\
- name: a playbook that fails, showing the secrets it was given
  hosts: all
  gather_facts: false
  tasks:
    - name: Show what svcctl handed over
      ansible.builtin.debug:
        msg: "secrets {{ svcctl_secrets | to_json }}"
    - name: Fail with a secret in the message
      ansible.builtin.fail:
        msg: "boom {{ svcctl_secrets | to_json }}"
"""


def kept_log(output: str) -> Path:
    found = re.search(r"The run's whole output \(secrets masked\) is in (\S+)\.", output)
    assert found, output
    return Path(found[1])


def test_ansible_failing_before_any_task_is_explained_and_logged(lab: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    env.write(f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n")
    empty = tmp_path / "no-playbooks"
    empty.mkdir()
    state = tmp_path / "state"
    res = apply(env, extra_env={"SVCCTL_PLAYBOOKS": str(empty), "XDG_STATE_HOME": str(state)})
    output = res.stdout + res.stderr
    assert res.returncode == 1, output
    assert "Ansible failed before any task did:" in output
    assert "apply.yml" in output and "could not be found" in output
    log = kept_log(output)
    assert log.parent == state / "svcctl" / "logs"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert "could not be found" in log.read_text()
    assert "Traceback" not in output


def test_a_failed_task_names_node_task_and_message_with_secrets_masked(lab: Lab, tmp_path: Path, unique: str) -> None:
    env = make_env(tmp_path, unique)
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )
    (env.path / "apps").mkdir()
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "apply.yml").write_text(FAILING)
    state = tmp_path / "state"
    res = apply(env, "--verbose", extra_env={"SVCCTL_PLAYBOOKS": str(playbooks), "XDG_STATE_HOME": str(state)})
    output = res.stdout + res.stderr
    secret = password(f"binding/{env.app()}/{env.pg()}/0")
    assert res.returncode == 1, output
    assert "lab-1: task 'Fail with a secret in the message' failed: boom" in output
    assert 'secrets {\\"binding.' in res.stderr  # --verbose showed the debug task's output ...
    assert "***" in res.stderr  # ... with the password masked
    log = kept_log(output)
    text = log.read_text()
    assert "TASK [Fail with a secret in the message]" in text and "***" in text
    for where in (res.stdout, res.stderr, text):
        assert secret not in where
    assert not (env.path / "apps" / "manifest.yml").exists(), "a failed node's app gets no manifest"
