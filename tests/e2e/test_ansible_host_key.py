"""Ansible meeting a changed host key: the run is refused as unreachable, and nothing runs on the node.

svcctl's own SSH layer checks the key when apply locks and observes; Ansible connects again afterwards, with
its own ssh processes. A key that changed in between (or a known_hosts that Ansible read differently) must
still be refused there. This goes through `svcctl.apply.runner.run_apply` itself, with real ansible-playbook
and real SSH to lab-1, and a playbook of the test's own (`SVCCTL_PLAYBOOKS`) that leaves a marker on the node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from svcctl.apply.runner import RunResult, run_apply
from svcctl.ssh import SshTarget, resolve
from tests.conftest import Lab

PLAYBOOK = """\
- name: leave a marker
  hosts: all
  gather_facts: false
  become: true
  tasks:
    - name: Write the marker
      ansible.builtin.copy:
        content: "ran\\n"
        dest: "{{ svcctl_marker }}"
        mode: "0600"
"""


@pytest.fixture
def playbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A playbook directory of the test's own; failed runs' logs go to the test's directory, not ~/.local."""
    directory = tmp_path / "playbooks"
    directory.mkdir()
    (directory / "apply.yml").write_text(PLAYBOOK)
    monkeypatch.setenv("SVCCTL_PLAYBOOKS", str(directory))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return directory


def pinning(lab: Lab, path: Path, lab_1_key: str | None = None) -> Path:
    """A copy of the lab's known_hosts at `path`, with lab-1's line pinning `lab_1_key` ("type base64") if given."""
    lines = []
    for line in lab.known_hosts.read_text().splitlines():
        names = line.split()[0]
        if lab_1_key is not None and "lab-1" in names.split(","):
            line = f"{names} {lab_1_key}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def run(lab: Lab, known_hosts: Path, marker: str) -> RunResult:
    target = resolve(
        SshTarget(name="lab-1", host="lab-1", ssh_config=str(lab.ssh_config), known_hosts=str(known_hosts))
    )
    assert target.known_hosts_files == (known_hosts,)  # Ansible is handed this file and no other
    return run_apply(
        {"lab-1": target},
        {"lab-1": {"svcctl_changes": [], "svcctl_secrets": {}}},
        {"svcctl_environment": "host-key-test", "svcctl_marker": marker},
    )


def marker_on_node(lab: Lab, marker: str) -> bool:
    return lab.ssh("lab-1", f"sudo -n test -e {marker}", check=False).returncode == 0


def test_a_changed_host_key_makes_ansible_refuse_the_node_before_anything_runs(
    lab: Lab, tmp_path: Path, unique: str, playbooks: Path
) -> None:
    marker = f"/root/svcctl-host-key-{unique}"
    try:
        # The same run with lab-1's real key pinned reaches the node and leaves the marker: the refusal below
        # is the key's doing, and the marker check can tell a run that reached the node.
        good = run(lab, pinning(lab, tmp_path / "known_hosts_real"), marker)
        assert good.succeeded, (good.failures, good.unreachable, good.log)
        assert marker_on_node(lab, marker)
        lab.ssh("lab-1", f"sudo -n rm -f {marker}")

        other = tmp_path / "other_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        kind, blob = other.with_suffix(".pub").read_text().split()[:2]
        changed = run(lab, pinning(lab, tmp_path / "known_hosts_changed", f"{kind} {blob}"), marker)
        ran_anyway = marker_on_node(lab, marker)
    finally:
        lab.ssh("lab-1", f"sudo -n rm -f {marker}")

    assert not changed.succeeded
    assert list(changed.unreachable) == ["lab-1"], (changed.unreachable, changed.failures)
    assert "Host key verification failed" in changed.unreachable["lab-1"], changed.unreachable["lab-1"]
    assert changed.failures == [] and changed.ok == {} and changed.changed == {}
    assert not ran_anyway  # no task reached the node
