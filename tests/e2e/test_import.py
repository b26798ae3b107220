"""`svcctl import` on the lab: a database made by hand on lab-2's PostgreSQL comes out as an instance that adopts
it; pasted into the environment's YAML, it validates, and the plan adopts it (never a create, replace or delete).
Nothing is applied: the adoption itself is the brownfield e2e's."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import Lab
from tests.e2e.applying import destroy_all
from tests.e2e.envs import Env, make_env

HOST = "lab-2"
UNIT = "postgresql@15-main"


def psql(lab: Lab, sql: str, database: str = "postgres") -> str:
    command = f"sudo -n runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database} -c {shlex.quote(sql)}"
    return lab.ssh(HOST, command).stdout.strip()


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """This test's environment; it never applies, but whatever it declared last is taken back through svcctl."""
    made = make_env(tmp_path, unique)
    yield made
    for extra in made.path.glob("*.yaml"):  # never apply an adoption: forget every pasted or saved entry first
        if extra.name != "svcctl.yaml":
            extra.unlink()
    made.write("instances: {}\n")
    destroy_all(made)


@pytest.fixture
def handmade(lab: Lab, unique: str) -> Iterator[str]:
    """A database made by hand on lab-2 (its own NOLOGIN owner, a table, three rows), dropped afterwards; the
    cluster is started for it if it was down, and stopped again if nothing else came to use it meanwhile."""
    was_running = lab.ssh(HOST, f"systemctl is-active {UNIT}", check=False).stdout.strip() == "active"
    if not was_running:
        lab.ssh(HOST, f"sudo -n systemctl start {UNIT}")
    database, owner = f"imp{unique}_orders", f"imp{unique}_owner"
    try:
        psql(lab, f"CREATE ROLE {owner} NOLOGIN")
        psql(lab, f"CREATE DATABASE {database} OWNER {owner}")
        psql(
            lab,
            f"CREATE TABLE orders (id int PRIMARY KEY, item text); ALTER TABLE orders OWNER TO {owner}; "
            "INSERT INTO orders VALUES (1, 'tea'), (2, 'milk'), (3, 'bread')",
            database,
        )
        yield database
    finally:
        psql(lab, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(lab, f"DROP ROLE IF EXISTS {owner}")
        if not was_running:
            others = psql(lab, "SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', "
                               "'template1')")  # fmt: skip
            recorded = lab.ssh(HOST, "sudo -n grep -c engine.lab-2.postgres /var/lib/svcctl/registry.json", check=False)
            if others == "0" and recorded.stdout.strip() in ("", "0"):
                lab.ssh(HOST, f"sudo -n systemctl stop {UNIT}")


def test_import_offers_a_handmade_database_which_then_validates_and_plans_as_an_adoption(
    lab: Lab, env: Env, handmade: str
) -> None:
    instance = handmade.replace("_", "-")
    env.write("")  # the lab's nodes and catalogue, no instance

    res = env.run("import", ".", "--node", HOST, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    doc = YAML(typ="safe").load(res.stdout)
    assert doc["instances"][instance] == {
        "plan": "pg-small", "node": HOST, "version": "15", "adopt": {"database": handmade},
    }  # fmt: skip
    assert all(entry["node"] == HOST for entry in doc["instances"].values())  # --node: lab-2 only
    as_json = env.run("import", ".", "--node", HOST, "-o", "json", timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["instances"][instance]["adopt"] == {"database": handmade}

    env.write(res.stdout)  # pasted into the environment's YAML as it came
    validated = env.run("validate", ".")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    planned = env.run("plan", ".", "-o", "json", timeout=300)
    assert planned.returncode in (0, 1, 2), planned.stderr
    plan = json.loads(planned.stdout)
    mine = [c for c in plan["changes"] if c["address"] == f"instance.{instance}"]
    assert [c["action"] for c in mine] == ["adopt"], plan
    assert mine[0]["node"] == HOST and not mine[0]["destroys_data"]
    assert not [e for e in plan["errors"] if instance in e], plan["errors"]
    # the plan changed nothing: the rows are still there, and a second import no longer offers what is declared
    assert psql(lab, "SELECT string_agg(item, ',' ORDER BY id) FROM orders", handmade) == "tea,milk,bread"
    again = env.run("import", ".", "--node", HOST, timeout=300)
    assert again.returncode == 0, again.stderr
    assert handmade not in again.stdout


def test_out_writes_the_file_into_the_environment_and_never_replaces_it(lab: Lab, env: Env, handmade: str) -> None:
    env.write("")
    res = env.run("import", ".", "--node", HOST, "--out", "adopted.yaml", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == ""
    saved = (env.path / "adopted.yaml").read_text()
    assert f"database: {handmade}" in saved
    validated = env.run("validate", ".")  # a directory environment: the file is part of it
    assert validated.returncode == 0, validated.stdout + validated.stderr
    refused = env.run("import", ".", "--node", HOST, "--out", "adopted.yaml", timeout=300)
    assert refused.returncode == 1
    assert "adopted.yaml exists; choose another file, or pass --force" in refused.stderr
    assert (env.path / "adopted.yaml").read_text() == saved
