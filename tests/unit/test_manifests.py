"""Manifests: one case per folder under manifest_cases/, plus parse errors, atomic writes and the Git warning.

A case folder holds `input.yml` / `input.env` (or `none`: no file yet), `services.json` ({"app", "services"})
and the exact expected output (`expected.yml`, `expected.env` or `expected.json`); the extension picks the format.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from svcctl.apply.manifests import (
    BoundService,
    git_tracked_warning,
    render_cf,
    render_dotenv,
    render_json,
    update_manifest,
    write_manifest,
)
from svcctl.errors import SvcctlError
from svcctl.secrets import Secret

CASES = Path(__file__).parent / "manifest_cases"


def _services(spec: list[dict[str, Any]]) -> list[BoundService]:
    return [BoundService(**{**s, "password": Secret(s["password"])}) for s in spec]


def _render(folder: Path, existing: str | None) -> tuple[str, Path]:
    spec = json.loads((folder / "services.json").read_text())
    services = _services(spec["services"])
    expected = next(folder.glob("expected.*"))
    if expected.suffix == ".yml":
        return render_cf(existing, spec["app"], services), expected
    if expected.suffix == ".env":
        return render_dotenv(existing, services), expected
    return render_json(services), expected


def _input(folder: Path) -> str | None:
    found = [p for p in folder.iterdir() if p.name.startswith("input.")]
    assert len(found) + (folder / "none").exists() == 1, "a case has exactly one of input.* or none"
    return found[0].read_text() if found else None


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_manifest_case(case: str) -> None:
    folder = CASES / case
    rendered, expected = _render(folder, _input(folder))
    assert rendered == expected.read_text()


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_rendering_twice_changes_nothing(case: str) -> None:
    folder = CASES / case
    once, _ = _render(folder, _input(folder))
    twice, _ = _render(folder, once)
    assert twice == once


PG = BoundService(
    binding_name="web-orders-db",
    instance="orders-db",
    engine="postgres",
    label="postgresql",
    plan="pg-small",
    tags=["postgres"],
    host="10.0.0.11",
    port=5432,
    database="orders_db",
    username="sv_web_orders_db_r0",
    password=Secret("p@ss:w/rd"),
    role="readwrite",
)


def test_uri_percent_encodes_user_and_password_and_masks_itself() -> None:
    assert PG.uri.reveal() == "postgresql://sv_web_orders_db_r0:p%40ss%3Aw%2Frd@10.0.0.11:5432/orders_db"
    assert str(PG.uri) == "***"
    assert "p@ss" not in repr(PG)
    redis = BoundService(**{**PG.__dict__, "engine": "redis", "label": "redis", "database": None, "host": "::1"})
    assert redis.uri.reveal() == "redis://sv_web_orders_db_r0:p%40ss%3Aw%2Frd@[::1]:5432"
    mysql = BoundService(**{**PG.__dict__, "engine": "mysql", "label": "mysql"})
    assert mysql.uri.reveal().startswith("mysql://")


def test_cf_parse_error_names_file_and_line() -> None:
    text = "applications:\n- name: web\n  env: [unclosed\n"
    with pytest.raises(SvcctlError) as info:
        render_cf(text, "web", [PG], source="apps/web/manifest.yml")
    assert info.value.message.startswith("apps/web/manifest.yml:4:1: cannot parse the manifest as YAML")
    assert info.value.message.endswith("nothing was written.")


def test_cf_duplicate_key_is_a_parse_error() -> None:
    with pytest.raises(SvcctlError, match=r"^m.yml:2:1: cannot parse the manifest as YAML"):
        render_cf("applications: []\napplications: []\n", "web", [PG], source="m.yml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "a cf manifest is a mapping"),
        ("applications: {web: 1}\n", "`applications` must be a list"),
        ("applications:\n- name: web\n  env: [1]\n", "`env` of application web must be a mapping"),
    ],
)
def test_cf_wrong_shapes_are_refused(text: str, message: str) -> None:
    with pytest.raises(SvcctlError, match=message):
        render_cf(text, "web", [PG])


def test_cf_null_spelling_is_normalised() -> None:
    """A known ruamel.yaml limitation: `~` and `null` round-trip as an empty value (same meaning)."""
    out = render_cf("applications:\n- name: web\n  command: ~\n", "web", [])
    assert out == "applications:\n- name: web\n  command:\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# BEGIN svcctl (managed; do not edit)\nA='1'\n", r"^m.env:1: the svcctl block is not closed"),
        ("A=1\n# END svcctl\n", r"^m.env:2: `# END svcctl` without a matching"),
        (
            "# BEGIN svcctl (managed; do not edit)\n# END svcctl\n# BEGIN svcctl (managed; do not edit)\n",
            r"^m.env:3: a second svcctl block",
        ),
    ],
)
def test_dotenv_broken_block_is_refused(text: str, message: str) -> None:
    with pytest.raises(SvcctlError, match=message):
        render_dotenv(text, [PG], source="m.env")


def test_dotenv_values_that_cannot_be_quoted_are_refused() -> None:
    bad = BoundService(**{**PG.__dict__, "host": "it's"})
    with pytest.raises(ValueError, match="value of ORDERS_DB_URL cannot be single-quoted"):
        render_dotenv(None, [bad])


def test_dotenv_without_services_and_block_is_unchanged() -> None:
    assert render_dotenv("A=1\n\n", []) == "A=1\n\n"


# --- update_manifest and the JSON guard ------------------------------------------------------------------


def test_update_manifest_writes_only_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "vcap.json"
    assert update_manifest(path, "json", "web", [], root=tmp_path) is False
    assert not path.exists()
    assert update_manifest(path, "json", "web", [PG], root=tmp_path) is True
    assert path.read_text() == render_json([PG])
    path.chmod(0o644)
    assert update_manifest(path, "json", "web", [PG], root=tmp_path) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_update_manifest_refuses_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "vcap.json"
    path.write_text('{\n  "a": [1,]\n}\n')
    with pytest.raises(SvcctlError, match=rf"^{path}:2:11: cannot parse the manifest as JSON .*nothing was written"):
        update_manifest(path, "json", "web", [PG], root=tmp_path)
    assert path.read_text() == '{\n  "a": [1,]\n}\n'


def test_update_manifest_refuses_a_json_file_that_is_not_vcap(tmp_path: Path) -> None:
    path = tmp_path / "package.json"
    path.write_text('{"name": "web", "version": "1.0.0"}\n')
    with pytest.raises(SvcctlError, match="is not a VCAP_SERVICES document"):
        update_manifest(path, "json", "web", [PG], root=tmp_path)


def test_update_manifest_invalid_yaml_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text("applications:\n  - name: web\n   bad: indent\n")
    before = path.read_bytes()
    with pytest.raises(SvcctlError, match=rf"^{path}:3:"):
        update_manifest(path, "cf", "web", [PG], root=tmp_path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["manifest.yml"]


# --- atomic writes ---------------------------------------------------------------------------------------


def test_write_manifest_is_exact_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text("old\n")
    path.chmod(0o644)
    write_manifest(path, "new: ü\r\n", root=tmp_path)
    assert path.read_bytes() == "new: ü\r\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["manifest.yml"]


def test_write_manifest_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text("old\n")

    def fail(src: object, dst: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # an interruption, not only an OSError, must clean up too

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(KeyboardInterrupt):
        write_manifest(path, "new\n", root=tmp_path)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["manifest.yml"]


def test_write_manifest_failure_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text("old\n")

    def fail(fd: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="no space left"):
        write_manifest(path, "new\n", root=tmp_path)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["manifest.yml"]


def test_write_manifest_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real.env").write_text("old\n")
    link = tmp_path / "app.env"
    link.symlink_to("real.env")
    with pytest.raises(SvcctlError, match=r'goes through the symlink "app.env" .*nothing was written'):
        write_manifest(link, "new\n", root=tmp_path)
    assert link.is_symlink()
    assert (tmp_path / "real.env").read_text() == "old\n"


def test_write_manifest_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SvcctlError, match="does not exist; nothing was written"):
        write_manifest(tmp_path / "nope" / "m.yml", "x\n", root=tmp_path)


# --- Git warning -----------------------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_git_warning(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text("*.env\n")
    tracked = repo / "apps" / "manifest.yml"
    tracked.write_text("applications: []\n")
    untracked = repo / "apps" / "other.yml"
    untracked.write_text("x\n")
    ignored = repo / "apps" / "web.env"
    ignored.write_text("A=1\n")
    _git(repo, "add", ".gitignore", "apps/manifest.yml")
    _git(repo, "commit", "-q", "-m", "init")

    assert git_tracked_warning(tracked) == (
        f"warning: {tracked} now holds secrets and is tracked by Git: run `git rm --cached manifest.yml` there "
        "and add it to .gitignore"
    )
    assert git_tracked_warning(untracked) == (
        f"warning: {untracked} now holds secrets and is not git-ignored: add it to .gitignore"
    )
    assert git_tracked_warning(ignored) is None
    outside = tmp_path / "outside.yml"
    outside.write_text("x\n")
    assert git_tracked_warning(outside) is None


def test_git_warning_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_tracked_warning(tmp_path / "m.yml") is None
