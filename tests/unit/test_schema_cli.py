"""`svcctl validate` and `svcctl schema`, run the way users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML
from typer.testing import CliRunner

from svcctl.cli import app
from svcctl.model.spec import SCHEMA_DIALECT, SCHEMA_ID

REPO = Path(__file__).resolve().parents[2]
SVCCTL = str(Path(sys.executable).parent / "svcctl")


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SVCCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_validate_lab_example() -> None:
    result = run("validate", "examples/lab")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "examples/lab: valid — 2 nodes, 3 services, 3 plans, 3 instances, 1 app, 3 bindings\n"


def test_validate_staging_example_defaults_to_the_current_directory() -> None:
    result = run("validate", cwd=REPO / "examples" / "staging")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == ".: valid — 3 nodes, 3 services, 5 plans, 6 instances, 3 apps, 8 bindings\n"


def test_validate_broken_file_exits_1_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "svcctl.yaml").write_text("nodes:\n  db-1:\n    hots: x\nplans: []\nenvironment: test\n")
    result = run("validate", "svcctl.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        'error: svcctl.yaml:2:3: nodes.db-1: missing required key "host"\n'
        'svcctl.yaml:3:5: unknown key "hots" in nodes.db-1 (did you mean "host"?); allowed: capacity, '
        "client_networks, engines, host, identity_file, jump_host, known_hosts, labels, port, ssh_config, user\n"
        "svcctl.yaml:4:8: plans must be a mapping from names to entries, found a list\n"
        "3 problems found; nothing was changed.\n"
    )
    assert "Traceback" not in result.stderr


def test_validate_reports_placement_failures(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text(
        "nodes:\n  db-1: {host: h, engines: [redis], capacity: {memory_mb: 32}}\n"
        'services:\n  redis: {engine: redis, versions: ["7"]}\n'
        "plans:\n  cache-64: {service: redis, memory_mb: 64}\n"
        "instances:\n  sessions: {plan: cache-64}\nenvironment: test\n"
    )
    result = run("validate", "env.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "error: env.yaml:8:3: no node can take instance sessions (redis, plan cache-64):\n"
        "  db-1: needs 64 MB memory, 32 MB free\n"
        "Add capacity or a node, relax placement.labels, or choose a smaller plan.\n"
    )


def test_validate_binary_garbage_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_bytes(b"\x00\xff\xfe garbage")
    result = run("validate", "x.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: x.yaml:1:2: not valid UTF-8 (byte 0xff)")
    assert "Traceback" not in result.stderr


def test_schema_is_json_schema_with_help_on_every_field() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["$id"] == SCHEMA_ID
    assert set(schema["properties"]) == {"environment", "nodes", "services", "plans", "instances", "apps", "bindings"}
    assert schema["properties"]["environment"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    assert "required" not in schema  # each file is checked alone, and only one of them names the environment
    assert schema["properties"]["nodes"]["propertyNames"] == {
        "pattern": "^[a-z](-?[a-z0-9])+$",
        "minLength": 2,
        "maxLength": 24,
    }
    undocumented = [
        f"{name}.{field}"
        for name, definition in schema["$defs"].items()
        for field, spec in definition["properties"].items()
        if not spec.get("description")
    ]
    assert undocumented == []
    assert all(definition["additionalProperties"] is False for definition in schema["$defs"].values())
    assert all(spec.get("description") for spec in schema["properties"].values())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    """The schema exactly as `svcctl schema` prints it, checked as a schema, ready to validate data."""
    result = run("schema")
    assert (result.returncode, result.stderr) == (0, "")
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def merged_data(folder: Path) -> dict[str, Any]:
    """An environment's data merged as the loader merges it: sections spread over files, bindings appended."""
    yaml = YAML(typ="safe")
    merged: dict[str, Any] = {}
    for file in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        for section, value in (yaml.load(file) or {}).items():
            if section == "bindings":
                merged.setdefault(section, []).extend(value or [])
            elif section == "environment":
                merged[section] = value
            else:
                merged.setdefault(section, {}).update(value or {})
    return merged


@pytest.mark.parametrize("example", ["lab", "staging"])
def test_examples_validate_against_the_schema(example: str, validator: Draft202012Validator) -> None:
    data = merged_data(REPO / "examples" / example)
    assert set(data) >= {"environment", "nodes", "services", "plans", "instances"}  # the example, not an empty dict
    assert [error.message for error in validator.iter_errors(data)] == []


def _lab() -> dict[str, Any]:
    return merged_data(REPO / "examples" / "lab")


def _first(mapping: dict[str, Any]) -> Any:
    return next(iter(mapping.values()))


def _break(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = _lab()
    change(data)
    return data


INVALID: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown-section": lambda d: d.update(servers={}),
    "environment-not-a-name": lambda d: d.update(environment="../prod"),
    "environment-not-a-string": lambda d: d.update(environment=["prod"]),
    "unknown-node-key": lambda d: _first(d["nodes"]).update(hostname="x"),
    "port-as-string": lambda d: _first(d["nodes"]).update(port="twenty-two"),
    "port-out-of-range": lambda d: _first(d["nodes"]).update(port=70000),
    "unknown-engine": lambda d: _first(d["nodes"]).update(engines=["postgresql"]),
    "negative-capacity": lambda d: _first(d["nodes"]).update(capacity={"memory_mb": -1}),
    "labels-not-a-mapping": lambda d: _first(d["nodes"]).update(labels=["a"]),
    "node-without-host": lambda d: _first(d["nodes"]).pop("host"),
    "bad-node-name": lambda d: d["nodes"].update({"DB_1": {"host": "h"}}),
    "versions-empty": lambda d: _first(d["services"]).update(versions=[]),
    "version-not-a-string": lambda d: _first(d["services"]).update(versions=[15]),
    "eviction-unknown": lambda d: _first(d["plans"]).update(eviction="least-used"),
    "connections-zero": lambda d: _first(d["plans"]).update(connections=0),
    "instance-without-plan": lambda d: _first(d["instances"]).pop("plan"),
    "protect-not-boolean": lambda d: _first(d["instances"]).update(protect="sometimes"),
    "role-unknown": lambda d: d["bindings"][0].update(role="admin"),
    "rotation-negative": lambda d: d["bindings"][0].update(rotation=-1),
    "bindings-not-a-list": lambda d: d.update(bindings={"app": "web"}),
    "format-unknown": lambda d: _first(d["apps"]).update(format="yaml"),
}


@pytest.mark.parametrize("mistake", sorted(INVALID))
def test_schema_rejects_invalid_documents(mistake: str, validator: Draft202012Validator) -> None:
    data = _break(INVALID[mistake])
    assert list(validator.iter_errors(data)), f"the schema accepted {mistake}"
