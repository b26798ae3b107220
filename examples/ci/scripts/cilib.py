"""The pure parts of svcctl's CI scripts: markers, comment and issue bodies, truncation, what to post.

Nothing here runs a command or reads a file: the scripts (`svcctl_ci.py`, `post.py`) do that, and unit tests
check these functions on data. Standard library only, so a CI job needs nothing but svcctl and python3.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

# GitHub refuses a comment or issue body of 65,536 characters or more; GitLab's notes allow more (1,000,000).
MAX_BODY = 65_536
BODY_LIMIT = MAX_BODY - 536  # what the scripts aim under: room for a footer a thin step might add

PLAN_EXIT = {0: "no changes", 1: "error", 2: "changes pending"}


@dataclass(frozen=True)
class Item:
    """A comment, note or issue already posted: its id for the API (issue number / iid), body, author."""

    id: int
    body: str
    author: str


@dataclass(frozen=True)
class Decision:
    """What the thin posting step must do: create, update or close the item `target`, or nothing."""

    action: str  # "create" | "update" | "close" | "none"
    target: int | None
    marker: str


def label_of(text: str) -> str:
    """A marker-safe label for an environment (its path or name): letters, digits and `._/-`, no `--`."""
    safe = re.sub(r"[^A-Za-z0-9._/-]", "_", text.strip()) or "_"
    return re.sub(r"-{2,}", "-", safe)


def plan_marker(label: str) -> str:
    """The hidden first line of a pull request's plan comment, one per environment."""
    return f"<!-- svcctl-plan: {label_of(label)} -->"


def drift_marker(label: str) -> str:
    """The hidden first line of the drift issue, one per environment."""
    return f"<!-- svcctl-drift: {label_of(label)} -->"


def has_marker(body: str, marker: str) -> bool:
    """True if the body's first line is exactly the marker (a marker quoted further down does not count)."""
    return body.split("\n", 1)[0].strip() == marker


def parse_items(text: str) -> list[Item]:
    """Comments, notes or issues as the APIs list them: GitHub's (`user.login`; issues by `number`, pull
    requests skipped) or GitLab's (`author.username`; issues by `iid`). Accepts several JSON arrays one after
    another, which is what `gh api --paginate` prints."""
    decoder = json.JSONDecoder()
    items: list[Item] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
        for obj in doc if isinstance(doc, list) else [doc]:
            if not isinstance(obj, dict) or "pull_request" in obj:
                continue
            ident = obj.get("number", obj.get("iid", obj.get("id")))
            body = obj.get("body", obj.get("description")) or ""
            who = obj.get("user") or obj.get("author") or {}
            author = who.get("login", who.get("username", "")) if isinstance(who, dict) else ""
            if isinstance(ident, int) and isinstance(body, str):
                items.append(Item(id=ident, body=body, author=str(author)))
    return items


def find_marked(items: list[Item], marker: str, author: str | None) -> Item | None:
    """The oldest item that starts with the marker and, if `author` is given, was posted by that account
    (so nobody else's comment carrying the marker is ever edited)."""
    found = [i for i in items if has_marker(i.body, marker) and (author is None or i.author == author)]
    return min(found, key=lambda i: i.id) if found else None


def decide_comment(items: list[Item], marker: str, author: str | None) -> Decision:
    """A pull request's plan comment: update the one already there, else create it. Never a second one."""
    found = find_marked(items, marker, author)
    return Decision("update", found.id, marker) if found else Decision("create", None, marker)


def decide_issue(plan_exit: int, items: list[Item], marker: str, author: str | None) -> Decision:
    """The drift issue from `svcctl plan --detailed-exitcode`'s exit code: 2 opens it (or updates the open
    one), 0 closes the open one; 1 (an error) and anything else leaves it alone."""
    found = find_marked(items, marker, author)
    if plan_exit == 2:
        return Decision("update", found.id, marker) if found else Decision("create", None, marker)
    if plan_exit == 0 and found:
        return Decision("close", found.id, marker)
    return Decision("none", found.id if found else None, marker)


