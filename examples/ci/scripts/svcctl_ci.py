#!/usr/bin/env python3
"""svcctl's CI jobs as one script: the pull request's plan, the merge's apply, the scheduled drift check.

Each job runs svcctl and writes what must be posted into --out-dir (a body file and `state.json`: what to
create, update or close); a thin step of the pipeline posts it (`post.py`). So the logic is tested here, on a
lab, and the pipelines stay a few lines each. Standard library only. Exit codes:

  pr      0: the plan (or a fork's diff) is in the body, changes or not; 1: svcctl failed (the body says why)
  drift   0: state.json says what to do with the issue (drift: create or update; converged: close); 1: error,
          the issue must not be touched
  merge   0: the reviewed plan was applied; 1: refused (stale, or no reviewed plan) or failed, nothing applied
  ssh-key 0: the key from $SVCCTL_SSH_KEY (or --from-file) is written (0600); 1: empty or not written
  pick-run  prints the id of the run holding a merged pull request's reviewed plan; 1: there is none
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import cilib

STATE = "state.json"
PLAN_FILE = "svcctl.plan"


class CiError(Exception):
    """A failure the job reports in one line and exits 1 for."""


def svcctl_command() -> list[str]:
    """How to run svcctl: $SVCCTL_BIN (split like a shell word list, e.g. `python -m svcctl`), else `svcctl`."""
    return shlex.split(os.environ.get("SVCCTL_BIN", "svcctl")) or ["svcctl"]


def run_svcctl(*args: str) -> subprocess.CompletedProcess[str]:
    """svcctl with its output captured; no terminal, so it never asks anything."""
    try:
        return subprocess.run([*svcctl_command(), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise CiError(f"cannot run svcctl ({exc.strerror}): install it, or set SVCCTL_BIN") from exc


def read_items(path: Path | None) -> list[cilib.Item]:
    """The comments or issues the listing step saved (missing or empty: none yet)."""
    if path is None or not path.exists() or not path.read_text().strip():
        return []
    try:
        return cilib.parse_items(path.read_text())
    except ValueError as exc:
        raise CiError(f"{path} is not the JSON an API listing gives ({exc})") from exc


def write(out: Path, name: str, text: str) -> Path:
    """Write one output file of the job."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    target.write_text(text)
    return target


def cmd_pr(a: argparse.Namespace) -> int:
    """The pull request's plan (or, for a fork, `svcctl diff`) as one sticky comment, and the saved plan."""
    out = Path(a.out_dir)
    label = a.label or a.env
    marker = cilib.plan_marker(label)
    decision = cilib.decide_comment(read_items(a.existing), marker, a.author or None)
    if a.fork:
        if not (a.base and a.head):
            raise CiError("--fork needs --base and --head (the pull request's base and head commits)")
        res = run_svcctl("diff", a.base, a.head, "--env", a.env, "-o", "markdown")
        body = cilib.diff_comment(marker, label, res.returncode, res.stdout, res.stderr, base=a.base, head_sha=a.head)
        plan_file = None
    else:
        out.mkdir(parents=True, exist_ok=True)
        plan_path = out / PLAN_FILE
        res = run_svcctl("plan", a.env, "--detailed-exitcode", "-o", "markdown", "--no-color", "--out", str(plan_path))
        body = cilib.plan_comment(
            marker, label, res.returncode, res.stdout, cilib.refusal(res.stderr) if res.returncode not in (0, 2)
            else "", commit=a.commit or "HEAD", artifact=a.artifact
        )  # fmt: skip
        plan_file = PLAN_FILE if res.returncode in (0, 2) and plan_path.exists() else None
    write(out, "comment.md", body)
    state = cilib.state_json(
        decision, kind="comment", body_file="comment.md", mode="diff" if a.fork else "plan",
        svcctl_exit_code=res.returncode, plan_file=plan_file,
    )  # fmt: skip
    write(out, STATE, state)
    sys.stderr.write(res.stderr)
    print(f"svcctl-ci: {decision.action} the comment {marker} (svcctl exited {res.returncode}); body in {out}")
    return 0 if res.returncode in (0, 2) else 1


def cmd_drift(a: argparse.Namespace) -> int:
    """The scheduled drift check: one issue per environment, opened or updated on exit 2, closed on 0."""
    out = Path(a.out_dir)
    label = a.label or a.env
    marker = cilib.drift_marker(label)
    res = run_svcctl("plan", a.env, "--detailed-exitcode", "-o", "markdown", "--no-color")
    decision = cilib.decide_issue(res.returncode, read_items(a.existing), marker, a.author or None)
    if res.returncode == 2:
        write(out, "issue.md", cilib.drift_issue(marker, label, res.stdout, run_url=a.run_url))
    elif res.returncode == 0:
        write(out, "issue.md", cilib.converged_note(label, a.run_url))
    write(
        out, STATE, cilib.state_json(
            decision, kind="issue", body_file="issue.md" if res.returncode in (0, 2) else None,
            title=cilib.issue_title(label), svcctl_exit_code=res.returncode,
        ),
    )  # fmt: skip
    if res.returncode not in (0, 2):
        sys.stderr.write(res.stderr)
        print(f"svcctl-ci: the plan failed (exit {res.returncode}); the drift issue is left as it is", file=sys.stderr)
        return 1
    print(f"svcctl-ci: svcctl plan exited {res.returncode}: {decision.action} the issue {marker}")
    return 0


