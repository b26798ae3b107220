"""`svcctl diff`: what a change to the YAML declares (svcctl.plan.declared), its renderers, and the CLI over git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from svcctl.model.loader import load_environment
from svcctl.plan.declared import RISKS, DeclaredChange, DeclaredDiff, FieldChange, compare
from svcctl.plan.declared_render import NO_CHANGES, render_json, render_markdown, render_text
from svcctl.plan.types import Action

BASE = """\
environment: shop
nodes:
  db-1:
    host: db-1.example.net
    user: deploy
    labels: {zone: a, db_password: hunter2}
    engines: [postgres, mysql, redis]
    client_networks: ["10.0.0.0/24"]
  db-2: {host: db-2.example.net, engines: [postgres]}
services:
  postgres: {engine: postgres, versions: ["15"]}
  mysql: {engine: mysql, versions: ["10.11"]}
  redis: {engine: redis, versions: ["7"]}
plans:
  pg-small: {service: postgres, storage_mb: 512, connections: 20}
  pg-large: {service: postgres, storage_mb: 4096, connections: 100}
  my-small: {service: mysql, storage_mb: 512, connections: 20}
  cache-16: {service: redis, memory_mb: 16}
instances:
  orders-db: {plan: pg-small, node: db-1}
  billing-db: {plan: pg-small}
  cache: {plan: cache-16, protect: false}
apps:
  web: {manifest: apps/web/manifest.yml}
bindings:
  - {app: web, instance: orders-db}
  - {app: web, instance: cache, role: readonly}
