"""Two environments share lab-1's PostgreSQL: neither apply closes the network the other opened.

Environment A opens lab-1 to lab-2's address (a /32 no other test uses) and binds an app; environment B,
on the same node, declares no client networks. B's apply keeps A's network open (A's claim is in the
engine's registry record), A's app still connects from lab-2, and A's plan stays empty. Once A has
destroyed its instance, its claim lapses and B's next apply closes the network.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, credentials, plan_json
from tests.e2e.envs import Env, make_env


def body(env: Env, network: str | None, with_instance: bool = True) -> str:
    networks = f"    client_networks: [{network}]\n" if network else ""
    text = (
        "nodes:\n  lab-1:\n    host: lab-1\n    ssh_config: /var/lib/svcctl-lab/ssh_config\n"
        f"    engines: [postgres]\n{networks}"
        "services:\n  postgres: {engine: postgres, versions: ['15']}\n"
        "plans:\n  small: {service: postgres, storage_mb: 64, connections: 5}\n"
    )
    if not with_instance:
        return text + f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
    return text + (
        f"instances:\n  {env.pg()}: {{plan: small, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )


def hba_addresses(lab: Lab) -> list[str]:
    """The addresses lab-1's pg_hba.conf lets in over TCP."""
    text = lab.ssh("lab-1", "sudo cat /etc/postgresql/15/main/pg_hba.conf").stdout
    rules = [line.split() for line in text.splitlines()]
    return [fields[3] for fields in rules if fields and fields[0] == "host"]


def connect_from_lab2(lab: Lab, env: Env) -> str:
    """SELECT session_user over the network from lab-2, as A's app (the password goes on stdin)."""
    creds = credentials(env.path / "apps" / "manifest.yml", "postgresql", env.pg())
    command = (
        "read -r PGPASSWORD; export PGPASSWORD; "
        f"psql -XAtq -h {lab.hosts['lab-1']} -U {shlex.quote(creds['username'])} -d {shlex.quote(creds['name'])} "
        "-c 'SELECT session_user'"
    )
    res = lab.ssh("lab-2", command, check=False, stdin=creds["password"] + "\n")
    return res.stdout.strip() or res.stderr.strip()


def test_an_environment_keeps_the_network_another_opened_until_that_one_is_gone(
    lab: Lab, tmp_path: Path, unique: str
) -> None:
    network = f"{lab.hosts['lab-2']}/32"
    a, b = make_env(tmp_path, f"a{unique}"), make_env(tmp_path, f"b{unique}")
    for env in (a, b):
        (env.path / "apps").mkdir()
    a.write_raw(body(a, network))
    b.write_raw(body(b, None))
    try:
        res = apply(a)
        assert res.returncode == 0, res.stdout + res.stderr
        assert network in hba_addresses(lab)
        res = apply(b)  # declares no networks: before, this closed lab-1 to A's app
        assert res.returncode == 0, res.stdout + res.stderr
        assert network in hba_addresses(lab)
        user = credentials(a.path / "apps" / "manifest.yml", "postgresql", a.pg())["username"]
        assert connect_from_lab2(lab, a) == user
        assert_converged(a)  # and A sees nothing to undo
        assert_converged(b)

        # A goes: its claim lapses with its last object, and B's next apply closes the network.
        a.write_raw(body(a, network, with_instance=False))
        res = apply(a, "--allow-destroy")
        assert res.returncode == 0, res.stdout + res.stderr
        code, doc = plan_json(b)
        assert code == 2
        engine = next(c for c in doc["changes"] if c["address"] == "engine.lab-1.postgres")
        networks = next(x for x in engine["attributes"] if x["name"] == "client_networks")
        assert network in networks["old"] and network not in networks["new"]
        res = apply(b)
        assert res.returncode == 0, res.stdout + res.stderr
        assert network not in hba_addresses(lab)
    finally:
        for env in (a, b):
            env.write_raw(body(env, None, with_instance=False))
            apply(env, "--allow-destroy")
