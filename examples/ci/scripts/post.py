#!/usr/bin/env python3
"""The thin posting step: carry out what `svcctl_ci.py` decided (state.json) on GitHub or GitLab.

  post.py github --state DIR/state.json --repo OWNER/NAME [--number PR]   through `gh api` ($GH_TOKEN)
  post.py gitlab --state DIR/state.json [--mr IID]                         through the REST API
  post.py gitlab-list notes|issues --out FILE                              what is already there, for --existing
  post.py gitlab-fetch-plan --sha SHA --job NAME --path FILE --to FILE     the merged MR's reviewed plan

GitLab calls use $CI_API_V4_URL and $CI_PROJECT_ID (set by GitLab) and the token in $GITLAB_API_TOKEN (a
project access token with the `api` scope, a masked CI/CD variable); the token goes in a header, never in
a process argument. Bodies are read from files, never put on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import cilib


class PostError(Exception):
    """A failure reported in one line, exit 1."""


def load_state(path: Path) -> dict[str, Any]:
    """The decision file svcctl_ci.py wrote."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PostError(f"cannot read the state file {path}: {exc}") from exc
    return state


def github_calls(state: dict[str, Any], repo: str, number: int | None, out_dir: Path) -> list[list[str]]:
    """The `gh api` command lines that carry out the decision (none for "none")."""
    action, target = state["action"], state.get("target")
    body = f"body=@{out_dir / state['body_file']}" if state.get("body_file") else ""
    if state["kind"] == "comment":
        if number is None:
            raise PostError("a pull request comment needs --number")
        if action == "create":
            return [["gh", "api", "--method", "POST", f"repos/{repo}/issues/{number}/comments", "-F", body]]
        if action == "update":
            return [["gh", "api", "--method", "PATCH", f"repos/{repo}/issues/comments/{target}", "-F", body]]
        return []
    if action == "create":
        return [["gh", "api", "--method", "POST", f"repos/{repo}/issues", "-f", f"title={state['title']}", "-F", body]]
    if action == "update":
        return [["gh", "api", "--method", "PATCH", f"repos/{repo}/issues/{target}", "-F", body]]
    if action == "close":
        return [
            ["gh", "api", "--method", "POST", f"repos/{repo}/issues/{target}/comments", "-F", body],
            ["gh", "api", "--method", "PATCH", f"repos/{repo}/issues/{target}", "-f", "state=closed"],
        ]
    return []


def gitlab_calls(
    state: dict[str, Any], project: str, mr: int | None, body: str
) -> list[tuple[str, str, dict[str, str]]]:
    """The REST calls (method, path, form) that carry out the decision on GitLab (none for "none")."""
    action, target = state["action"], state.get("target")
    base = f"/projects/{urllib.parse.quote(project, safe='')}"
    if state["kind"] == "comment":
        if mr is None:
            raise PostError("a merge request note needs --mr")
        if action == "create":
            return [("POST", f"{base}/merge_requests/{mr}/notes", {"body": body})]
        if action == "update":
            return [("PUT", f"{base}/merge_requests/{mr}/notes/{target}", {"body": body})]
        return []
    if action == "create":
        return [("POST", f"{base}/issues", {"title": state["title"], "description": body})]
    if action == "update":
        return [("PUT", f"{base}/issues/{target}", {"description": body})]
    if action == "close":
        return [
            ("POST", f"{base}/issues/{target}/notes", {"body": body}),
            ("PUT", f"{base}/issues/{target}", {"state_event": "close"}),
        ]
    return []


