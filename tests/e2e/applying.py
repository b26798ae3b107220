"""Helpers the apply e2e tests share: apply that waits out other engineers' locks, manifests, clients."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from svcctl.secrets import decode_key, derive_password
from tests.conftest import Lab
from tests.e2e.envs import TEST_KEY, Env

LOCK_WAIT_S = 900  # a benchmark on the lab may hold the locks for minutes


def held_by_another_apply(stderr: str) -> bool:
    """True if apply refused only because a live apply (someone else's) holds a node's lock."""
    return "is locked by" in stderr and "another apply is running there" in stderr


def apply(env: Env, *args: str, timeout: float = 600, extra_env: dict[str, str] | None = None) -> Any:
    """`svcctl apply . --auto-approve ARGS`, retried while another (live) apply holds a lock; the last result."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        res = env.run("apply", ".", "--auto-approve", *args, timeout=timeout, extra_env=extra_env)
        if res.returncode == 1 and held_by_another_apply(res.stderr) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        return res


def plan_json(env: Env) -> tuple[int, dict[str, Any]]:
    """`svcctl plan -o json --detailed-exitcode`: (exit code, document)."""
    res = env.run("plan", ".", "-o", "json", "--detailed-exitcode")
    assert res.returncode in (0, 2), res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, doc


def assert_converged(env: Env) -> None:
    """The next plan has nothing to do."""
    res = env.run("plan", ".", "--detailed-exitcode", "--no-color")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No changes." in res.stdout


def load_vcap(manifest: Path) -> dict[str, list[dict[str, Any]]]:
    """VCAP_SERVICES of the (only) application of a CF manifest; raises if the YAML or the JSON is invalid."""
    doc = YAML(typ="safe").load(manifest.read_text())
    services: dict[str, list[dict[str, Any]]] = json.loads(doc["applications"][0]["env"]["VCAP_SERVICES"])
    return services


def credentials(manifest: Path, label: str, instance: str) -> dict[str, Any]:
    """The credentials object of one instance's entry in a manifest."""
    entry = next(e for e in load_vcap(manifest)[label] if e["instance_name"] == instance)
    creds: dict[str, Any] = entry["credentials"]
    return creds


def password(purpose: str) -> str:
    """A password svcctl derives from the tests' key (`binding/<app>/<instance>/<rotation>`, ...)."""
    return derive_password(decode_key(TEST_KEY, "test key"), purpose).reveal()


def database_exists(lab: Lab, name: str) -> bool:
    """Whether lab-1's PostgreSQL has a database `name`."""
    sql = f"select 1 from pg_database where datname = '{name}'"
    return lab.ssh("lab-1", f'sudo -n runuser -u postgres -- psql -XAtc "{sql}"').stdout.strip() == "1"


def recorded(lab: Lab, address: str) -> bool:
    """Whether lab-1's registry records `address` (apply records an object before it creates it)."""
    res = lab.ssh("lab-1", f"sudo -n grep -c '\"{address}\"' /var/lib/svcctl/registry.json", check=False)
    return res.stdout.strip() not in ("", "0")


def destroy_all(env: Env) -> None:
    """Remove everything the environment made, through svcctl: every instance is unprotected first (an apply
    that changes the registry only; `protect` defaults to true), then no instance or binding is declared (its
    nodes still are) and apply runs with --allow-destroy. The next plan must be empty. An environment that
    never wrote its YAML made nothing. The environment is one file, svcctl.yaml, as every e2e test writes it."""
    yaml_file = env.path / "svcctl.yaml"
    if not yaml_file.exists():
        return
    yaml = YAML(typ="rt")
    doc = yaml.load(yaml_file.read_text())
    instances = doc.get("instances") or {}
    if any(spec.get("protect", True) for spec in instances.values()):
        for spec in instances.values():
            spec["protect"] = False
        with yaml_file.open("w") as out:
            yaml.dump(doc, out)
        res = apply(env)
        assert res.returncode == 0, res.stdout + res.stderr
    # Nothing declared, in the environment's own file: its nodes stay (a test of other hosts than the shared
    # ones must reach those hosts to destroy what it made there).
    doc["instances"] = {}
    if "bindings" in doc:
        doc["bindings"] = []
    with yaml_file.open("w") as out:
        yaml.dump(doc, out)
    res = apply(env, "--allow-destroy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert_converged(env)