"""

Edit = Callable[[str], str]


def _replace(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def _env_dir(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "svcctl.yaml").write_text(text)
    return path


def _diff(tmp_path: Path, edit: Edit) -> DeclaredDiff:
    """BASE against BASE edited, each in a directory of its own (a fresh pair on every call)."""
    pair = Path(tempfile.mkdtemp(dir=tmp_path))
    a, b = _env_dir(pair, "a", BASE), _env_dir(pair, "b", edit(BASE))
    return compare(load_environment(a), load_environment(b), a, b)


def _change(diff: DeclaredDiff, address: str) -> DeclaredChange:
    return next(c for c in diff.changes if c.address == address)


def _outputs(diff: DeclaredDiff) -> list[str]:
    return [render_text(diff, "a", "b"), render_markdown(diff, "a", "b"), render_json(diff, "a", "b")]


def test_the_same_files_in_two_directories_declare_no_change(tmp_path: Path) -> None:
    diff = _diff(tmp_path, lambda text: text)  # the manifest path resolves into each directory: still equal
    assert not diff.has_changes and diff.counts() == (0, 0, 0)
    assert NO_CHANGES in render_text(diff, "a", "b")
    assert f"**{NO_CHANGES}**" in render_markdown(diff, "a", "b") and "<details>" not in render_markdown(diff, "a", "b")


def test_a_default_written_out_is_no_change(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("{plan: pg-small}", "{plan: pg-small, protect: true}"))
    assert not diff.has_changes


CASES: dict[str, tuple[Edit, Action, str, list[str]]] = {
    "node added": (
        _replace("services:", "  db-3: {host: db-3.example.net}\nservices:"),
        Action.CREATE,
        "node.db-3",
        ["capacity.memory_mb", "capacity.storage_mb", "client_networks", "engines", "host", "port"],
    ),
    "node removed": (
        _replace("  db-2: {host: db-2.example.net, engines: [postgres]}\n", ""),
        Action.DELETE,
        "node.db-2",
        ["capacity.memory_mb", "capacity.storage_mb", "client_networks", "engines", "host", "port"],
    ),
    "node edited": (_replace("zone: a,", "zone: c,"), Action.UPDATE, "node.db-1", ["labels.zone"]),
    "service added": (
        _replace("services:\n", 'services:\n  pg-old: {engine: postgres, versions: ["13"]}\n'),
        Action.CREATE,
        "service.pg-old",
        ["engine", "versions"],
    ),
    "service edited": (
        _replace('versions: ["10.11"]', 'versions: ["10.11", "11.8"]'),
        Action.UPDATE,
        "service.mysql",
        ["versions"],
    ),
    "plan removed": (
        _replace("  pg-large: {service: postgres, storage_mb: 4096, connections: 100}\n", ""),
        Action.DELETE,
        "plan.pg-large",
        ["connections", "eviction", "service", "storage_enforce", "storage_mb"],
    ),
    "plan edited": (_replace("connections: 20}", "connections: 30}"), Action.UPDATE, "plan.pg-small", ["connections"]),
    "instance added": (
        _replace("apps:", "  extra-db: {plan: my-small}\napps:"),
        Action.CREATE,
        "instance.extra-db",
        ["plan", "protect"],
    ),
    "instance edited": (
        _replace("{plan: pg-small}", '{plan: pg-small, version: "15"}'),
        Action.UPDATE,
        "instance.billing-db",
        ["version"],
    ),
    "app added": (
        _replace("bindings:", "  api: {manifest: apps/api/.env, format: dotenv}\nbindings:"),
        Action.CREATE,
        "app.api",
        ["format", "manifest"],
    ),
    "app edited": (
        _replace("{manifest: apps/web/manifest.yml}", "{manifest: apps/web/manifest.yml, format: json}"),
        Action.UPDATE,
        "app.web",
        ["format"],
    ),
    "binding added": (
        lambda text: text + "  - {app: web, instance: billing-db}\n",
        Action.CREATE,
        "binding.web.billing-db",
        ["app", "instance", "role", "rotation"],
    ),
    "binding edited": (
        _replace("instance: cache, role: readonly}", "instance: cache, role: readwrite}"),
        Action.UPDATE,
        "binding.web.cache",
        ["role"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_kind_of_addition_removal_and_edit(tmp_path: Path, case: str) -> None:
    edit, action, address, fields = CASES[case]
    diff = _diff(tmp_path, edit)
    assert [c.address for c in diff.changes] == [address]
    change = diff.changes[0]
    assert change.action is action
    assert [f.field for f in change.fields] == fields
    if action is Action.UPDATE:
        assert all(f.old is not None or f.new is not None for f in change.fields)
    text = render_text(diff, "a", "b")
    verb = {Action.CREATE: "added", Action.UPDATE: "changed", Action.DELETE: "removed"}[action]
    assert f"# {address} is {verb}\n" in text
    assert f"{change.action.symbol} {address.split('.')[0]} " in text


def test_an_edited_field_shows_old_and_new(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("connections: 20}", "connections: 30}"))
    assert _change(diff, "plan.pg-small").fields == [FieldChange("connections", 20, 30)]
    assert "~ connections = 20 -> 30" in render_text(diff, "a", "b")
    assert "!       connections = 20 -> 30" in render_markdown(diff, "a", "b")


RISKY: dict[str, tuple[Edit, str, str]] = {
    "protection turned off": (
        _replace("{plan: pg-small, node: db-1}", "{plan: pg-small, node: db-1, protect: false}"),
        "instance.orders-db",
        RISKS["protection"],
    ),
    "instance removed": (
        lambda text: text.replace("  billing-db: {plan: pg-small}\n", ""),
        "instance.billing-db",
        RISKS["removed-instance"],
    ),
    "node pin changed": (
        _replace("{plan: pg-small, node: db-1}", "{plan: pg-small, node: db-2}"),
        "instance.orders-db",
        RISKS["node-pin"],
    ),
    "node pin added": (
        _replace("{plan: pg-small}", "{plan: pg-small, node: db-2}"),
        "instance.billing-db",
        RISKS["node-pin"],
    ),
    "engine changed": (_replace("{plan: pg-small}", "{plan: my-small}"), "instance.billing-db", RISKS["engine"]),
    "node removed": (
        _replace("  db-2: {host: db-2.example.net, engines: [postgres]}\n", ""),
        "node.db-2",
        RISKS["removed-node"],
    ),
    "node re-addressed": (_replace("db-1.example.net", "db-9.example.net"), "node.db-1", RISKS["reach"]),
    "environment renamed": (_replace("environment: shop", "environment: shop2"), "environment", RISKS["renamed"]),
    "binding removed": (
        _replace("  - {app: web, instance: cache, role: readonly}\n", ""),
        "binding.web.cache",
        RISKS["removed-binding"],
    ),
    "client network opened": (
        _replace('["10.0.0.0/24"]', '["10.0.0.0/24", "0.0.0.0/0"]'),
        "node.db-1",
        RISKS["network"],
    ),
}


@pytest.mark.parametrize("case", sorted(RISKY))
def test_each_risky_change_is_flagged_in_every_format(tmp_path: Path, case: str) -> None:
    edit, address, risk = RISKY[case]
    diff = _diff(tmp_path, edit)
    assert [a for a, r in diff.risky if r.startswith(risk)] == [address]
    text, markdown, doc = _outputs(diff)
    assert f"# RISK: {risk}" in text and f"{address}: {risk}" in text
    assert "**Risky changes:**" in markdown and f"`{address}`: `{risk}" in markdown
    assert any(r.startswith(risk) for c in json.loads(doc)["changes"] for r in c["risks"])


@pytest.mark.parametrize(
    "edit",
    [
        _replace("{plan: cache-16, protect: false}", "{plan: cache-16, protect: true}"),  # protection turned on
        _replace('["10.0.0.0/24"]', "[]"),  # a network closed
        _replace("zone: a,", "zone: c,"),  # a label: placement keeps placed instances where they are
        lambda text: text + "  - {app: web, instance: billing-db}\n",  # a binding added
    ],
)
def test_safe_changes_are_not_flagged(tmp_path: Path, edit: Edit) -> None:
    diff = _diff(tmp_path, edit)
    assert diff.has_changes and diff.risky == []
    assert "Risky changes" not in render_text(diff, "a", "b") and "risky: 0" in render_markdown(diff, "a", "b")


def test_the_risks_name_what_changed(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("{plan: pg-small}", "{plan: my-small}"))
    assert diff.risky == [("instance.billing-db", f"{RISKS['engine']} (postgres -> mysql)")]
    diff = _diff(tmp_path, _replace("user: deploy", "user: root"))
    assert diff.risky == [("node.db-1", f"{RISKS['reach']} (user changed)")]


def test_quota_changes_name_the_instances_they_resize(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("storage_mb: 512, connections: 20}", "storage_mb: 1024, connections: 20}"))
    assert [(q.address, q.field, q.old, q.new, q.instances) for q in diff.quotas] == [
        ("plan.pg-small", "storage_mb", 512, 1024, ["billing-db", "orders-db"])
    ]
    text, markdown, doc = _outputs(diff)
    assert "plan.pg-small storage_mb: 512 -> 1024 (instances: billing-db, orders-db)" in text
    assert "quota changes: 1" in markdown and json.loads(doc)["quotas"][0]["new"] == 1024


def test_an_instance_moved_to_another_plan_is_a_quota_change(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("{plan: pg-small}", "{plan: pg-large}"))
    assert [(q.address, q.field, q.old, q.new) for q in diff.quotas] == [
        ("instance.billing-db", "connections", 20, 100),
        ("instance.billing-db", "storage_mb", 512, 4096),
    ]
    assert diff.risky == []  # same engine: resized in place


def test_a_rotation_is_listed(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("{app: web, instance: orders-db}", "{app: web, instance: orders-db, rotation: 2}"))
    assert [(r.address, r.old, r.new) for r in diff.rotations] == [("binding.web.orders-db", 0, 2)]
    text, markdown, doc = _outputs(diff)
    assert "binding.web.orders-db rotation: 0 -> 2" in text
    assert "rotations: 1" in markdown and json.loads(doc)["rotations"] == [
        {"address": "binding.web.orders-db", "old": 0, "new": 2}
    ]


def test_secrets_are_never_shown(tmp_path: Path) -> None:
    diff = _diff(tmp_path, _replace("db_password: hunter2", "db_password: swordfish"))
    field = _change(diff, "node.db-1").fields[0]
    assert field == FieldChange("labels.db_password", None, None, sensitive=True)
    for out in _outputs(diff):
        assert "hunter2" not in out and "swordfish" not in out
    assert "labels.db_password = (sensitive value)" in render_text(diff, "a", "b")
    removed = _diff(tmp_path, lambda text: text.replace("db-1", "db-0"))
    for out in _outputs(removed):
        assert "hunter2" not in out


def _hostile() -> DeclaredDiff:
    evil = "\x1b]0;owned\x07\u202e`</details>` @admin #1 ```"
    change = DeclaredChange(
        Action.UPDATE, f"plan.{evil}", [FieldChange(f"description{evil}", evil, "ok")], [f"risk {evil}"]
    )
    return DeclaredDiff(base_name=evil, head_name="shop", changes=[change], quotas=[], rotations=[])


def test_hostile_strings_are_escaped_in_every_format() -> None:
    diff = _hostile()
    label = "\x1b[2Jmain"
    for out in (
        render_text(diff, label, "b", color=True),
        render_markdown(diff, label, "b"),
        render_json(diff, label, "b"),
    ):
        assert "\x07" not in out and "\u202e" not in out and "\x1b]" not in out and "\x1b[2J" not in out
    markdown = render_markdown(diff, label, "b")
    lines = markdown.splitlines()
    assert lines.count("</details>") == 1 and lines[-1] == "</details>"  # the value's </details> closes nothing
    assert "````diff" in lines  # the fence outgrows the value's ``` run
    items = [line for line in lines if line.startswith("- ")]
    assert items and all(line.startswith("- ``") for line in items)  # values outside the block are code spans


def test_text_colours_only_when_asked() -> None:
    diff = _hostile()
    assert "\x1b[" not in render_text(diff, "a", "b")
    assert "\x1b[33m~\x1b[0m" in render_text(diff, "a", "b", color=True)


def test_markdown_is_cut_to_its_budget_with_a_note(tmp_path: Path) -> None:
    changes = [
        DeclaredChange(Action.CREATE, f"instance.db-{i}", [FieldChange("plan", None, "pg-small")]) for i in range(50)
    ]
    diff = DeclaredDiff(base_name="shop", head_name="shop", changes=changes, quotas=[], rotations=[])
    out = render_markdown(diff, "a", "b", max_chars=2000)
    assert len(out) <= 2000 and "more entries not shown" in out and out.count("</details>") == 1


# -- the CLI, over a real git repository ---------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    res = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env)
    return res.stdout


def _svcctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SVCCTL_KEY", "SVCCTL_KEY_FILE")}
    env["HOME"] = str(cwd)  # no key anywhere: diff needs none
    return subprocess.run(
        [sys.executable, "-m", "svcctl", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose environments/shop changes between two commits (protection off, a rotation)."""
    root = tmp_path / "repo"
    env = root / "environments" / "shop"
    env.mkdir(parents=True)
    (env / "svcctl.yaml").write_text(BASE)
    (root / "README").write_text("not an environment\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    text = BASE.replace("{plan: pg-small, node: db-1}", "{plan: pg-small, node: db-1, protect: false}")
    (env / "svcctl.yaml").write_text(text.replace("instance: orders-db}", "instance: orders-db, rotation: 1}"))
    _git(root, "commit", "-q", "-am", "two")
    return root


@needs_git
def test_cli_diff_of_two_commits(repo: Path) -> None:
    res = _svcctl(repo, "diff", "HEAD~1", "HEAD", "--env", "environments/shop", "--no-color")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "svcctl diff: environment shop, HEAD~1 -> HEAD" in res.stdout
    assert "~ protect = true -> false" in res.stdout and f"# RISK: {RISKS['protection']}" in res.stdout
    assert "binding.web.orders-db rotation: 0 -> 1" in res.stdout
    assert "Declared: 0 to add, 2 to change, 0 to remove; 1 risky change." in res.stdout
    markdown = _svcctl(repo, "diff", "HEAD~1", "HEAD", "--env", "environments/shop", "-o", "markdown")
    assert markdown.returncode == 2 and markdown.stdout.startswith("#### svcctl diff: `shop` (`HEAD~1` → `HEAD`)")
    # From inside the environment, HEAD defaulting to the working tree, which is HEAD: nothing declared.
    same = _svcctl(repo / "environments" / "shop", "diff", "HEAD")
    assert same.returncode == 0, same.stdout + same.stderr
    assert NO_CHANGES in same.stdout and "the working tree" in same.stdout
    # A single file as the environment, and the working tree moved on.
    yaml_file = repo / "environments" / "shop" / "svcctl.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("connections: 100}", "connections: 200}"))
    moved = _svcctl(repo, "diff", "HEAD", "--env", "environments/shop/svcctl.yaml", "-o", "json")
    assert moved.returncode == 2, moved.stdout + moved.stderr
    assert json.loads(moved.stdout)["quotas"][0]["address"] == "plan.pg-large"


