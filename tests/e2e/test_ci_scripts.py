"""The example CI's scripts (examples/ci/scripts) on the lab: the pull request's sticky comment, the drift
issue, and the merge's apply of the reviewed plan, refused once stale.

The scripts only write files (a body and `state.json`) for a thin step to post, so these tests read those
files; what is "already posted" is given to the scripts as the JSON an API listing returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svcctl.model.names import sql_ident
from tests.conftest import REPO, Lab
from tests.e2e.applying import LOCK_WAIT_S, apply, destroy_all, held_by_another_apply
from tests.e2e.envs import NODES, TEST_KEY, Env, make_env

SCRIPT = REPO / "examples" / "ci" / "scripts" / "svcctl_ci.py"
HOST = "lab-1"
BOT = "github-actions[bot]"
GITHUB_LIMIT = 65_536


def ci(*args: str, retry_locked: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CI script as a job would: svcctl from this checkout, the tests' key, no terminal."""
    environ = {
        **os.environ,
        "SVCCTL_KEY": TEST_KEY,
        "SVCCTL_BIN": f"{sys.executable} -m svcctl",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        res = subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, env=environ, input=""
        )
        if retry_locked and res.returncode == 1 and held_by_another_apply(res.stderr) and time.monotonic() < deadline:
            time.sleep(3)  # another engineer's apply holds a lab host's lock
            continue
        return res


def state(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "state.json").read_text())
    return doc


def posted(item_id: int, body: str, author: str = BOT, **extra: Any) -> dict[str, Any]:
    """An item as GitHub's API lists it."""
    return {"id": item_id, "body": body, "user": {"login": author}, **extra}


def one_instance(env: Env, *extra: str) -> str:
    instances = "".join(f"  {name}: {{plan: pg-small, node: {HOST}, protect: false}}\n" for name in (env.pg(), *extra))
    return f"instances:\n{instances}"


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """A throwaway environment with one PostgreSQL instance on lab-1, destroyed afterwards whatever happened."""
    e = make_env(tmp_path, unique)
    e.write(one_instance(e))
    try:
        yield e
    finally:
        destroy_all(e)


def test_the_pull_request_comment_is_one_sticky_comment_under_githubs_limit_updated_in_place(
    env: Env, tmp_path: Path
) -> None:
    # A plan too long for one comment: svcctl's Markdown cuts it, and the comment says the artifact has it all.
    tiny = "  pg-tiny: {service: postgres, storage_mb: 64, connections: 2}\n"
    names = [f"{env.pg()}-{n:03d}" for n in range(220)]
    env.write_raw(
        NODES.format(lab2_extra="").replace("plans:\n", "plans:\n" + tiny)
        + "instances:\n"
        + "".join(f"  {name}: {{plan: pg-tiny, protect: false}}\n" for name in names)
    )
    first = tmp_path / "run1"
    res = ci("pr", "--env", str(env.path), "--label", env.name, "--out-dir", str(first), "--author", BOT,
             "--commit", "0123abc", "--artifact", "svcctl-plan-prod",
             "--existing", str(tmp_path / "none.json"))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    marker = f"<!-- svcctl-plan: {env.name} -->"
    decided = state(first)
    assert (decided["action"], decided["target"], decided["marker"]) == ("create", None, marker)
    assert (decided["svcctl_exit_code"], decided["plan_file"], decided["mode"]) == (2, "svcctl.plan", "plan")
    body = (first / "comment.md").read_text()
    assert body.startswith(marker + "\n")
    assert len(body) < GITHUB_LIMIT
    assert "<details>" in body and "</details>" in body
    assert f"instance.{names[0]}" in body
    assert f"instance.{names[-1]} will be created" not in body  # cut...
    assert "Truncated: the whole plan is in the artifact `svcctl-plan-prod` of this run." in body  # ...and said
    saved = json.loads((first / "svcctl.plan").read_text())
    assert saved["environment"] == env.name
    assert len([c for c in saved["plan"]["changes"] if c["address"].startswith(f"instance.{env.pg()}")]) == 220

    # Someone else's comment carries the marker too; it is never the one edited.
    listing = [posted(7, f"{marker}\nnot the bot's", author="mallory"), posted(8, "lgtm", author="al"), posted(9, body)]
    existing = tmp_path / "comments.json"
    existing.write_text(json.dumps(listing[:2]) + json.dumps(listing[2:]))  # two pages, as gh --paginate gives
    second = tmp_path / "run2"
    res = ci("pr", "--env", str(env.path), "--label", env.name, "--out-dir", str(second), "--author", BOT,
             "--existing", str(existing))  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    decided = state(second)
    assert (decided["action"], decided["target"], decided["marker"]) == ("update", 9, marker)
    assert (second / "comment.md").read_text().startswith(marker + "\n")


def test_a_failing_plan_is_posted_as_the_error_and_fails_the_job(env: Env, tmp_path: Path) -> None:
    env.write(one_instance(env) + "  broken: {plan: no-such-plan}\n")
    out = tmp_path / "out"
    res = ci("pr", "--env", str(env.path), "--label", env.name, "--out-dir", str(out))
    env.write(one_instance(env))  # for the finalizer, which applies the YAML
    assert res.returncode == 1, res.stdout + res.stderr
    body = (out / "comment.md").read_text()
    assert "svcctl plan for" in body and ": error" in body and "no-such-plan" in body
    assert state(out)["plan_file"] is None and state(out)["action"] == "create"
    assert "Traceback" not in res.stderr


