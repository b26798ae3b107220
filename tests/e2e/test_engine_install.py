"""apply installs an engine on a host that lacks it, for real: apt through the lab's proxy to the mirror."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from svcctl.secrets import decode_key, instance_admin_password
from tests.conftest import Lab
from tests.e2e.applying import apply
from tests.e2e.envs import TEST_KEY, make_env

HOST = "lab-4"  # a host of its own: the test removes Redis from it first


@pytest.fixture
def own_host(lab: Lab) -> Iterator[str]:
    """lab-4, running for this test, then put back as found: stopped again unless it was running before.

    The default lab has two hosts, so lab-4 may not exist yet: `up --hosts 4` makes it (and lab-3, which
    is then stopped again if it did not run either); labctl cannot remove a single host.
    """
    before = {name: lab.host_state(name) for name in ("lab-3", HOST)}
    if before[HOST] is None:
        lab.labctl("up", "--hosts", "4")
    lab.labctl("start", HOST)
    yield HOST
    for name, state in before.items():
        if state != "running" and lab.host_state(name) == "running":
            lab.labctl("stop", name)


def test_apply_installs_redis_on_a_host_without_it(own_host: str, lab: Lab, tmp_path: Path, unique: str) -> None:
    lab.ssh(HOST, "sudo systemctl stop 'redis-server@*' 2>/dev/null; "
                  "sudo DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq redis-server redis-tools >/dev/null; "
                  "sudo rm -rf /var/lib/svcctl", timeout=300)  # fmt: skip
    assert lab.ssh(HOST, "dpkg-query -W -f='${Status}' redis-server", check=False).stdout != "install ok installed"

    env = make_env(tmp_path, unique)
    text = f"""\
nodes:
  {HOST}:
    host: {HOST}
    ssh_config: /var/lib/svcctl-lab/ssh_config
    engines: [redis]
    capacity: {{memory_mb: 1024, storage_mb: 1024}}
services:
  redis: {{engine: redis, versions: ["7"]}}
plans:
  cache-16: {{service: redis, memory_mb: 16, connections: 20}}
instances:
  {env.rd()}: {{plan: cache-16, protect: false}}
"""
    env.write_raw(text)  # appends the environment: name
    res = env.run("plan", ".", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"# engine.{HOST}.redis will be created" in res.stdout

    res = apply(env, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    status = lab.ssh(HOST, "dpkg-query -W -f='${Status}' redis-server").stdout
    assert status == "install ok installed"

    # The instance answers, with its admin password (given on stdin, never in argv).
    port = lab.ssh(HOST, f"sudo awk '$1 == \"port\" {{print $2}}' /etc/redis/redis-{env.rd()}.conf").stdout.strip()
    admin = instance_admin_password(decode_key(TEST_KEY, "test key"), env.rd()).reveal()
    pong = lab.ssh(HOST, f"read -r REDISCLI_AUTH; export REDISCLI_AUTH; redis-cli -p {port} ping", stdin=admin + "\n")
    assert pong.stdout.strip() == "PONG"
    assert env.run("plan", ".", "--detailed-exitcode").returncode == 0

    env.write_raw(text.replace(f"instances:\n  {env.rd()}: {{plan: cache-16, protect: false}}\n", ""))
    res = apply(env, "--allow-destroy")  # the instance goes; Redis stays installed, as in the lab's image
    assert res.returncode == 0, res.stdout + res.stderr