def fence_for(text: str) -> str:
    """A code fence longer than any run of backticks in the text, so nothing inside can close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def code_block(text: str) -> str:
    """Text shown verbatim in Markdown (no HTML, @mention or link in it is interpreted)."""
    fence = fence_for(text)
    return f"{fence}text\n{text.rstrip()}\n{fence}\n"


def inline(text: str) -> str:
    """A short value (a label, a commit) as a code span GitHub and GitLab show verbatim."""
    clean = text.replace("\n", " ")
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", clean)), default=0) + 1)
    return f"{ticks} {clean} {ticks}" if "`" in clean else f"`{clean}`"


def folded(summary: str, text: str, *, open_: bool = False) -> str:
    """Text folded in `<details>` under a summary line."""
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>\n\n{text.rstrip()}\n\n</details>\n"


def fit(head: str, detail: str, *, note: str, limit: int = BODY_LIMIT) -> str:
    """`head` then `detail`, in fewer than `limit` characters.

    svcctl's Markdown already folds the plan in `<details>` and keeps itself under 60,000 characters, so this
    cuts only when head and detail together are too long (a plan with a great many errors or warnings, which
    svcctl always keeps): whole lines are dropped from the end, open code fences and `<details>` are closed,
    and the rest goes in a `<details>` of its own, with `note` ("truncated, see the artifact") inside the
    fold and after it.
    """
    if len(head) + len(detail) < limit:
        return head + detail
    opening = "<details><summary>Plan (truncated)</summary>\n\n"
    note_line = f"\n**{note}**\n"
    budget = limit - len(head) - len(opening) - 2 * len(note_line) - 256
    kept: list[str] = []
    used = 0
    for line in detail.split("\n"):
        if used + len(line) + 1 > max(budget, 0):
            break
        kept.append(line)
        used += len(line) + 1
    closers: list[str] = []
    fences = [line.strip() for line in kept if re.fullmatch(r"`{3,}[\w-]*", line.strip())]
    if len(fences) % 2:  # cut inside a fenced block: close it with the fence that opened it
        closers.append(re.sub(r"[\w-]+$", "", fences[-1]))
    shown = "\n".join(kept)
    closers += ["</details>"] * max(0, shown.count("<details") - shown.count("</details>"))
    body = shown + "\n" + "\n".join(closers) + "\n" + note_line
    return head + opening + body + "\n</details>\n" + note_line


def plan_comment(
    marker: str,
    label: str,
    plan_exit: int,
    plan_markdown: str,
    error: str,
    *,
    commit: str,
    artifact: str,
    limit: int = BODY_LIMIT,
) -> str:
    """The pull request's comment: what the plan says for the head commit, and where the saved plan is."""
    state = PLAN_EXIT.get(plan_exit, f"exit {plan_exit}")
    head = f"{marker}\n### svcctl plan for {inline(label)}: {state}\n\nCommit {inline(commit)}. "
    note = f"Truncated: the whole plan is in the artifact {inline(artifact)} of this run."
    if plan_exit not in (0, 2):
        head += "The plan failed, so nothing can be applied from this commit; the error is below.\n\n"
        detail = folded("Error", code_block(error or "svcctl plan failed with no message"), open_=True)
        return fit(head, detail, note="Truncated: the whole error is in the run's log.", limit=limit)
    head += (
        f"The saved plan is the artifact {inline(artifact)} of this run; merging applies exactly it, and the "
        "apply refuses it if the YAML or the hosts change before then.\n\n"
    )
    detail = plan_markdown
    if "_Plan truncated:" in detail:  # svcctl's own cut: say where the rest is
        detail = detail.rstrip("\n") + f"\n\n**{note}**\n"
    return fit(head, detail, note=note, limit=limit)


def diff_comment(
    marker: str, label: str, diff_exit: int, diff_markdown: str, error: str, *, base: str, head_sha: str
) -> str:
    """A fork's pull request: no secrets, so no plan; what the YAML change does, from `svcctl diff`."""
    state = {0: "no change to the environment", 2: "the environment changes"}.get(diff_exit, "error")
    head = (
        f"{marker}\n### svcctl diff for {inline(label)}: {state}\n\n"
        "A pull request from a fork gets no secrets, so this is `svcctl diff` of "
        f"{inline(base[:12])}..{inline(head_sha[:12])} (the YAML only, no host observed), not a plan. "
        "A maintainer can push the branch to this repository to get a plan of the hosts.\n\n"
    )
    if diff_exit in (0, 2):
        detail = diff_markdown if "<details" in diff_markdown else folded("Diff", diff_markdown, open_=True)
    else:
        detail = folded("Error", code_block(error or "svcctl diff failed with no message"), open_=True)
    return fit(head, detail, note="Truncated: run `svcctl diff` locally to see it all.")


