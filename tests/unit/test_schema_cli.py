"""`svcctl validate` and `svcctl schema`, run the way users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
    (tmp_path / "svcctl.yaml").write_text("nodes:\n  db-1:\n    hots: x\nplans: []\n")
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
        "instances:\n  sessions: {plan: cache-64}\n"
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
    assert set(schema["properties"]) == {"nodes", "services", "plans", "instances", "apps", "bindings"}
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


@pytest.mark.parametrize("example", ["lab", "staging"])
def test_examples_validate_against_the_schema_too(example: str) -> None:
    """The examples use only keys the schema declares (what an editor would flag)."""
    from ruamel.yaml import YAML

    schema = json.loads(CliRunner().invoke(app, ["schema"]).stdout)
    yaml = YAML(typ="safe")
    for file in sorted((REPO / "examples" / example).glob("*.yaml")):
        document = yaml.load(file)
        for section, entries in document.items():
            assert section in schema["properties"]
            ref = schema["properties"][section].get("additionalProperties", schema["properties"][section].get("items"))
            definition = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
            for entry in entries.values() if isinstance(entries, dict) else entries:
                assert set(entry) <= set(definition["properties"])
