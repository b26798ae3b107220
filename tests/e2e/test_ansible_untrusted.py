"""Ansible on the lab: hostile values reach the playbook as text, and ansible-playbook never sees the key.

These go through `svcctl.apply.runner.run_apply` itself, with real ansible-playbook and real SSH to lab-1,
and a small playbook of the test's own (`SVCCTL_PLAYBOOKS`) that only shows and copies the values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from svcctl.apply.runner import run_apply
from svcctl.ssh import SshTarget, resolve
from tests.conftest import Lab

PLAYBOOK = """\
- name: show what svcctl handed over
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: "environment {{ svcctl_environment }}"
      ansible.builtin.copy:
        content: "{{ svcctl_changes[0].attrs.acl }}|{{ svcctl_environment }}"
        dest: "{{ svcctl_remote_file }}"
        mode: "0600"
    - name: Read it back
      ansible.builtin.slurp:
        src: "{{ svcctl_remote_file }}"
      register: copied
    - name: Report
      ansible.builtin.debug:
        msg:
          - "svcctl: copied={{ copied.content | b64decode }}"
          - "svcctl: key=[{{ lookup('env', 'SVCCTL_KEY') }}] key_file=[{{ lookup('env', 'SVCCTL_KEY_FILE') }}]"
    - name: Clean up
      ansible.builtin.file:
        path: "{{ svcctl_remote_file }}"
        state: absent
"""


def pipe(marker: Path) -> str:
    return f"{{{{ lookup('pipe', 'touch {marker}') }}}}"


def test_hostile_values_reach_the_node_as_text_and_the_key_stays_here(
    lab: Lab, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "apply.yml").write_text(PLAYBOOK)
    monkeypatch.setenv("SVCCTL_PLAYBOOKS", str(tmp_path / "playbooks"))
    monkeypatch.setenv("SVCCTL_KEY", "a-key-that-must-not-reach-ansible-" + unique)
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(tmp_path / f"key-file-{unique}"))
    markers = [tmp_path / f"marker-{i}" for i in range(3)]
    target = resolve(SshTarget(name="lab-1", host="lab-1", ssh_config=str(lab.ssh_config)))
    # a path as a hostile YAML could have named it, had validation let it through: ssh only warns about it
    target = dataclasses.replace(
        target, identity_files=(*target.identity_files, Path("/nonexistent") / pipe(markers[2]))
    )
    acl = pipe(markers[0])  # as a hostile node could report it
    environment = f"{{% if lookup('pipe', 'touch {markers[1]}') %}}{{% endif %}}"

    result = run_apply(
        {"lab-1": target},
        {"lab-1": {"svcctl_changes": [{"attrs": {"acl": acl}}], "svcctl_secrets": {}}},
        {"svcctl_environment": environment, "svcctl_remote_file": f"/root/svcctl-untrusted-{unique}"},
    )

    assert result.succeeded, (result.failures, result.unreachable)
    assert f"lab-1: copied={acl}|{environment}" in result.reports
    assert "lab-1: key=[] key_file=[]" in result.reports
    assert [m for m in markers if m.exists()] == []