def gitlab_request(method: str, path: str, form: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    """One GitLab API call with the token from the environment: (body, headers)."""
    api = os.environ.get("CI_API_V4_URL", "")
    token = os.environ.get("GITLAB_API_TOKEN", "")
    if not api.startswith("https://"):
        raise PostError(f"CI_API_V4_URL must be an https:// URL, not {api!r}")
    if not token:
        raise PostError("GITLAB_API_TOKEN is empty: add a project access token (api scope) as a masked variable")
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(api + path, data=data, method=method, headers={"PRIVATE-TOKEN": token})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 (https only, checked above)
            return resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise PostError(f"GitLab {method} {path} failed: {exc}") from exc


def gitlab_list(path: str) -> list[Any]:
    """Every page of a GitLab listing."""
    items: list[Any] = []
    page = "1"
    while page:
        sep = "&" if "?" in path else "?"
        raw, headers = gitlab_request("GET", f"{path}{sep}per_page=100&page={page}")
        items += json.loads(raw)
        page = headers.get("x-next-page", "")
    return items


def project() -> str:
    """This project's id, as GitLab sets it."""
    ident = os.environ.get("CI_PROJECT_ID", "")
    if not ident:
        raise PostError("CI_PROJECT_ID is not set: run this in a GitLab CI job")
    return ident


def cmd_github(a: argparse.Namespace) -> int:
    """Post, update or close on GitHub with gh."""
    state_path = Path(a.state)
    for argv in github_calls(load_state(state_path), a.repo, a.number, state_path.parent):
        res = subprocess.run(argv, stdout=subprocess.DEVNULL, check=False)
        if res.returncode != 0:
            raise PostError(f"{' '.join(argv[:4])} failed (exit {res.returncode})")
    return 0


def cmd_gitlab(a: argparse.Namespace) -> int:
    """Post, update or close on GitLab."""
    state_path = Path(a.state)
    state = load_state(state_path)
    body = (state_path.parent / state["body_file"]).read_text() if state.get("body_file") else ""
    for method, path, form in gitlab_calls(state, project(), a.mr, body):
        gitlab_request(method, path, form)
    return 0


def cmd_gitlab_list(a: argparse.Namespace) -> int:
    """Save the merge request's notes or the open issues, for svcctl_ci.py --existing."""
    base = f"/projects/{urllib.parse.quote(project(), safe='')}"
    if a.what == "notes":
        mr = os.environ.get("CI_MERGE_REQUEST_IID", "")
        if not mr:
            raise PostError("CI_MERGE_REQUEST_IID is not set: run this in a merge request pipeline")
        items = gitlab_list(f"{base}/merge_requests/{mr}/notes?sort=asc")
    else:
        items = gitlab_list(f"{base}/issues?state=opened")
    Path(a.out).write_text(json.dumps(items))
    return 0


def cmd_gitlab_fetch_plan(a: argparse.Namespace) -> int:
    """Download the reviewed plan: the artifact of job --job in the merged merge request's head pipeline."""
    base = f"/projects/{urllib.parse.quote(project(), safe='')}"
    mr = cilib.choose_gitlab_mr(gitlab_list(f"{base}/repository/commits/{a.sha}/merge_requests"), a.sha)
    if mr is None:
        print(f"post.py: commit {a.sha} merged no merge request of this project: no reviewed plan", file=sys.stderr)
        return 1
    detail = json.loads(gitlab_request("GET", f"{base}/merge_requests/{mr['iid']}")[0])
    pipeline = detail.get("head_pipeline") or {}
    job = None
    if isinstance(pipeline.get("id"), int):  # its last pipeline: svcctl refuses a plan of another YAML anyway
        job = cilib.choose_gitlab_job(gitlab_list(f"{base}/pipelines/{pipeline['id']}/jobs?scope[]=success"), a.job)
    if job is None:
        print(f"post.py: merge request !{mr['iid']} has no successful {a.job} job for its last commit", file=sys.stderr)
        return 1
    raw, _ = gitlab_request("GET", f"{base}/jobs/{job}/artifacts/{urllib.parse.quote(a.path)}")
    target = Path(a.to)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(raw)
    print(f"post.py: the reviewed plan of !{mr['iid']} (job {job}) is in {target}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 like every error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"post.py: error: {message}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run one posting command; a failure is one line on stderr and exit 1."""
    p = Parser(prog="post.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    gh = sub.add_parser("github")
    gh.add_argument("--state", required=True)
    gh.add_argument("--repo", required=True)
    gh.add_argument("--number", type=int)
    gh.set_defaults(func=cmd_github)
    gl = sub.add_parser("gitlab")
    gl.add_argument("--state", required=True)
    gl.add_argument("--mr", type=int)
    gl.set_defaults(func=cmd_gitlab)
    ls = sub.add_parser("gitlab-list")
    ls.add_argument("what", choices=["notes", "issues"])
    ls.add_argument("--out", required=True)
    ls.set_defaults(func=cmd_gitlab_list)
    fp = sub.add_parser("gitlab-fetch-plan")
    fp.add_argument("--sha", required=True)
    fp.add_argument("--job", required=True)
    fp.add_argument("--path", required=True, help="the plan's path inside the job's artifacts")
    fp.add_argument("--to", required=True)
    fp.set_defaults(func=cmd_gitlab_fetch_plan)
    args = p.parse_args(argv)
    try:
        code: int = args.func(args)
    except (PostError, OSError, ValueError, KeyError) as exc:
        print(f"post.py: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
