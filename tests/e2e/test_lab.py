"""The lab is real: systemd hosts with their own network, disks and keys, reachable only as declared."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import ansible_runner
import pytest

from tests.conftest import LAB_RELEASES, LABCTL, Lab

# What each Debian release ships (DESIGN.md section 3), as the lab's hosts of that release report it:
# release -> (python3, PostgreSQL major, MariaDB, Redis).
RELEASE_VERSIONS = {
    "bullseye": ("3.9", "13", "10.5", "6.0"),
    "bookworm": ("3.11", "15", "10.11", "7.0"),
    "trixie": ("3.13", "17", "11.8", "8.0"),
}


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


@pytest.mark.parametrize("release", LAB_RELEASES)
def test_each_release_host_answers_over_ssh_as_deploy_with_systemd_running_on_its_release(
    lab: Lab, release: str
) -> None:
    host = lab.release_hosts[release]
    res = lab.ssh(host, "id -un; hostname; sudo -n id -u; cat /proc/1/comm; systemctl is-system-running; "
                        ". /etc/os-release; echo $VERSION_CODENAME; "
                        "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")  # fmt: skip
    python = RELEASE_VERSIONS[release][0]
    assert res.stdout.split() == ["deploy", host, "0", "systemd", "running", release, python]


@pytest.mark.parametrize("release", LAB_RELEASES)
def test_each_release_host_has_its_releases_engines_installed_but_not_started(lab: Lab, release: str) -> None:
    host = lab.release_hosts[release]
    # Candidates as the host's apt sees them (the image keeps no package lists, so they are the installed ones).
    policy = lab.ssh(host, "apt-cache policy postgresql mariadb-server redis-server").stdout
    candidates = dict(re.findall(r"^(\S+):\n\s+Installed: \S+\n\s+Candidate: (\S+)", policy, re.MULTILINE))
    _, postgres, mariadb, redis = RELEASE_VERSIONS[release]
    assert re.fullmatch(rf"{postgres}\+\S+", candidates["postgresql"]), policy
    assert re.fullmatch(rf"1:{re.escape(mariadb)}\.\S+", candidates["mariadb-server"]), policy
    assert re.fullmatch(rf"5:{re.escape(redis)}\.\S+", candidates["redis-server"]), policy
    packages = "postgresql mariadb-server mariadb-client redis-server redis-tools python3-psycopg2 python3-pymysql"
    units = "postgresql.service mariadb.service redis-server.service"
    res = lab.ssh(host, f"dpkg-query -W -f='${{Status}}\\n' {packages}; systemctl is-enabled {units}", check=False)
    assert res.stdout.splitlines() == ["install ok installed"] * 7 + ["disabled"] * 3


def test_release_hosts_have_their_own_fixed_addresses_and_say_their_release(lab: Lab) -> None:
    hosts = json.loads((lab.root / "hosts.json").read_text())
    status = subprocess.run([*LABCTL, "status"], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in status.splitlines()}
    numbered = {hosts[n]["address"] for n in lab.hosts}
    for release, host in lab.release_hosts.items():
        address = hosts[host]["address"]
        assert hosts[host]["release"] == release
        assert rows[host] == [address, release, "running"]
        assert address not in numbered
        res = lab.ssh(host, "ip -4 -o addr show eth0 | awk '{print $4}'; ip route show default | wc -l")
        assert res.stdout.split() == [f"{address}/24", "0"]
    for host in lab.hosts:
        assert hosts[host]["release"] == "bookworm"


@pytest.mark.parametrize("release", LAB_RELEASES)
def test_apt_on_each_release_host_reads_its_releases_suites_from_the_mirror_through_the_proxy(
    lab: Lab, release: str
) -> None:
    host = lab.release_hosts[release]
    # The machine's own sources (lab-1 has them as they are) with bookworm renamed: what the host must have.
    ours = lab.ssh(sorted(lab.hosts)[0], "grep -h '^deb ' /etc/apt/sources.list").stdout
    assert lab.ssh(host, "grep -h '^deb ' /etc/apt/sources.list").stdout == ours.replace(" bookworm", f" {release}")
    res = lab.ssh(host, "sudo apt-get update 2>&1; echo rc=$?", timeout=300)
    assert res.stdout.strip().endswith("rc=0"), res.stdout
    assert not re.search(r"^(W|E|Err):", res.stdout, re.MULTILINE), res.stdout