@needs_git
def test_cli_diff_refuses_bad_revisions_with_one_paragraph(repo: Path) -> None:
    res = _svcctl(repo, "diff", "no-such-branch", "--env", "environments/shop")
    assert res.returncode == 1
    assert "git cannot resolve the revision 'no-such-branch' (BASE)" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    res = _svcctl(repo, "diff", "HEAD", "--output=/tmp/x", "--env", "environments/shop")
    assert res.returncode == 1  # an option it does not have is a usage error, never a revision
    res = _svcctl(repo, "diff", "--env", "environments/shop", "--", "--output=/tmp/x")
    assert res.returncode == 1 and "must not be empty or start with '-'" in res.stderr
    res = _svcctl(repo, "diff", "HEAD~1", "HEAD", "--env", "environments/nowhere")
    assert res.returncode == 1 and "does not exist at revision 'HEAD~1' (BASE)" in res.stderr


@needs_git
def test_cli_diff_says_which_side_is_invalid_and_where(repo: Path) -> None:
    env = repo / "environments" / "shop"
    (env / "svcctl.yaml").write_text(BASE + "bogus: 1\n")
    _git(repo, "commit", "-q", "-am", "broken")
    res = _svcctl(repo, "diff", "HEAD", "HEAD~1", "--env", "environments/shop")
    assert res.returncode == 1
    assert "HEAD:environments/shop/svcctl.yaml:" in res.stderr and "found in BASE (HEAD)" in res.stderr
    assert "svcctl-diff-" not in res.stderr  # the scratch directory never shows


@needs_git
def test_cli_diff_refuses_a_symlinked_file_in_a_revision(repo: Path) -> None:
    env = repo / "environments" / "shop"
    (repo / "secret.yaml").write_text("environment: x\n")
    (env / "more.yaml").symlink_to(repo / "secret.yaml")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "link")
    res = _svcctl(repo, "diff", "HEAD~1", "HEAD", "--env", "environments/shop")
    assert res.returncode == 1 and "is a symbolic link" in res.stderr


def test_cli_diff_of_two_directories_needs_no_git(tmp_path: Path) -> None:
    _env_dir(tmp_path, "old", BASE)
    new = BASE.replace("  cache: {plan: cache-16, protect: false}\n", "")
    _env_dir(tmp_path, "new", new.replace("  - {app: web, instance: cache, role: readonly}\n", ""))
    res = _svcctl(tmp_path, "diff", "old", "new", "--no-color")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"# RISK: {RISKS['removed-instance']}" in res.stdout
    assert _svcctl(tmp_path, "diff", "old", "old").returncode == 0
