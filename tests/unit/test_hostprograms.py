"""Host programs are built from the host library: one text per program, each rule defined once.

The programs run on the nodes with their release's python3 (3.9 on Debian 11); here they are compiled,
checked for what they define, and run against a registry in a temporary directory.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from svcctl.drivers import observe_script
from svcctl.drivers.hostprograms import (
    HOSTLIB_MODULES,
    BundleError,
    backup_program,
    bundle,
    hostlib_source,
    registry_program,
    session_program,
)
from svcctl.hostlib.registry import change_one
from tests.conftest import REPO

PROGRAMS = {
    "observe": observe_script,
    "registry": registry_program,
    "session": session_program,
    "backup": backup_program,
}


def top_level_names(source: str) -> list[str]:
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
    return names


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_program_is_one_script_without_svcctl_imports(program: str) -> None:
    text = PROGRAMS[program]()
    tree = ast.parse(text)
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert [m for m in imported if m.split(".")[0] == "svcctl"] == []
    assert imported.count("__future__") == 1 and text.startswith("#!/usr/bin/python3\n")
    names = top_level_names(text)
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_the_registry_verifier_and_runner_code_exists_once_in_the_tree() -> None:
    """No host script defines its own registry writer, SCRAM, native hash or command runner any more."""
    wanted = {"scram_verifier", "scram_matches", "mysql_native_hash", "changing_registry", "record", "forget", "sh"}
    owners: dict[str, list[str]] = {}
    for path in sorted((REPO / "svcctl").rglob("*.py")):
        for name in top_level_names(path.read_text()):
            if name in wanted:
                owners.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert {n: o for n, o in owners.items() if len(o) != 1 or not o[0].startswith("svcctl/hostlib/")} == {}


def test_a_part_that_redefines_a_library_name_is_refused() -> None:
    with pytest.raises(BundleError, match=r"defines record, which svcctl\.hostlib\.registry already defines"):
        bundle(["registry"], [("mine.py", "def record():\n    pass\n")])


def test_a_part_that_renames_a_library_import_or_imports_other_svcctl_code_is_refused() -> None:
    with pytest.raises(BundleError, match="renames"):
        bundle(["run"], [("mine.py", "from svcctl.hostlib.run import sh as run\n")])
    with pytest.raises(BundleError, match=r"may use only svcctl\.hostlib"):
        bundle([], [("mine.py", "from svcctl.secrets import Secret\n")])


def test_the_library_modules_stand_alone() -> None:
    """Each module imports only the standard library, so a program may take any subset of them."""
    for module in HOSTLIB_MODULES:
        tree = ast.parse(hostlib_source(module))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"__future__"}, module


def run_registry(tmp_path: Path, *argv: str, stdin: dict[str, object] | None = None) -> str:
    """The built registry helper, pointed at a registry in tmp_path (the paths are module constants)."""
    text = registry_program().replace("/var/lib/svcctl/", f"{tmp_path}/")
    res = subprocess.run(
        [sys.executable, "-c", text, *argv], input=json.dumps(stdin or {}), capture_output=True, text=True, check=True
    )
    return res.stdout.strip()


def test_the_registry_helper_records_stamps_on_change_only_keeps_claims_and_forgets(tmp_path: Path) -> None:
    engine = {"address": "engine.n.postgres", "attrs": {"version": "15"}, "claim": ["10.0.0.0/24"]}
    assert run_registry(tmp_path, "record-many", stdin={"environment": "a", "changes": [engine]}) == "changed"
    doc = json.loads((tmp_path / "registry.json").read_text())
    first = doc["objects"]["engine.n.postgres"]
    assert first["claims"] == {"a": ["10.0.0.0/24"]} and first["environment"] == "a"
    assert oct(os.stat(tmp_path / "registry.json").st_mode & 0o777) == "0o600"
    # The same again: nothing written, the stamp kept.
    assert run_registry(tmp_path, "record-many", stdin={"environment": "a", "changes": [engine]}) == "unchanged"
    # Another environment's claim joins the first one's.
    other = {**engine, "claim": ["10.9.0.0/16"]}
    assert run_registry(tmp_path, "record-many", stdin={"environment": "b", "changes": [other]}) == "changed"
    claims = json.loads((tmp_path / "registry.json").read_text())["objects"]["engine.n.postgres"]["claims"]
    assert claims == {"a": ["10.0.0.0/24"], "b": ["10.9.0.0/16"]}
    # A record without a claim keeps the claims it has.
    assert run_registry(tmp_path, "record", "engine.n.postgres", stdin={"attrs": {}, "environment": "b"}) == "changed"
    kept = json.loads((tmp_path / "registry.json").read_text())["objects"]["engine.n.postgres"]
    assert kept["claims"] == claims and kept["attrs"] == {}
    assert run_registry(tmp_path, "forget", "engine.n.postgres") == "changed"
    assert run_registry(tmp_path, "forget", "engine.n.postgres") == "unchanged"
    assert json.loads((tmp_path / "registry.json").read_text()) == {"format": 1, "objects": {}}


def test_an_unknown_verb_is_refused_with_a_message(tmp_path: Path) -> None:
    text = registry_program().replace("/var/lib/svcctl/", f"{tmp_path}/")
    res = subprocess.run([sys.executable, "-c", text, "purge"], capture_output=True, text=True, input="")
    assert res.returncode == 1 and "unknown verb 'purge'" in res.stderr
    assert not (tmp_path / "registry.json").exists()


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_program_stays_python_3_9(program: str) -> None:
    """Debian 11's python3 is 3.9: no newer syntax, and none of the newer library calls met so far."""
    text = PROGRAMS[program]()
    ast.parse(text, feature_version=(3, 9))  # no match statements, no parenthesised context managers
    assert "datetime.UTC" not in text and "strict=True" not in text and ".removeprefix(" not in text


