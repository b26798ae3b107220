"""examples/lab applied to the lab: the bound users connect over the network with the real clients.

The example's instance names are fixed, and the demo (`make demo`, environment `lab`) may hold them on
the lab already; another environment's objects rightly block a create.  So this test applies a copy of
the example whose instances are renamed with a per-run token (orders-db -> orders-<token>, ...) and
leaves the demo's instances alone; nothing else in the example is changed.  The copy is its own
environment (it declares `environment: lab<token>`, its directory's name), and the test destroys what it
created.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO, Lab
from tests.e2e.applying import apply, assert_converged, credentials, load_vcap, password, plan_json
from tests.e2e.envs import Env

EXAMPLE = REPO / "examples" / "lab"


def client(argv: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """A database client on this machine; passwords go through its environment, never its arguments."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "REDISCLI"))}
    return subprocess.run(argv, env={**clean, **env}, capture_output=True, text=True, timeout=60, input=stdin)


def renamed_copy(tmp_path: Path, token: str) -> tuple[Env, dict[str, str]]:
    """The example copied to `lab<token>/`, its three instances renamed; (env, old name -> new name)."""
    path = tmp_path / f"lab{token}"
    shutil.copytree(EXAMPLE, path)
    names = {"orders-db": f"orders-{token}", "catalog-db": f"catalog-{token}", "sessions": f"sessions-{token}"}
    yaml = path / "svcctl.yaml"
    text = yaml.read_text()
    for old, new in names.items():
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
    text, declared = re.subn(r"(?m)^environment: lab$", f"environment: {path.name}", text)
    assert declared == 1, "the example declares environment: lab"
    yaml.write_text(text)
    return Env(path=path, token=token), names


def destroy(env: Env, names: dict[str, str]) -> None:
    """Through svcctl itself: protect false, then drop instances and bindings and apply with --allow-destroy."""
    yaml = env.path / "svcctl.yaml"
    text = yaml.read_text()
    for new in names.values():
        text = text.replace(f"  {new}:\n    plan:", f"  {new}:\n    protect: false\n    plan:")
    yaml.write_text(text)
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    yaml.write_text(text.split("\ninstances:\n", 1)[0] + "\napps:\n  web: {manifest: apps/web/manifest.yml}\n")
    res = apply(env, "--allow-destroy")
    assert res.returncode == 0, res.stdout + res.stderr
    code, doc = plan_json(env)
    assert (code, doc["changes"]) == (0, [])


def test_the_lab_example_applied_serves_its_bound_users_over_the_network(lab: Lab, tmp_path: Path, unique: str) -> None:
    env, names = renamed_copy(tmp_path, unique)
    orders, catalog, sessions = names["orders-db"], names["catalog-db"], names["sessions"]
    manifest = env.path / "apps" / "web" / "manifest.yml"

    code, doc = plan_json(env)
    assert code == 2 and doc["errors"] == []
    created = {c["address"] for c in doc["changes"] if c["action"] == "create"}
    assert created == {f"instance.{n}" for n in names.values()} | {f"binding.web.{n}" for n in names.values()}

    try:
        res = apply(env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Apply complete!" in res.stdout

        # Credentials come from the manifest the apply wrote, as the app would read them.
        pg = credentials(manifest, "postgresql", orders)
        my = credentials(manifest, "mysql", catalog)
        rd = credentials(manifest, "redis", sessions)
        assert pg["host"] == lab.hosts["lab-1"]  # orders-db is placed by label zone: a
        assert my["host"] == lab.hosts["lab-2"]  # only lab-2 runs mysql
        assert rd["host"] in (lab.hosts["lab-1"], lab.hosts["lab-2"])
        assert pg["password"] == password(f"binding/web/{orders}/0")
        assert my["password"] == password(f"binding/web/{catalog}/0")
        assert rd["password"] == password(f"binding/web/{sessions}/0")

        # psql as the readwrite binding, over the network.
        pg_env = {"PGHOST": pg["host"], "PGPORT": str(pg["port"]), "PGDATABASE": pg["name"],
                  "PGUSER": pg["username"], "PGPASSWORD": pg["password"], "PGCONNECT_TIMEOUT": "10"}  # fmt: skip
        sql = "create table orders (id int); insert into orders values (7); select session_user, sum(id) from orders"
        res = client(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], pg_env)
        assert (res.returncode, res.stdout.strip()) == (0, f"{pg['username']}|7"), res.stderr

        # mariadb as the readonly binding: it reads, and it cannot write.
        my_env = {"MYSQL_PWD": my["password"]}
        my_args = ["mariadb", "-h", my["host"], "-P", str(my["port"]), "-u", my["username"], "-N", "-B", my["name"]]
        res = client([*my_args, "-e", "select current_user(), database()"], my_env)
        assert (res.returncode, res.stdout.split()) == (0, [f"{my['username']}@10.211.37.0/255.255.255.0",
                                                            my["name"]]), res.stderr  # fmt: skip
        res = client([*my_args, "-e", "create table t (x int)"], my_env)
        assert res.returncode == 1
        assert "ERROR 1142" in res.stderr and "CREATE command denied" in res.stderr

        # redis-cli as the binding, over the network; without a password it is refused.
        rd_args = ["redis-cli", "-h", rd["host"], "-p", str(rd["port"]), "--no-auth-warning"]
        auth = {"REDISCLI_AUTH": rd["password"]}
        res = client([*rd_args, "--user", rd["username"], "set", "greeting", "hello"], auth)
        assert (res.returncode, res.stdout.strip()) == (0, "OK"), res.stderr
        res = client([*rd_args, "--user", rd["username"], "get", "greeting"], auth)
        assert res.stdout.strip() == "hello"
        res = client([*rd_args, "get", "greeting"], {})
        assert res.stdout.strip().startswith("NOAUTH"), res.stdout + res.stderr

        # Converged: the next plan is empty, and the next apply runs no playbook at all (with the playbooks
        # pointed at a directory that does not exist, any run would fail).
        assert_converged(env)
        before = manifest.read_text()
        res = apply(env, "--no-color", extra_env={"SVCCTL_PLAYBOOKS": str(tmp_path / "no-playbooks")})
        assert res.returncode == 0, res.stdout + res.stderr
        assert "No changes." in res.stdout and "Apply complete!" not in res.stdout
        assert manifest.read_text() == before
        assert sorted(load_vcap(manifest)) == ["mysql", "postgresql", "redis"]
    finally:
        destroy(env, names)
