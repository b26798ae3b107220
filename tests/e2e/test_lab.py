"""The lab is real: systemd hosts with their own network, disks and keys, reachable only as declared."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import ansible_runner
import pytest

from tests.conftest import Lab


def test_every_host_answers_over_ssh_as_deploy_with_systemd_running(lab: Lab) -> None:
    assert sorted(lab.hosts) == [f"lab-{i}" for i in range(1, len(lab.hosts) + 1)]
    for host in lab.hosts:
        res = lab.ssh(host, "id -un; hostname; sudo -n id -u; cat /proc/1/comm; systemctl is-system-running")
        assert res.stdout.split() == ["deploy", host, "0", "systemd", "running"]


def test_engine_units_exist_on_every_host(lab: Lab) -> None:
    for host in lab.hosts:
        res = lab.ssh(host, "systemctl list-unit-files --no-legend postgresql@.service mariadb.service "
                            "redis-server@.service | awk '{print $1}'")  # fmt: skip
        assert res.stdout.split() == ["mariadb.service", "postgresql@.service", "redis-server@.service"]


def test_each_host_has_its_own_root_file_system(lab: Lab, tmp_path: Path) -> None:
    marker = f"/etc/svcctl-test-{secrets.token_hex(4)}"
    first, second = sorted(lab.hosts)[:2]
    lab.ssh(first, f"echo mine | sudo tee {marker} >/dev/null")
    try:
        assert lab.ssh(first, f"cat {marker}").stdout == "mine\n"
        assert lab.ssh(second, f"test -e {marker}", check=False).returncode == 1
        assert not Path(marker).exists()
    finally:
        lab.ssh(first, f"sudo rm -f {marker}")


def test_hosts_have_their_own_addresses_and_no_route_out(lab: Lab) -> None:
    for host, address in lab.hosts.items():
        res = lab.ssh(host, "ip -4 -o addr show eth0 | awk '{print $4}'; ip route show default | wc -l")
        assert res.stdout.split() == [f"{address}/24", "0"]


def test_a_wrong_known_hosts_entry_refuses_the_connection(lab: Lab, tmp_path: Path) -> None:
    host = sorted(lab.hosts)[0]
    address = lab.hosts[host]
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    wrong = tmp_path / "known_hosts"
    kind, blob = other_key.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"{host},{address} {kind} {blob}\n")
    res = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", f"UserKnownHostsFile={wrong}", "-o", "ControlMaster=no",
         "-o", "ControlPath=none", host, "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr


def test_apt_in_the_hosts_reaches_only_the_mirror_through_the_lab_proxy(lab: Lab) -> None:
    host = sorted(lab.hosts)[0]
    res = lab.ssh(host, "sudo apt-get update -qq 2>&1; echo rc=$?", timeout=300)
    assert res.stdout.strip().endswith("rc=0"), res.stdout
    # The proxy refuses anything but the machine's Debian mirror (before resolving or connecting).
    probe = (
        'python3 -c "import urllib.request as u, urllib.error as e\n'
        "o = u.build_opener(u.ProxyHandler({'http': 'http://lab-gateway:3142'}))\n"
        "try: o.open('http://example.invalid/x', timeout=10)\n"
        'except e.HTTPError as x: print(x.code)"'
    )
    assert lab.ssh(host, probe).stdout.strip() == "403"


def test_ansible_runner_reaches_every_host_with_strict_host_key_checking(lab: Lab, tmp_path: Path) -> None:
    events: list[dict[str, object]] = []

    def on_event(event: dict[str, object]) -> bool:
        events.append(event)
        return True

    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "ping.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: systemctl is-system-running\n      register: state\n      become: true\n"
        "      changed_when: false\n"
    )
    inventory = {"all": {"hosts": {h: {"ansible_host": h} for h in lab.hosts}}}
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path),
        playbook="ping.yml",
        inventory=inventory,
        quiet=True,
        event_handler=on_event,
        envvars={
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": f"-F {lab.ssh_config} -o ControlMaster=auto -o ControlPersist=30s",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
        },
    )
    assert runner.status == "successful", runner.stdout.read()
    ok_hosts = {e["event_data"]["host"] for e in events if e.get("event") == "runner_on_ok"}  # type: ignore[index]
    assert ok_hosts == set(lab.hosts)
    assert set(runner.stats["ok"]) == set(lab.hosts)


@pytest.mark.parametrize(("unit", "package"), [("postgresql", "postgresql"), ("mariadb", "mariadb-server"),
                                               ("redis-server", "redis-server")])  # fmt: skip
def test_engines_are_preinstalled_but_not_started_at_boot(lab: Lab, unit: str, package: str) -> None:
    host = sorted(lab.hosts)[0]
    res = lab.ssh(host, f"systemctl is-enabled {unit}.service; dpkg-query -W -f='${{Status}}\\n' {package}",
                  check=False)  # fmt: skip
    assert res.stdout.splitlines() == ["disabled", "install ok installed"]
