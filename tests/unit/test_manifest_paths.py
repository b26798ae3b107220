"""Manifest paths from untrusted YAML: validate refuses any that could leave the environment's directory,
and apply refuses again at write time (a symlink may appear after validate), leaving outside files as they were.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from svcctl.apply import manifests
from svcctl.apply.manifests import BoundService, update_manifest, write_manifest
from svcctl.errors import InvalidEnvironment, SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.paths import ManifestPathError, environment_root, manifest_path
from svcctl.secrets import Secret

PG = BoundService(
    binding_name="web-db",
    instance="db",
    engine="postgres",
    label="postgresql",
    plan="small",
    tags=["postgres"],
    host="10.0.0.11",
    port=5432,
    database="db",
    username="sv_web_db_r0",
    password=Secret("s3cret-password-value"),
    role="readwrite",
)
SECRET = "s3cret-password-value"
OUTSIDE_BYTES = b"an unrelated file\nA=1\n"


@pytest.fixture
def env(tmp_path: Path) -> Path:
    """An environment directory with an `apps/` directory, next to an `outside/` one holding a file."""
    root = tmp_path / "env"
    (root / "apps").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "notes.txt").write_bytes(OUTSIDE_BYTES)
    return root


def outside(env: Path) -> Path:
    return env.parent / "outside"


def assert_outside_untouched(env: Path) -> None:
    assert sorted(p.name for p in outside(env).iterdir()) == ["notes.txt"]
    assert (outside(env) / "notes.txt").read_bytes() == OUTSIDE_BYTES


def refused(env: Path, declared: str) -> ManifestPathError:
    with pytest.raises(ManifestPathError) as info:
        manifest_path(env, env, declared)
    return info.value


# --- the rule: manifest_path ------------------------------------------------------------------------------


def test_a_relative_path_inside_resolves_lexically(env: Path) -> None:
    assert manifest_path(env, env, "apps/web/manifest.yml") == env / "apps" / "web" / "manifest.yml"
    assert manifest_path(env, env, "./apps//web.env") == env / "apps" / "web.env"
    assert manifest_path(env, env / "apps", "web.env") == env / "apps" / "web.env"


@pytest.mark.parametrize(
    ("declared", "kind", "message"),
    [
        ("../outside/notes.txt", "parent", r'^"\.\./outside/notes\.txt" contains "\.\."; a manifest must be inside'),
        ("apps/../web.yml", "parent", r'contains "\.\."'),  # inside once folded, refused all the same
        ("apps/..", "parent", r'contains "\.\."'),
        ("/etc/passwd", "absolute", r'^"/etc/passwd" is an absolute path; a manifest must be inside'),
        ("//etc/passwd", "absolute", r"is an absolute path"),
        ("~/.bashrc", "home", r'^"~/\.bashrc" starts with "~"; a manifest must be inside'),
        ("~root/.ssh/authorized_keys", "home", r'starts with "~"'),
        ("apps/web\n.yml", "character", r'^path "apps/web\\n\.yml" contains the control or format character U\+000A'),
        ("apps/\x1b[31mweb.yml", "character", r"U\+001B"),
        ("apps/web\u202e.yml", "character", r"U\+202E"),  # a bidi override: format, not control, still refused
        ("", "empty", r"^must not be empty"),
        (".", "root", r"names the environment directory itself"),
    ],
)
def test_paths_that_may_leave_are_refused(env: Path, declared: str, kind: str, message: str) -> None:
    error = refused(env, declared)
    assert error.kind == kind
    assert re.search(message, str(error))
    assert "\n" not in str(error) and "\x1b" not in str(error)


def test_a_symlinked_file_pointing_outside_is_refused(env: Path) -> None:
    (env / "apps" / "web.env").symlink_to(outside(env) / "notes.txt")
    error = refused(env, "apps/web.env")
    assert error.kind == "outside"
    assert str(error).startswith(
        f'"apps/web.env" resolves outside the environment directory: "apps/web.env" is a symlink to '
        f'"{outside(env) / "notes.txt"}"'
    )


def test_a_symlinked_parent_directory_pointing_outside_is_refused(env: Path) -> None:
    (env / "out").symlink_to(outside(env))
    error = refused(env, "out/deeper/creds.yml")
    assert error.kind == "outside"
    assert '"out" is a symlink to' in str(error)


def test_a_dangling_symlink_pointing_outside_is_refused(env: Path) -> None:
    (env / "apps" / "vcap.json").symlink_to(outside(env) / "new.json")
    assert refused(env, "apps/vcap.json").kind == "outside"


def test_a_relative_symlink_climbing_out_is_refused(env: Path) -> None:
    (env / "apps" / "up").symlink_to("../../outside")
    assert refused(env, "apps/up/notes.txt").kind == "outside"


def test_a_symlink_pointing_inside_is_refused_too(env: Path) -> None:
    (env / "real").mkdir()
    (env / "link").symlink_to("real")
    error = refused(env, "link/web.yml")
    assert error.kind == "symlink"
    assert str(error).startswith('"link/web.yml" goes through the symlink "link" (to "real"); svcctl writes manifests')


def test_a_hostile_symlink_target_is_escaped_in_the_message(env: Path) -> None:
    (env / "apps" / "web.yml").symlink_to("/tmp/\x1b]0;owned\x07")
    message = str(refused(env, "apps/web.yml"))
    assert "\x1b" not in message and "\x07" not in message
    assert "\\x1b]0;owned\\x07" in message


def test_the_environment_directory_itself_may_be_reached_through_a_symlink(env: Path, tmp_path: Path) -> None:
    (tmp_path / "checkout").symlink_to(env)
    root = environment_root(tmp_path / "checkout")
    assert manifest_path(root, root, "apps/web.yml") == tmp_path / "checkout" / "apps" / "web.yml"


def test_environment_root_is_the_directory_or_the_file_s_directory(env: Path) -> None:
    (env / "svcctl.yaml").write_text("apps:\n")
    assert environment_root(env) == env
    assert environment_root(env / "svcctl.yaml") == env


# --- validate: the loader reports them like any other problem ---------------------------------------------


def _validate(env: Path, manifest: str, fmt: str = "cf") -> list[str]:
    (env / "svcctl.yaml").write_text(
        f'apps:\n  web:\n    format: {fmt}\n    manifest: "{manifest}"\nenvironment: test\n'
    )
    with pytest.raises(InvalidEnvironment) as info:
        load_environment(env)
    return [str(p) for p in info.value.problems]


def test_validate_reports_file_line_and_field(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(env)
    assert _validate(env, "../outside/notes.txt", "dotenv") == [
        'svcctl.yaml:4:15: apps.web.manifest: "../outside/notes.txt" contains ".."; a manifest must be inside the '
        'environment directory: write its path relative to the YAML file, such as "apps/web/manifest.yml"'
    ]
    assert_outside_untouched(env)


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        ("/etc/passwd", '"/etc/passwd" is an absolute path'),
        ("~/.bashrc", 'starts with "~"'),
        ("apps/web\\n.yml", "contains the control or format character U+000A"),
        ("", "must not be empty"),
    ],
)
def test_validate_refuses_each_kind(env: Path, monkeypatch: pytest.MonkeyPatch, manifest: str, needle: str) -> None:
    monkeypatch.chdir(env)
    (problem,) = _validate(env, manifest)
    assert problem.startswith("svcctl.yaml:4:15: apps.web.manifest: ")
    assert needle in problem


def test_validate_refuses_a_symlink_out(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(env)
    (env / "apps" / "web.env").symlink_to(outside(env) / "notes.txt")
    (problem,) = _validate(env, "apps/web.env", "dotenv")
    assert problem.startswith('svcctl.yaml:4:15: apps.web.manifest: "apps/web.env" resolves outside the environment')
    assert_outside_untouched(env)


def test_validate_accepts_and_resolves_a_path_inside(env: Path) -> None:
    (env / "svcctl.yaml").write_text("apps:\n  web: {manifest: apps/web.yml}\nenvironment: test\n")
    assert load_environment(env / "svcctl.yaml").apps["web"].manifest == str(env / "apps" / "web.yml")


# --- apply: refused again at write time, and nothing outside changes ---------------------------------------


@pytest.mark.parametrize("fmt", ["cf", "dotenv", "json"])
def test_writing_through_a_symlinked_file_is_refused(env: Path, fmt: manifests.ManifestFormat) -> None:
    link = env / "apps" / "web.env"
    link.symlink_to(outside(env) / "notes.txt")
    with pytest.raises(SvcctlError, match=r"resolves outside the environment directory.*nothing was written\.$"):
        update_manifest(link, fmt, "web", [PG], root=env)
    assert link.is_symlink()
    assert_outside_untouched(env)
    assert sorted(p.name for p in (env / "apps").iterdir()) == ["web.env"]  # no temporary file left


def test_writing_through_a_symlinked_parent_is_refused(env: Path) -> None:
    (env / "out").symlink_to(outside(env))
    with pytest.raises(SvcctlError, match=r'^cannot write manifest .*/out/notes.txt: "out/notes.txt" resolves outside'):
        update_manifest(env / "out" / "notes.txt", "dotenv", "web", [PG], root=env)
    assert_outside_untouched(env)


def test_writing_outside_the_environment_is_refused(env: Path) -> None:
    target = outside(env) / "notes.txt"
    with pytest.raises(SvcctlError, match=r"it is outside the environment directory .*Nothing was written\.$"):
        update_manifest(target, "dotenv", "web", [PG], root=env)
    with pytest.raises(SvcctlError, match=r"outside the environment directory"):
        write_manifest(env / ".." / "outside" / "notes.txt", "x\n", root=env)
    assert_outside_untouched(env)


def test_a_control_character_is_refused_at_write_time(env: Path) -> None:
    with pytest.raises(SvcctlError, match=r"control or format character U\+000A"):
        update_manifest(env / "apps" / "web\n.env", "dotenv", "web", [PG], root=env)
    assert list((env / "apps").iterdir()) == []


def test_a_fifo_is_refused_without_blocking(env: Path) -> None:
    fifo = env / "apps" / "web.env"
    os.mkfifo(fifo)
    with pytest.raises(SvcctlError, match="is not a regular file"):
        update_manifest(fifo, "dotenv", "web", [PG], root=env)


def _swap_for_symlink(path: Path, target: Path) -> None:
    path.rename(path.with_name(path.name + ".moved"))
    path.symlink_to(target)


def test_toctou_a_parent_swapped_for_a_symlink_after_the_check(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check passes, then `apps/` becomes a symlink out before any directory is opened: refused, not followed."""
    checked = manifests.manifest_path

    def check_then_swap(root: Path, yaml_dir: Path, declared: str) -> Path:
        result = checked(root, yaml_dir, declared)
        _swap_for_symlink(env / "apps", outside(env))
        return result

    monkeypatch.setattr(manifests, "manifest_path", check_then_swap)
    with pytest.raises(SvcctlError, match=r"apps is a symlink, and svcctl writes manifests only through real"):
        update_manifest(env / "apps" / "notes.txt", "dotenv", "web", [PG], root=env)
    assert_outside_untouched(env)


