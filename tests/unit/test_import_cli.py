"""svcctl import's side of the CLI with no host: --node names, --out never replacing a file, --help."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svcctl.cli import app
from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.plan.import_scan import narrowed, write_new

ENV = """\
environment: brown
nodes:
  lab-1: {host: lab-1, engines: [postgres]}
  lab-2: {host: lab-2, engines: [postgres]}
"""


def test_node_narrows_the_scan_and_an_undeclared_node_is_an_error_naming_the_declared_ones(tmp_path: Path) -> None:
    (tmp_path / "svcctl.yaml").write_text(ENV)
    env = load_environment(tmp_path)
    assert narrowed(env, ()) is env
    assert list(narrowed(env, ["lab-2", "lab-2"]).nodes) == ["lab-2"]
    with pytest.raises(SvcctlError, match=r"--node lab-9: not a node of environment brown \(its nodes: lab-1, lab-2\)"):
        narrowed(env, ["lab-9", "lab-1"])


def test_out_writes_a_new_file_and_never_replaces_one_without_force(tmp_path: Path) -> None:
    out = tmp_path / "adopted.yaml"
    write_new(out, "instances: {}\n", force=False)
    assert out.read_text() == "instances: {}\n"
    with pytest.raises(SvcctlError, match=r"adopted.yaml exists; choose another file, or pass --force"):
        write_new(out, "other\n", force=False)
    assert out.read_text() == "instances: {}\n"
    write_new(out, "replaced\n", force=True)
    assert out.read_text() == "replaced\n"
    assert sorted(os.listdir(tmp_path)) == ["adopted.yaml"]  # no temporary file left behind


def test_out_in_a_missing_directory_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(SvcctlError, match=r"the directory .*nowhere does not exist; create it first"):
        write_new(tmp_path / "nowhere" / "x.yaml", "x\n", force=False)


def test_out_that_is_a_symlink_to_an_existing_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (tmp_path / "link.yaml").symlink_to(target)
    with pytest.raises(SvcctlError, match="exists"):
        write_new(tmp_path / "link.yaml", "x\n", force=False)
    assert target.read_text() == "keep\n"


def test_help_says_what_is_offered_and_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["import", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("--node", "--out", "--force", "yaml, or json", "nothing to import", "Redis server", "no key"):
        assert words in text
