"""The two sides of `svcctl diff`: an environment as a directory holds it, or as a git revision declared it.

A revision's files are read with git itself (`rev-parse`, `ls-tree`, `cat-file`; no shell, no checkout) into
a private temporary directory and loaded with the normal loader, so either side's invalid YAML is reported
as `REV:path:line:column`. Revisions are untrusted strings (a branch name from a pull request): one starting
with `-` is refused, each is resolved once with `--end-of-options` to a commit id, and only that id reaches
the other git commands. Only regular *.yaml/*.yml files of the environment's directory are written (the loader
reads nothing else); a symbolic link among them is refused, so no revision can make svcctl read a file
outside it.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from svcctl.errors import InvalidEnvironment, Problem, SvcctlError
from svcctl.model.loader import display_path, load_environment
from svcctl.model.paths import environment_root
from svcctl.model.spec import Environment
from svcctl.plan.declared import DeclaredDiff, compare

SUFFIXES = (".yaml", ".yml")
GIT_TIMEOUT_S = 60


class GitFailed(SvcctlError):
    """A git command failed; `said` is git's last line on stderr."""

    def __init__(self, message: str, said: str) -> None:
        super().__init__(message)
        self.said = said


@dataclass(frozen=True)
class Side:
    """One side of the comparison: the environment, its directory, the checkout it sits in, and its label."""

    env: Environment
    root: Path
    tree: Path
    label: str


def declared_diff(base: str, head: str | None, env_path: Path) -> tuple[DeclaredDiff, Side, Side]:
    """Compare what BASE and HEAD declare (directories, or git revisions of the repository holding
    `env_path`; HEAD None: the working tree at `env_path`), with each side for its label."""
    with tempfile.TemporaryDirectory(prefix="svcctl-diff-") as tmp:
        before = load_side(base, env_path, "BASE", Path(tmp) / "base")
        after = load_side(head, env_path, "HEAD", Path(tmp) / "head")
        result = compare(before.env, after.env, before.root, after.root, trees=(before.tree, after.tree))
    return result, before, after


def load_side(spec: str | None, env_path: Path, which: str, scratch: Path) -> Side:
    """One side: the working tree (None), an existing directory, or a git revision of env_path's repository."""
    if spec is None:
        return _load_dir(env_path, which, "the working tree")
    if Path(spec).is_dir():
        return _load_dir(Path(spec), which, spec)
    if spec.startswith("-") or not spec:
        raise SvcctlError(
            f"{which} {spec!r} is neither a directory nor a git revision svcctl accepts: a revision must not be "
            "empty or start with '-'. Give a commit, branch or tag (such as origin/main), or a directory."
        )
    return _load_revision(spec, env_path, which, scratch)


def _load_dir(path: Path, which: str, label: str) -> Side:
    env = _loaded(path, which, label)
    root = environment_root(path)
    try:  # the checkout it sits in, for paths that leave its directory; without git, the directory
        top = _git(root, "rev-parse", "--show-toplevel", check=False)
    except SvcctlError:
        top = None
    tree = Path(top.strip()) if top else root
    return Side(env=env, root=root, tree=tree, label=label)


def _loaded(path: Path, which: str, label: str, shown_as: tuple[str, str] | None = None) -> Environment:
    """load_environment(path), its problems said as being the `which` side's (files renamed by `shown_as`)."""
    try:
        return load_environment(path)
    except InvalidEnvironment as exc:
        problems = exc.problems
        if shown_as is not None:
            scratch, prefix = shown_as
            problems = [
                Problem(prefix + p.file[len(scratch) :].lstrip("/"), p.line, p.column, p.message)
                if p.file.startswith(scratch)
                else p
                for p in problems
            ]
        count = len(problems)
        raise SvcctlError(
            "\n".join(str(p) for p in problems) + f"\n{count} problem{'s' if count != 1 else ''} found in {which} "
            f"({label}); it must load before it can be compared."
        ) from None
    except SvcctlError as exc:
        raise SvcctlError(f"{which} ({label}): {exc.message}") from None


def _git(cwd: Path, *args: str, check: bool = True) -> str | None:
    """git's output as text, or None when it fails and check is False; SvcctlError with git's words otherwise."""
    out = _git_bytes(cwd, *args, check=check)
    return None if out is None else out.decode("utf-8", errors="replace")


def _git_bytes(cwd: Path, *args: str, check: bool = True) -> bytes | None:
    try:
        res = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SvcctlError(
            f"cannot run git ({exc}); svcctl diff needs git for revisions, or give two directories."
        ) from None
    if res.returncode != 0:
        if not check:
            return None
        lines = res.stderr.decode(errors="replace").strip().splitlines()
        said = lines[-1] if lines else f"exit {res.returncode}"
        raise GitFailed(f"git {args[0]} failed: {said}", said)
    return res.stdout


def _load_revision(rev: str, env_path: Path, which: str, scratch: Path) -> Side:
    where = environment_root(env_path) if env_path.exists() else env_path.absolute().parent
    try:
        top = Path((_git(where, "rev-parse", "--show-toplevel") or "").strip())
    except GitFailed as exc:
        raise SvcctlError(
            f"{which} {rev!r} is not a directory, and git cannot read {display_path(where)} as a repository to "
            f"take it as a revision of (git: {exc.said}); give two directories, or --env PATH inside a git checkout."
        ) from None
    try:
        sub = env_path.absolute().resolve().relative_to(top.resolve()).as_posix()
    except ValueError:
        raise SvcctlError(f"--env {display_path(env_path)} is outside the git repository at {top}.") from None
    commit = _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
    if commit is None:
        raise SvcctlError(
            f"git cannot resolve the revision {rev!r} ({which}) to a commit in the repository at {top}: no such "
            "branch, tag or commit here. Give an existing one (in a shallow CI clone, fetch it first, such as "
            "`git fetch origin main` then origin/main), or a directory."
        )
    sha = commit.strip()
    label = rev
    spec = f"{sha}:{sub}" if sub != "." else f"{sha}:"
    kind = _git(top, "cat-file", "-t", spec, check=False)
    if kind is None:
        raise SvcctlError(
            f"{display_path(env_path)} does not exist at revision {rev!r} ({which}); an environment that is new or "
            "gone on one side cannot be compared. Give --env PATH of an environment present at both revisions."
        )
    is_file = kind.strip() == "blob"
    target = scratch / sub if sub != "." else scratch
    directory = target.parent if is_file else target
    directory.mkdir(parents=True)
    listing = _git(top, "ls-tree", "-z", sha, "--", sub) if is_file else _git(top, "ls-tree", "-z", spec)
    for entry in (listing or "").split("\0"):
        meta, _, name = entry.partition("\t")
        if not meta or not (is_file or name.endswith(SUFFIXES)):
            continue
        mode, otype, oid = meta.split()
        if mode == "120000":
            raise SvcctlError(
                f"{rev}:{sub if is_file else sub + '/' + name} ({which}) is a symbolic link; svcctl diff reads only "
                "regular files from a revision, so that no revision can make it read a file outside it."
            )
        if otype == "blob":
            (directory / Path(name).name).write_bytes(_git_bytes(top, "cat-file", "blob", oid) or b"")
    env = _loaded(target, which, label, shown_as=(str(scratch), f"{rev}:"))
    return Side(env=env, root=environment_root(target), tree=scratch, label=label)