def test_a_name_imported_from_another_part_must_come_from_an_earlier_one() -> None:
    header = ("observe_header.py", "def helper():\n    return 1\n")
    uses = ("observe_x.py", "from svcctl.drivers.host.observe_header import helper\n\nhelper()\n")
    assert "import helper" not in bundle([], [header, uses])
    with pytest.raises(BundleError, match=r"imports helper from svcctl\.drivers\.host\.observe_header, which no"):
        bundle([], [uses, header])


def test_an_engines_parts_may_use_one_another_but_never_its_controller_side() -> None:
    header = ("session_header.py", "def fail(m):\n    raise SystemExit(m)\n")
    part = ("postgres/session.py", "from svcctl.drivers.host.session_header import fail\n\n"
            "def pg_drop(r):\n    fail(r)\n")  # fmt: skip
    footer = ("session_footer.py", "from svcctl.drivers.postgres.session import pg_drop\n\n"
              "ENGINES = {'p': pg_drop}\n")  # fmt: skip
    text = bundle([], [header, part, footer])
    assert "import pg_drop" not in text and "import fail" not in text
    driver = ("x.py", "from svcctl.drivers.postgres.driver import DRIVER\n")
    with pytest.raises(BundleError, match=r"imports svcctl\.drivers\.postgres\.driver; a host program may use only"):
        bundle([], [driver])


def test_the_session_helper_has_each_engines_part_in_order() -> None:
    labels = [line.split()[2] for line in session_program().splitlines() if line.startswith("# --- ")]
    assert [label for label in labels if label.endswith(".py")] == [
        "session_header.py", "postgres/session.py", "mysql/session.py", "redis/session.py", "session_footer.py"
    ]  # fmt: skip


def test_one_change_at_a_time_as_the_modules_and_the_session_helper_make_them(tmp_path: Path) -> None:
    where = {"path": str(tmp_path / "registry.json"), "lock": str(tmp_path / ".lock")}
    assert change_one("record", "instance.a", {"engine": "redis"}, "prod", **where) is True
    assert change_one("record", "instance.a", {"engine": "redis"}, "prod", **where) is False  # same: not written
    stamped = json.loads((tmp_path / "registry.json").read_text())["objects"]["instance.a"]
    assert stamped["environment"] == "prod" and stamped["applied_at"].endswith("+00:00")
    assert change_one("forget", "instance.a", **where) is True
    assert change_one("forget", "instance.a", **where) is False