def cmd_merge(a: argparse.Namespace) -> int:
    """Apply the reviewed plan exactly; svcctl refuses a stale one, and this says why and exits 1."""
    out = Path(a.out_dir)
    label = a.label or a.env
    plan = Path(a.plan)
    if not plan.is_file():
        reason = (
            f"no reviewed plan at {plan}: this commit merged no pull request whose last plan succeeded in this "
            "repository (a direct push, a fork's pull request, or a plan that failed). Nothing was applied."
        )
        applied, code = False, 1
    else:
        command = [*svcctl_command(), "apply", str(plan), "--env", a.env, "--no-color"]
        try:
            proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        except OSError as exc:
            raise CiError(f"cannot run svcctl ({exc.strerror}): install it, or set SVCCTL_BIN") from exc
        assert proc.stderr is not None
        errors: list[str] = []
        for line in proc.stderr:  # apply's progress, live in the job's log, and kept for the reason
            sys.stderr.write(line)
            errors.append(line)
        code = proc.wait()
        applied = code == 0
        reason = "" if applied else cilib.refusal("".join(errors))
    write(out, "apply.md", cilib.apply_summary(label, applied, reason, a.run_url))
    write(out, STATE, json.dumps({"applied": applied, "svcctl_exit_code": code, "reason": reason}, indent=2) + "\n")
    if not applied:
        print(f"svcctl-ci: the reviewed plan was not applied: {reason}", file=sys.stderr)
        return 1
    print("svcctl-ci: the reviewed plan was applied")
    return 0


def cmd_pick_run(a: argparse.Namespace) -> int:
    """Print the id of the plan workflow's run holding the merged pull request's reviewed plan."""
    try:
        runs = json.loads(Path(a.runs).read_text())
    except (OSError, ValueError) as exc:
        raise CiError(f"cannot read the workflow runs in {a.runs}: {exc}") from exc
    run = cilib.choose_plan_run(runs, a.head_sha, a.repo)
    if run is None:
        print(f"svcctl-ci: no successful plan run of {a.repo} for commit {a.head_sha}", file=sys.stderr)
        return 1
    print(run)
    return 0


def cmd_ssh_key(a: argparse.Namespace) -> int:
    """Write the SSH private key from $SVCCTL_SSH_KEY (the CI's secret) to the file the YAML names, 0600."""
    if a.from_file:  # GitLab's File-type variable: the variable holds the path of a file with the key
        key = Path(a.from_file).read_text().replace("\r\n", "\n").strip()
    else:
        key = os.environ.get("SVCCTL_SSH_KEY", "").replace("\r\n", "\n").strip()
    if not key:
        raise CiError("the SSH key is empty: give the job SVCCTL_SSH_KEY, the private key, from the CI's secret store")
    target = Path(a.to).expanduser()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")  # OpenSSH refuses a key without its final newline, which secret stores often drop
    target.chmod(0o600)
    print(f"svcctl-ci: wrote the SSH key to {target} (0600)")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 like every error (2 would read as "changes pending")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"svcctl-ci: error: {message}", file=sys.stderr)
        sys.exit(1)


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per job."""
    p = Parser(prog="svcctl_ci.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(s: argparse.ArgumentParser) -> None:
        s.add_argument("--env", required=True, help="the environment's directory or file in the checkout")
        s.add_argument("--label", help="the environment's name in markers and titles (default: --env)")
        s.add_argument("--out-dir", required=True, help="where the body, state.json (and the plan) go")
        s.add_argument("--run-url", default="", help="a link to this run, for bodies")

    pr = sub.add_parser("pr", help="plan a pull request (or diff a fork's) into one sticky comment")
    common(pr)
    pr.add_argument("--existing", type=Path, help="JSON of the pull request's comments (as the API lists them)")
    pr.add_argument("--author", help="only a comment by this account is updated (the CI's bot)")
    pr.add_argument("--artifact", default="svcctl-plan", help="the name the saved plan is uploaded under")
    pr.add_argument("--commit", help="the head commit, for the comment")
    pr.add_argument("--fork", action="store_true", help="no secrets: run `svcctl diff BASE HEAD` instead")
    pr.add_argument("--base", help="with --fork: the base commit")
    pr.add_argument("--head", help="with --fork: the head commit")
    pr.set_defaults(func=cmd_pr)

    drift = sub.add_parser("drift", help="scheduled drift check into one issue")
    common(drift)
    drift.add_argument("--existing", type=Path, help="JSON of the open issues (as the API lists them)")
    drift.add_argument("--author", help="only an issue by this account is updated or closed (the CI's bot)")
    drift.set_defaults(func=cmd_drift)

    merge = sub.add_parser("merge", help="apply the reviewed plan, refused if stale")
    common(merge)
    merge.add_argument("--plan", required=True, help="the reviewed plan file (the pull request's artifact)")
    merge.set_defaults(func=cmd_merge)

    pick = sub.add_parser("pick-run", help="which run holds a merged pull request's reviewed plan (GitHub)")
    pick.add_argument("--runs", required=True, help="JSON of the plan workflow's runs for the head commit")
    pick.add_argument("--head-sha", required=True)
    pick.add_argument("--repo", required=True, help="owner/name of this repository")
    pick.set_defaults(func=cmd_pick_run)

    key = sub.add_parser("ssh-key", help="write $SVCCTL_SSH_KEY to the identity file the YAML names")
    key.add_argument("--to", required=True, help="the path (~ is expanded)")
    key.add_argument("--from-file", help="read the key from this file instead of $SVCCTL_SSH_KEY")
    key.set_defaults(func=cmd_ssh_key)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one job; a failure is one line on stderr and exit 1, never a traceback."""
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (CiError, OSError) as exc:
        print(f"svcctl-ci: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