def issue_title(label: str) -> str:
    """The drift issue's title."""
    return f"svcctl: drift in {label_of(label)}"


def drift_issue(marker: str, label: str, plan_markdown: str, *, run_url: str, limit: int = BODY_LIMIT) -> str:
    """The drift issue's body: the hosts no longer match the YAML; the plan that would put them back."""
    head = (
        f"{marker}\n### Drift in {inline(label)}\n\n"
        "The scheduled `svcctl plan --detailed-exitcode` found changes pending (exit 2): the hosts no longer "
        "match the YAML on the default branch, or the YAML has changes not yet applied. This issue is updated "
        "by each check and closed by the first one that finds nothing to do.\n\n"
        + (f"Run: {run_url}\n\n" if run_url else "")
    )
    return fit(head, plan_markdown, note="Truncated: the whole plan is in the run's log.", limit=limit)


def converged_note(label: str, run_url: str) -> str:
    """The comment left on the drift issue when it is closed."""
    return f"The scheduled check of {inline(label)} found nothing to do (exit 0); closing." + (
        f" Run: {run_url}" if run_url else ""
    )


def refusal(stderr: str) -> str:
    """svcctl's own reason for failing (its `error:` paragraph, to the end), else its last line."""
    lines = stderr.rstrip().splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("error: ")]
    if starts:
        return "\n".join(lines[starts[-1] :]).removeprefix("error: ").strip()
    rest = [line for line in lines if line.strip()]
    return rest[-1].strip() if rest else "svcctl failed with no message"


def apply_summary(label: str, applied: bool, reason: str, run_url: str) -> str:
    """What the merge job says (job summary, or a note): applied, or refused with svcctl's reason."""
    run = f"\n\nRun: {run_url}" if run_url else ""
    if applied:
        return f"### svcctl apply of {inline(label)}: applied\n\nThe reviewed plan was carried out exactly.{run}\n"
    return (
        f"### svcctl apply of {inline(label)}: refused, nothing applied\n\n"
        + code_block(reason)
        + "\nOpen a pull request (or push to the merged one's branch again) to get a new plan reviewed; a "
        "plan made before the YAML or the hosts moved is never applied." + run + "\n"
    )


def choose_plan_run(runs: dict[str, Any], head_sha: str, repo: str) -> int | None:
    """The run of the plan workflow whose artifact holds the reviewed plan of a merged pull request: the
    latest successful `pull_request` run for the pull request's last commit, from this repository (a fork's
    run could have uploaded anything). None when there is none."""
    candidates = [
        r
        for r in runs.get("workflow_runs", [])
        if r.get("head_sha") == head_sha
        and r.get("event") == "pull_request"
        and r.get("conclusion") == "success"
        and (r.get("head_repository") or {}).get("full_name") == repo
    ]
    if not candidates:
        return None
    latest = max(candidates, key=lambda r: (str(r.get("created_at", "")), int(r.get("id", 0))))
    ident = latest.get("id")
    return ident if isinstance(ident, int) else None


def state_json(decision: Decision, **extra: Any) -> str:
    """The state file the thin posting step reads: the decision plus what the script knew."""
    return json.dumps({**asdict(decision), **extra}, indent=2, sort_keys=True) + "\n"


def choose_gitlab_mr(mrs: list[dict[str, Any]], sha: str) -> dict[str, Any] | None:
    """The merge request a commit on the default branch merged (its merge or squash commit), from this
    project, not a fork. None when the commit merged none (a direct push)."""
    for mr in mrs:
        if (
            mr.get("state") == "merged"
            and sha in (mr.get("merge_commit_sha"), mr.get("squash_commit_sha"), mr.get("sha"))
            and mr.get("source_project_id") == mr.get("target_project_id")
        ):
            return mr
    return None


def choose_gitlab_job(jobs: list[dict[str, Any]], name: str) -> int | None:
    """The latest successful job `name` of a pipeline (the merge request's last); None if there is none."""
    found = [j for j in jobs if j.get("name") == name and j.get("status") == "success" and isinstance(j.get("id"), int)]
    return max(int(j["id"]) for j in found) if found else None