def test_toctou_the_target_swapped_for_a_symlink_before_the_rename(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read, then replaced by a symlink out while svcctl renders: refused, the symlink is not written."""
    target = env / "apps" / "web.env"
    target.write_text("A=1\n")
    render = manifests.render_manifest

    def render_then_swap(*args: object, **kwargs: object) -> str:
        text: str = render(*args, **kwargs)  # type: ignore[arg-type]
        _swap_for_symlink(target, outside(env) / "notes.txt")
        return text

    monkeypatch.setattr(manifests, "render_manifest", render_then_swap)
    with pytest.raises(SvcctlError, match=r"web.env is a symlink, and svcctl writes manifests only through real"):
        update_manifest(target, "dotenv", "web", [PG], root=env)
    assert target.is_symlink()
    assert_outside_untouched(env)
    assert sorted(p.name for p in (env / "apps").iterdir()) == ["web.env", "web.env.moved"]


def test_toctou_a_symlink_made_between_validate_and_apply(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate (the loader) accepts the environment; a symlink out appears; apply's manifest step refuses."""
    monkeypatch.chdir(env)
    (env / "svcctl.yaml").write_text("apps:\n  web: {manifest: apps/web.env, format: dotenv}\nenvironment: test\n")
    loaded = load_environment(Path())
    (env / "apps").rmdir()
    (env / "apps").symlink_to(outside(env))
    with pytest.raises(SvcctlError, match=r"resolves outside the environment directory"):
        update_manifest(Path(loaded.apps["web"].manifest), "dotenv", "web", [PG], root=environment_root(Path()))
    assert_outside_untouched(env)


def test_the_written_manifest_is_0600_and_replaces_the_file(env: Path) -> None:
    target = env / "apps" / "web.env"
    target.write_text("A=1\n")
    target.chmod(0o644)
    inode = target.stat().st_ino
    assert update_manifest(target, "dotenv", "web", [PG], root=env) is True
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.stat().st_ino != inode  # renamed over, never written in place
    assert SECRET in target.read_text() and target.read_text().startswith("A=1\n")
    assert sorted(p.name for p in (env / "apps").iterdir()) == ["web.env"]
