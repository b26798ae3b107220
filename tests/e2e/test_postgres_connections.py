"""e2e (issue #15): a first apply of many bound PostgreSQL instances holds a small, fixed number of connections.

A first apply of 125 PostgreSQL + 125 MariaDB instances, each bound once, failed with `FATAL: sorry, too many
clients already`: the objects module opened one connection per database and kept every one open until it
ended. Here 30 instances with a binding each are applied in one run while another session on the node polls
pg_stat_activity; the old module held a connection to each of the 30 databases at once by its end, the
bounded one never more than one besides the maintenance database's.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, destroy_all
from tests.e2e.envs import Env, make_env

pytestmark = pytest.mark.e2e

HOST = "lab-1"
INSTANCES = 30
SAMPLE = re.compile(r"^(\d+)\|(\d+)$")


@pytest.fixture
def env(tmp_path: Path, unique: str) -> Iterator[Env]:
    e = make_env(tmp_path, unique)
    yield e
    destroy_all(e)


class Poller:
    """psql on the node, in a session of its own, sampling every 0.1 s: (connections of the postgres user to
    this test's databases, connections named `svcctl apply`), until stopped."""

    def __init__(self, lab: Lab, prefix: str) -> None:
        query = (
            f"SELECT count(*) FILTER (WHERE datname LIKE '{prefix}\\_%'), "
            "count(*) FILTER (WHERE application_name = 'svcctl apply') "
            "FROM pg_stat_activity WHERE usename = 'postgres' AND pid <> pg_backend_pid() \\watch 0.1\n"
        )
        # stdbuf: each sample as it is taken (psql's stdout to a pipe is otherwise written in 4 KiB blocks, so
        # the samples taken while the module works could still be in the buffer when the poller is stopped)
        psql = "timeout 300 sudo -n runuser -u postgres -- stdbuf -oL psql -XAt -d postgres"
        self.proc = subprocess.Popen(
            ["ssh", "-F", str(lab.ssh_config), HOST, psql],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdin is not None
        self.proc.stdin.write(query)
        self.proc.stdin.flush()
        self.samples: list[tuple[int, int]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = SAMPLE.match(line.strip())
            if m:
                self.samples.append((int(m.group(1)), int(m.group(2))))

    def stop(self) -> list[tuple[int, int]]:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        return self.samples


def body(env: Env) -> str:
    names = [f"{env.pg()}-{i}" for i in range(1, INSTANCES + 1)]
    instances = "".join(f"  {n}: {{plan: pg-small, node: {HOST}, protect: false}}\n" for n in names)
    bindings = "".join(f"  - {{app: {env.app()}, instance: {n}}}\n" for n in names)
    return (
        f"instances:\n{instances}apps:\n  {env.app()}: {{manifest: apps/{env.app()}.yml, format: cf}}\n"
        f"bindings:\n{bindings}"
    )


def test_thirty_bound_instances_in_one_run_hold_at_most_two_connections(lab: Lab, env: Env) -> None:
    (env.path / "apps").mkdir()
    env.write(body(env))
    # The poller needs the cluster up before the apply starts (on a fresh lab it is installed, not started;
    # the apply would start it all the same).
    lab.ssh(HOST, "sudo -n systemctl start postgresql@15-main")
    poller = Poller(lab, env.pg())
    try:
        res = apply(env)
        # The poller sees what it should: a session of the test's own, named as the module's, in one of the
        # test's databases for 1.5 s (so a poller blind to the module's connections fails here, not silently).
        database = f"{env.pg()}_1"  # instance <pg>-1's
        probe = f"env PGAPPNAME='svcctl apply' psql -XAtq -d {database} -c 'select pg_sleep(1.5)'"
        lab.ssh(HOST, f"sudo -n runuser -u postgres -- {probe}", check=False)
    finally:
        samples = poller.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete! Resources: " in res.stdout
    assert_converged(env)
    ours = [o for o, _ in samples]
    named = [n for _, n in samples]
    # The poll could see a connection to the test's databases named as the module's (the probe), and saw never
    # more than one of them open at a time besides it or an observe visiting each database meanwhile (another
    # environment's plan on this node).
    assert len(samples) > 20, samples
    assert any(o >= 1 and n >= 1 for o, n in samples), samples  # the probe was seen
    assert max(ours) <= 2, f"connections to this test's databases at once: {max(ours)}"
    assert max(named) <= 2, f"connections of one module run at once: {max(named)}"
