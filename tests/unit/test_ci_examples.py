"""The example CI pipelines (examples/ci): the linters pass on each, and the scripts' pure parts do what the
pipelines rely on (markers, bodies under GitHub's limit, what to create, update or close, what to post).

The scripts run on the lab in tests/e2e/test_ci_scripts.py; here nothing needs a host or a network.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"
SCRIPTS = CI / "scripts"
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((CI / "github" / "workflows").glob("*.yml"))
GITLAB = CI / "gitlab" / ".gitlab-ci.yml"
LIMIT = 65_536


def script(name: str) -> ModuleType:
    """One of the scripts, imported as they import one another (their directory on the path)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


cilib = script("cilib")
post = script("post")
svcctl_ci = script("svcctl_ci")


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False)


# --- the linters ----------------------------------------------------------------------------------------------


def test_there_are_three_workflows() -> None:
    assert [w.name for w in WORKFLOWS] == ["svcctl-apply.yml", "svcctl-drift.yml", "svcctl-plan.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path) -> None:
    res = run(BIN / "actionlint", workflow)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_zizmor_offline_passes_even_as_an_auditor(workflow: Path) -> None:
    res = run(BIN / "zizmor", "--offline", "--no-progress", "--persona", "auditor", workflow)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No findings to report" in res.stdout


def test_the_gitlab_pipeline_passes_gitlabs_builtin_schema() -> None:
    res = run(BIN / "check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", GITLAB)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_linters_do_fail_on_what_they_are_here_for(tmp_path: Path) -> None:
    """A control: an unpinned action, an untrusted expansion in run: and a bad GitLab key are all caught."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\non: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        '      - uses: actions/checkout@v4\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    res = run(BIN / "zizmor", "--offline", "--no-progress", bad)
    assert res.returncode != 0
    assert "unpinned-uses" in res.stdout and "template-injection" in res.stdout
    gitlab = tmp_path / ".gitlab-ci.yml"
    gitlab.write_text("job:\n  script: [true]\n  when_ever: always\n")
    assert run(BIN / "check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", gitlab).returncode != 0
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ secrets }\n")
    assert run(BIN / "actionlint", broken).returncode != 0


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job["steps"]]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_pin_actions_grant_per_job_and_expand_nothing_in_run(workflow: Path) -> None:
    doc = YAML(typ="safe").load(workflow.read_text())
    assert doc["permissions"] == {}, "no default permissions: each job names what it needs"
    assert "pull_request_target" not in doc["on"] and "workflow_run" not in doc["on"]
    for job in doc["jobs"].values():
        assert job["permissions"], job
    for step in steps(doc):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        if "run" in step:
            assert "${{" not in step["run"], step["run"]
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_no_example_scans_host_keys_or_turns_checking_off() -> None:
    for path in [*WORKFLOWS, GITLAB, *SCRIPTS.glob("*.py")]:
        text = path.read_text()
        assert "ssh-keyscan" not in text and "StrictHostKeyChecking" not in text, path


# --- markers and decisions ------------------------------------------------------------------------------------


def test_markers_are_one_hidden_line_per_environment_and_cannot_be_broken_out_of() -> None:
    assert cilib.plan_marker("prod") == "<!-- svcctl-plan: prod -->"
    assert cilib.drift_marker("environments/prod") == "<!-- svcctl-drift: environments/prod -->"
    assert cilib.plan_marker("a b-->c\n<x>") == "<!-- svcctl-plan: a_b-_c__x_ -->"  # no "--" or ">" inside


def test_a_marker_counts_only_on_the_first_line() -> None:
    marker = cilib.plan_marker("prod")
    assert cilib.has_marker(f"{marker}\nplan", marker)
    assert cilib.has_marker(f"  {marker}  \r\nplan", marker)
    assert not cilib.has_marker(f"quoting it:\n{marker}", marker)
    assert not cilib.has_marker(cilib.plan_marker("prod2") + "\n", marker)


def item(ident: int, body: str, author: str = "bot") -> Any:
    return cilib.Item(id=ident, body=body, author=author)


def test_the_comment_is_created_once_then_always_the_same_one_updated() -> None:
    m = cilib.plan_marker("prod")
    assert cilib.decide_comment([], m, "bot") == cilib.Decision("create", None, m)
    assert cilib.decide_comment([item(3, "lgtm", "alice")], m, "bot").action == "create"
    found = [item(12, f"{m}\nnewer"), item(5, f"{m}\nolder"), item(4, f"{m}\nforged", "mallory")]
    assert cilib.decide_comment(found, m, "bot") == cilib.Decision("update", 5, m)
    assert cilib.decide_comment(found, m, None) == cilib.Decision("update", 4, m)  # no author given: any
    other_env = [item(6, cilib.plan_marker("staging") + "\n")]
    assert cilib.decide_comment(other_env, m, "bot").action == "create"


@pytest.mark.parametrize(
    ("plan_exit", "open_issue", "expected"),
    [
        (2, False, ("create", None)),
        (2, True, ("update", 42)),
        (0, True, ("close", 42)),
        (0, False, ("none", None)),
        (1, True, ("none", 42)),  # an error leaves the issue alone
        (1, False, ("none", None)),
    ],
)
def test_the_drift_issue_follows_the_plans_exit_code(plan_exit: int, open_issue: bool, expected: Any) -> None:
    m = cilib.drift_marker("prod")
    issues = [item(7, "unrelated"), *([item(42, f"{m}\nold drift")] if open_issue else [])]
    decision = cilib.decide_issue(plan_exit, issues, m, "bot")
    assert (decision.action, decision.target) == expected


def test_listings_of_both_apis_and_several_pages_are_read() -> None:
    github = [{"id": 1, "body": "a", "user": {"login": "bot"}}]
    issues = [
        {"id": 900, "number": 9, "body": "i", "user": {"login": "bot"}},
        {"id": 901, "number": 10, "body": "p", "user": {"login": "bot"}, "pull_request": {}},
    ]
    gitlab_notes = [{"id": 3, "body": "n", "author": {"username": "project_1_bot"}}]
    gitlab_issues = [{"id": 800, "iid": 4, "description": "d", "author": {"username": "project_1_bot"}}]
    text = json.dumps(github) + "\n" + json.dumps(issues) + json.dumps(gitlab_notes) + json.dumps(gitlab_issues)
    assert cilib.parse_items(text) == [
        item(1, "a"),
        item(9, "i"),  # an issue by its number; the pull request is skipped
        item(3, "n", "project_1_bot"),
        item(4, "d", "project_1_bot"),  # a GitLab issue by its iid
    ]
    assert cilib.parse_items("[]") == []
    assert cilib.parse_items("") == []


# --- bodies ---------------------------------------------------------------------------------------------------


def fake_plan(changes: int, *, svcctl_cut: bool = False) -> str:
    """Markdown shaped like `svcctl plan -o markdown`: summary, then the diff folded in <details>."""
    lines = [f"+ # instance.db{n:05d} will be created\n+   storage_mb = 512" for n in range(changes)]
    body = "#### svcctl plan: `prod`\n\n**Plan:** many to add\n\n<details><summary>Show plan</summary>\n\n````diff\n"
    body += "\n".join(lines) + "\n````\n\n</details>\n"
    if svcctl_cut:
        body += "\n_Plan truncated: 12 more changes not shown; run `svcctl plan` locally for the full plan._\n"
    return body


def balanced(body: str) -> None:
    fences = [line for line in body.splitlines() if re.fullmatch(r"`{3,}[\w-]*", line.strip())]
    assert len(fences) % 2 == 0, fences
    assert body.count("<details") == body.count("</details>")


def test_a_plan_that_fits_is_posted_whole_under_the_marker() -> None:
    m = cilib.plan_marker("prod")
    plan = fake_plan(3)
    body = cilib.plan_comment(m, "prod", 2, plan, "", commit="abc123", artifact="svcctl-plan-prod")
    assert body.startswith(m + "\n")
    assert body.endswith(plan)
    assert "changes pending" in body and "`abc123`" in body and "artifact `svcctl-plan-prod`" in body
    assert "Truncated" not in body


@pytest.mark.parametrize("changes", [2_000, 5_000, 40_000])
def test_a_long_plan_is_cut_inside_details_under_githubs_limit_saying_the_artifact_has_it(changes: int) -> None:
    m = cilib.plan_marker("prod")
    body = cilib.plan_comment(m, "prod", 2, fake_plan(changes), "", commit="abc", artifact="svcctl-plan-prod")
    assert len(body) < LIMIT
    assert body.startswith(m + "\n")
    assert "<details><summary>Plan (truncated)</summary>" in body
    assert body.count("Truncated: the whole plan is in the artifact `svcctl-plan-prod` of this run.") == 2
    assert "instance.db00000" in body and f"instance.db{changes - 1:05d}" not in body
    balanced(body)


def test_svcctls_own_cut_is_said_to_be_in_the_artifact() -> None:
    body = cilib.plan_comment("<!-- m -->", "prod", 2, fake_plan(3, svcctl_cut=True), "", commit="c", artifact="a")
    assert "_Plan truncated:" in body and "Truncated: the whole plan is in the artifact `a` of this run." in body


def test_an_error_is_shown_verbatim_and_cannot_close_its_block() -> None:
    error = "svcctl.yaml:3:1: bad ```` fence\n<script>@everyone</script>"
    body = cilib.plan_comment("<!-- m -->", "prod", 1, "", error, commit="c", artifact="a")
    assert ": error" in body and "nothing can be applied" in body
    assert "`````text\n" + error + "\n`````" in body
    balanced(body)
    huge = cilib.plan_comment(
        "<!-- m -->", "prod", 1, "", "x" * 200 + "\n" * 0 + "y\n" * 50_000, commit="c", artifact="a"
    )
    assert len(huge) < LIMIT
    balanced(huge)


def test_a_forks_diff_says_it_is_no_plan() -> None:
    m = cilib.plan_marker("prod")
    body = cilib.diff_comment(m, "prod", 2, "- old\n+ new\n", "", base="b" * 7, head_sha="h" * 7)
    assert body.startswith(m + "\n") and "svcctl diff" in body and "not a plan" in body
    assert "<details open><summary>Diff</summary>" in body
    assert len(cilib.diff_comment(m, "prod", 2, "+ x\n" * 40_000, "", base="b", head_sha="h")) < LIMIT


def test_the_drift_issue_and_its_closing_note() -> None:
    m = cilib.drift_marker("prod")
    body = cilib.drift_issue(m, "prod", fake_plan(40_000), run_url="https://ci/run/1")
    assert body.startswith(m + "\n") and len(body) < LIMIT and "https://ci/run/1" in body
    balanced(body)
    assert cilib.issue_title("prod") == "svcctl: drift in prod"
    assert "exit 0" in cilib.converged_note("prod", "")


def test_the_refusal_is_svcctls_error_paragraph() -> None:
    stderr = "Observing lab-1...\nerror: the saved plan p is stale: the hosts changed since it was made:\n"
    stderr += "instance.a changed.\n"
    assert (
        cilib.refusal(stderr) == "the saved plan p is stale: the hosts changed since it was made:\ninstance.a changed."
    )
    assert cilib.refusal("boom\n\n") == "boom"
    assert cilib.refusal("") == "svcctl failed with no message"
    summary = cilib.apply_summary("prod", False, "the saved plan p is stale", "")
    assert "refused, nothing applied" in summary and "is stale" in summary


# --- choosing the reviewed plan -------------------------------------------------------------------------------


def gh_run(ident: int, **kw: Any) -> dict[str, Any]:
    base = {
        "id": ident, "head_sha": "h1", "event": "pull_request", "conclusion": "success",
        "head_repository": {"full_name": "acme/infra"}, "created_at": f"2026-12-01T10:{ident:02d}:00Z",
    }  # fmt: skip
    return {**base, **kw}


def test_the_reviewed_plan_is_the_last_successful_run_of_the_pull_requests_head_in_this_repository() -> None:
    runs = {
        "workflow_runs": [
            gh_run(1),
            gh_run(2),
            gh_run(3, conclusion="failure"),
            gh_run(4, head_sha="h0"),
            gh_run(5, head_repository={"full_name": "mallory/infra"}),
            gh_run(6, event="push"),
        ]
    }
    assert cilib.choose_plan_run(runs, "h1", "acme/infra") == 2
    assert cilib.choose_plan_run(runs, "h9", "acme/infra") is None
    assert cilib.choose_plan_run({}, "h1", "acme/infra") is None


def test_gitlab_the_merged_merge_request_of_this_project_and_its_plan_job() -> None:
    mrs = [
        {"iid": 1, "state": "opened", "sha": "s", "source_project_id": 1, "target_project_id": 1},
        {"iid": 2, "state": "merged", "merge_commit_sha": "s", "source_project_id": 9, "target_project_id": 1},
        {"iid": 3, "state": "merged", "squash_commit_sha": "s", "source_project_id": 1, "target_project_id": 1},
    ]
    assert cilib.choose_gitlab_mr(mrs, "s")["iid"] == 3  # 2 came from a fork
    assert cilib.choose_gitlab_mr(mrs[:2], "s") is None
    jobs = [
        {"id": 10, "name": "svcctl-plan", "status": "success"},
        {"id": 12, "name": "svcctl-plan", "status": "failed"},
        {"id": 11, "name": "svcctl-plan", "status": "success"},
        {"id": 13, "name": "other", "status": "success"},
    ]
    assert cilib.choose_gitlab_job(jobs, "svcctl-plan") == 11
    assert cilib.choose_gitlab_job(jobs, "nope") is None


# --- the posting step -----------------------------------------------------------------------------------------


def state(action: str, kind: str, target: int | None = None) -> dict[str, Any]:
    return {"action": action, "kind": kind, "target": target, "body_file": "body.md", "title": "svcctl: drift in p"}


def test_github_calls_post_the_body_from_its_file() -> None:
    out = Path("/w/out")
    calls = post.github_calls
    assert calls(state("create", "comment"), "acme/infra", 7, out) == [
        ["gh", "api", "--method", "POST", "repos/acme/infra/issues/7/comments", "-F", "body=@/w/out/body.md"]
    ]
    assert calls(state("update", "comment", 55), "acme/infra", 7, out) == [
        ["gh", "api", "--method", "PATCH", "repos/acme/infra/issues/comments/55", "-F", "body=@/w/out/body.md"]
    ]
    assert calls(state("create", "issue"), "acme/infra", None, out)[0][4:] == [
        "repos/acme/infra/issues", "-f", "title=svcctl: drift in p", "-F", "body=@/w/out/body.md"
    ]  # fmt: skip
    assert calls(state("update", "issue", 42), "acme/infra", None, out)[0][3:5] == [
        "PATCH",
        "repos/acme/infra/issues/42",
    ]
    closing = calls(state("close", "issue", 42), "acme/infra", None, out)
    assert [c[3:5] for c in closing] == [
        ["POST", "repos/acme/infra/issues/42/comments"],
        ["PATCH", "repos/acme/infra/issues/42"],
    ]
    assert closing[1][-2:] == ["-f", "state=closed"]
    assert calls(state("none", "issue", 42), "acme/infra", None, out) == []


def test_gitlab_calls() -> None:
    calls = post.gitlab_calls
    assert calls(state("create", "comment"), "12", 3, "B") == [
        ("POST", "/projects/12/merge_requests/3/notes", {"body": "B"})
    ]
    assert calls(state("update", "comment", 8), "grp/proj", 3, "B") == [
        ("PUT", "/projects/grp%2Fproj/merge_requests/3/notes/8", {"body": "B"})
    ]
    assert calls(state("create", "issue"), "12", None, "B") == [
        ("POST", "/projects/12/issues", {"title": "svcctl: drift in p", "description": "B"})
    ]
    assert [c[0:2] for c in calls(state("close", "issue", 4), "12", None, "B")] == [
        ("POST", "/projects/12/issues/4/notes"), ("PUT", "/projects/12/issues/4")
    ]  # fmt: skip
    assert calls(state("none", "issue"), "12", None, "B") == []


# --- the script's command line --------------------------------------------------------------------------------


def test_ssh_key_is_written_0600_with_its_final_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    begin, end = "-----BEGIN OPENSSH " + "PRIVATE KEY-----", "-----END OPENSSH " + "PRIVATE KEY-----"  # no hook trips
    monkeypatch.setenv("SVCCTL_SSH_KEY", f"{begin}\r\nabc\r\n{end}")
    target = tmp_path / "ssh" / "id"
    assert svcctl_ci.main(["ssh-key", "--to", str(target)]) == 0
    assert target.read_text() == f"{begin}\nabc\n{end}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    monkeypatch.setenv("SVCCTL_SSH_KEY", "")
    assert svcctl_ci.main(["ssh-key", "--to", str(target)]) == 1
    (tmp_path / "file-var").write_text("KEY\n")
    assert svcctl_ci.main(["ssh-key", "--from-file", str(tmp_path / "file-var"), "--to", str(target)]) == 0
    assert target.read_text() == "KEY\n"


def test_usage_errors_exit_1_not_2_which_means_changes() -> None:
    res = run(sys.executable, SCRIPTS / "svcctl_ci.py", "pr")
    assert res.returncode == 1 and "svcctl-ci: error:" in res.stderr
    assert run(sys.executable, SCRIPTS / "post.py", "github").returncode == 1


def test_merge_without_a_reviewed_plan_refuses_before_running_svcctl(tmp_path: Path) -> None:
    env = {**os.environ, "SVCCTL_BIN": "/nonexistent/svcctl"}  # it must not even be started
    res = subprocess.run(
        [sys.executable, str(SCRIPTS / "svcctl_ci.py"), "merge", "--plan", str(tmp_path / "none.plan"),
         "--env", str(tmp_path), "--out-dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "no reviewed plan at" in res.stderr and "Traceback" not in res.stderr
    assert json.loads((tmp_path / "out" / "state.json").read_text())["applied"] is False


FORK_BASE = """\
environment: shop
nodes:
  db-1: {host: 10.0.0.1, user: deploy, engines: [postgres], capacity: {memory_mb: 1024, storage_mb: 4096}}
services:
  postgres: {engine: postgres, versions: ["15"]}
plans:
  pg-small: {service: postgres, storage_mb: 512, connections: 20}
instances:
  orders-db: {plan: pg-small, node: db-1}
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_a_forks_pull_request_gets_svcctl_diff_with_no_key_and_no_ssh(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    env_dir = repo / "environments" / "shop"
    env_dir.mkdir(parents=True)
    (env_dir / "svcctl.yaml").write_text(FORK_BASE)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    (env_dir / "svcctl.yaml").write_text(FORK_BASE + "  extra-db: {plan: pg-small, node: db-1}\n")
    git(repo, "commit", "-q", "-am", "two")
    base, head = git(repo, "rev-parse", "HEAD~1", "HEAD").split()
    environ = {k: v for k, v in os.environ.items() if k not in ("SVCCTL_KEY", "SVCCTL_KEY_FILE")}
    environ.update(HOME=str(tmp_path), SVCCTL_BIN=f"{sys.executable} -m svcctl")  # no key anywhere
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, str(SCRIPTS / "svcctl_ci.py"), "pr", "--fork", "--base", base, "--head", head,
         "--env", "environments/shop", "--label", "shop", "--out-dir", str(out)],
        cwd=repo, capture_output=True, text=True, env=environ, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    decided = json.loads((out / "state.json").read_text())
    assert decided == {**decided, "action": "create", "mode": "diff", "svcctl_exit_code": 2, "plan_file": None}
    body = (out / "comment.md").read_text()
    assert body.startswith("<!-- svcctl-plan: shop -->\n") and "svcctl diff for `shop`: the environment changes" in body
    assert "extra-db" in body and len(body) < LIMIT
    assert not (out / "svcctl.plan").exists()