def test_the_drift_issue_is_opened_on_drift_updated_closed_once_converged_and_untouched_on_error(
    lab: Lab, env: Env, tmp_path: Path
) -> None:
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    marker = f"<!-- svcctl-drift: {env.name} -->"

    def drift(run: str, listing: list[dict[str, Any]]) -> tuple[subprocess.CompletedProcess[str], Path]:
        out = tmp_path / run
        existing = tmp_path / f"{run}.json"
        existing.write_text(json.dumps(listing))
        res = ci("drift", "--env", str(env.path), "--label", env.name, "--out-dir", str(out), "--author", BOT,
                 "--existing", str(existing), "--run-url", "https://ci.example/run/1")  # fmt: skip
        return res, out

    # Converged, no issue open: nothing to do.
    res, out = drift("clean", [])
    assert res.returncode == 0, res.stdout + res.stderr
    assert (state(out)["action"], state(out)["svcctl_exit_code"]) == ("none", 0)

    # Drift made by hand: the database dropped behind svcctl's back.
    db = sql_ident(env.pg())
    lab.ssh(HOST, f'sudo -u postgres psql -XAtq -c "DROP DATABASE {db}"')
    pull_request = posted(40, f"{marker}\nlooks like one", pull_request={"url": "x"})  # PRs are not issues
    res, out = drift("drifted", [pull_request])
    assert res.returncode == 0, res.stdout + res.stderr
    decided = state(out)
    assert (decided["action"], decided["target"], decided["svcctl_exit_code"]) == ("create", None, 2)
    assert decided["title"] == f"svcctl: drift in {env.name}"
    body = (out / "issue.md").read_text()
    assert body.startswith(marker + "\n") and len(body) < GITHUB_LIMIT
    assert f"instance.{env.pg()}" in body and "deleted outside svcctl" in body

    # The next check finds the issue it opened (number 42) and updates it, not a second one.
    res, out = drift("again", [posted(41, "unrelated issue"), posted(9042, body, number=42)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert (state(out)["action"], state(out)["target"]) == ("update", 42)

    # An error (exit 1) fails the job and leaves the open issue alone.
    good = (env.path / "svcctl.yaml").read_text()
    (env.path / "svcctl.yaml").write_text(good + "bogus_key: 1\n")
    res, out = drift("error", [posted(9042, body, number=42)])
    assert res.returncode == 1, res.stdout + res.stderr
    assert (state(out)["action"], state(out)["svcctl_exit_code"]) == ("none", 1)
    assert not (out / "issue.md").exists()
    (env.path / "svcctl.yaml").write_text(good)

    # Repaired: the check closes the issue, with a note.
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    res, out = drift("converged", [posted(9042, body, number=42)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert (state(out)["action"], state(out)["target"], state(out)["svcctl_exit_code"]) == ("close", 42, 0)
    assert "found nothing to do (exit 0)" in (out / "issue.md").read_text()


def test_the_merge_applies_the_reviewed_plan_and_refuses_it_once_the_yaml_or_the_hosts_moved(
    lab: Lab, env: Env, tmp_path: Path
) -> None:
    review = tmp_path / "review"
    res = ci("pr", "--env", str(env.path), "--label", env.name, "--out-dir", str(review))
    assert res.returncode == 0, res.stdout + res.stderr
    plan = review / "svcctl.plan"

    # The YAML moved after review (another instance merged meanwhile): refused, saying what, nothing applied.
    extra = f"ex{env.token}"
    env.write(one_instance(env, extra))
    out = tmp_path / "merge1"
    res = ci("merge", "--plan", str(plan), "--env", str(env.path), "--out-dir", str(out), retry_locked=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"instance.{extra} was added to the YAML ({env.path / 'svcctl.yaml'}:" in res.stderr
    assert "svcctl-ci: the reviewed plan was not applied:" in res.stderr
    assert state(out) == {**state(out), "applied": False, "svcctl_exit_code": 1}
    assert f"instance.{extra} was added to the YAML" in state(out)["reason"]
    assert "refused, nothing applied" in (out / "apply.md").read_text()
    exists = f"select 1 from pg_database where datname = '{sql_ident(env.pg())}'"
    assert lab.ssh(HOST, f'sudo -u postgres psql -XAtc "{exists}"').stdout.strip() == ""

    # As reviewed: applied.
    env.write(one_instance(env))
    out = tmp_path / "merge2"
    res = ci("merge", "--plan", str(plan), "--env", str(env.path), "--out-dir", str(out), retry_locked=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert state(out)["applied"] is True
    assert lab.ssh(HOST, f'sudo -u postgres psql -XAtc "{exists}"').stdout.strip() == "1"

    # The same plan again: the hosts moved since it was made (it was applied), so it is stale.
    out = tmp_path / "merge3"
    res = ci("merge", "--plan", str(plan), "--env", str(env.path), "--out-dir", str(out), retry_locked=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "is stale: the hosts changed since it was made" in state(out)["reason"]

    # No reviewed plan at all (a direct push): refused before svcctl runs.
    out = tmp_path / "merge4"
    res = ci("merge", "--plan", str(tmp_path / "absent.plan"), "--env", str(env.path), "--out-dir", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "no reviewed plan at" in res.stderr and "Traceback" not in res.stderr
