"""Quota enforcement on the lab, with real clients: filled past its quota, an instance's writers read only.

A PostgreSQL instance of a tiny-quota plan with `storage_enforce: true` and a readwrite binding; the bound
app fills it past the quota, the plan shows `quota_exceeded` and the binding turning read-only, apply
carries it out (writes refused, reads still work); emptied, the next apply gives the writes back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, destroy_all, password, plan_json
from tests.e2e.envs import Env, make_env

QUOTA_MB = 12  # an empty database is about 7.5 MB; the fill below adds about 9


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    made = make_env(tmp_path, unique)
    (made.path / "apps").mkdir()
    yield made
    destroy_all(made)


def yaml(env: Env) -> str:
    return f"""\
nodes:
  lab-1:
    host: lab-1
    ssh_config: /var/lib/svcctl-lab/ssh_config
    engines: [postgres]
    capacity: {{memory_mb: 4096, storage_mb: 40960}}
services:
  postgres: {{engine: postgres, versions: ["15"]}}
plans:
  pg-tiny: {{service: postgres, storage_mb: {QUOTA_MB}, storage_enforce: true, connections: 20}}
instances:
  {env.pg()}: {{plan: pg-tiny, protect: false}}
apps:
  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}
bindings:
  - {{app: {env.app()}, instance: {env.pg()}}}
"""


def as_app(lab: Lab, env: Env, sql: str) -> tuple[int, str]:
    """SQL as the bound app's user, over TCP on the node (its password on stdin, never in argv)."""
    user = f"sv_{env.app()}_{env.pg()}_r0"
    res = lab.ssh(
        "lab-1",
        f"read -r PGPASSWORD; export PGPASSWORD; psql -XAtq -v ON_ERROR_STOP=1 -h 127.0.0.1 -U {user} "
        f'-d {env.pg()} -c "{sql}"',
        check=False,
        stdin=password(f"binding/{env.app()}/{env.pg()}/0") + "\n",
    )
    return res.returncode, (res.stdout + res.stderr).strip()


def attrs_of(doc: dict[str, object], address: str) -> dict[str, tuple[object, object]]:
    changes = [c for c in doc["changes"] if c["address"] == address]  # type: ignore[attr-defined,index]
    assert len(changes) == 1, doc
    return {a["name"]: (a["old"], a["new"]) for a in changes[0]["attributes"]}


def test_filled_past_its_quota_the_instance_reads_only_and_emptied_it_writes_again(lab: Lab, env: Env) -> None:
    env.write_raw(yaml(env))
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_converged(env)
    instance, binding = f"instance.{env.pg()}", f"binding.{env.app()}.{env.pg()}"

    rc, out = as_app(
        lab, env, "CREATE TABLE fill AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 9000) g"
    )
    assert rc == 0, out
    code, doc = plan_json(env)
    assert code == 2, doc
    assert attrs_of(doc, instance)["quota_exceeded"] == (False, True)
    assert attrs_of(doc, binding)["role"] == ("readwrite", "readonly")
    assert any(f"{instance} on lab-1 uses" in w and "over quota" in w for w in doc["warnings"]), doc
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_converged(env)
    rc, out = as_app(lab, env, "INSERT INTO fill VALUES (0, 'more')")
    assert rc != 0 and "permission denied" in out, out
    assert as_app(lab, env, "SELECT count(*) FROM fill") == (0, "9000")  # readers keep reading

    # Emptied (by an administrator: the app may not write), the instance is under its quota again.
    lab.ssh("lab-1", f"sudo -n runuser -u postgres -- psql -XAtq -d {env.pg()} -c 'TRUNCATE fill' -c 'VACUUM FULL'")
    code, doc = plan_json(env)
    assert code == 2, doc
    assert attrs_of(doc, instance)["quota_exceeded"] == (True, False)
    assert attrs_of(doc, binding)["role"] == ("readonly", "readwrite")
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_converged(env)
    assert as_app(lab, env, "INSERT INTO fill VALUES (1, 'again'); SELECT count(*) FROM fill") == (0, "1")
