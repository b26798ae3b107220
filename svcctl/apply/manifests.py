"""Write each app's credentials into its manifest: Cloud Foundry YAML, dotenv or a VCAP_SERVICES JSON file.

Rendering is pure (text in, text out) and touches only what svcctl manages: `env.VCAP_SERVICES` of one
application in a cf manifest (round-tripped with ruamel.yaml so comments, order and everything else
survive), a marked block in a dotenv file, or the whole of a JSON file. Writing is atomic and 0600, since
the result holds passwords, and stays inside the environment's directory: no symlink is ever followed.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from svcctl.apply.vcap_swap import Swap
from svcctl.errors import SvcctlError
from svcctl.model.paths import manifest_path
from svcctl.secrets import Secret

EngineName = Literal["postgres", "mysql", "redis"]
ManifestFormat = Literal["cf", "dotenv", "json"]

LABELS: dict[str, str] = {"postgres": "postgresql", "mysql": "mysql", "redis": "redis"}
"""The VCAP_SERVICES label of each engine, as Cloud Foundry service brokers name them."""

_SCHEMES: dict[str, str] = {"postgres": "postgresql", "mysql": "mysql", "redis": "redis"}
_SQL = frozenset({"postgres", "mysql"})

DOTENV_BEGIN = "# BEGIN svcctl (managed; do not edit)"
DOTENV_END = "# END svcctl"


@dataclass(frozen=True)
class BoundService:
    """One binding's credentials as an app sees them: where to connect and as whom."""

    binding_name: str
    instance: str
    engine: EngineName
    label: str
    plan: str
    tags: Sequence[str]
    host: str
    port: int
    database: str | None
    username: str
    password: Secret = field(repr=False)
    role: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))

    @property
    def uri(self) -> Secret:
        """Connection URI with user and password percent-encoded; a Secret because it embeds the password."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        userinfo = f"{quote(self.username, safe='')}:{quote(self.password.reveal(), safe='')}"
        uri = f"{_SCHEMES[self.engine]}://{userinfo}@{host}:{self.port}"
        if self.database is not None:
            uri += f"/{quote(self.database, safe='')}"
        return Secret(uri)

    def credentials(self) -> dict[str, Any]:
        """The VCAP_SERVICES `credentials` object, password and URI revealed."""
        creds: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.database is not None:
            creds["name"] = self.database
            creds["database"] = self.database
        creds["username"] = self.username
        creds["password"] = self.password.reveal()
        creds["uri"] = self.uri.reveal()
        return creds


def _ordered(services: Sequence[BoundService]) -> list[BoundService]:
    return sorted(services, key=lambda s: (s.label, s.instance, s.binding_name))


def vcap_services(services: Sequence[BoundService]) -> dict[str, list[dict[str, Any]]]:
    """The VCAP_SERVICES document: entries grouped by label, sorted by label, then instance name."""
    doc: dict[str, list[dict[str, Any]]] = {}
    for svc in _ordered(services):
        doc.setdefault(svc.label, []).append(
            {
                "name": svc.instance,
                "instance_name": svc.instance,
                "binding_name": svc.binding_name,
                "label": svc.label,
                "plan": svc.plan,
                "tags": list(svc.tags),
                "credentials": svc.credentials(),
            }
        )
    return doc


# --- JSON ------------------------------------------------------------------------------------------------


def render_json(services: Sequence[BoundService]) -> str:
    """The VCAP_SERVICES document as pretty JSON with sorted keys, so reruns give identical bytes."""
    return json.dumps(vcap_services(services), indent=2, sort_keys=True) + "\n"


def check_json_manifest(existing_text: str, source: str = "manifest") -> None:
    """Refuse to overwrite a JSON file that is invalid or not a VCAP_SERVICES document (it may be another file)."""
    try:
        doc = json.loads(existing_text)
    except json.JSONDecodeError as exc:
        raise SvcctlError(
            f"{source}:{exc.lineno}:{exc.colno}: cannot parse the manifest as JSON ({exc.msg}); nothing was written."
        ) from None
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
        raise SvcctlError(
            f"{source}: is not a VCAP_SERVICES document (an object of lists); refusing to overwrite it. "
            "Point the app's manifest at a file svcctl owns; nothing was written."
        )


# --- Cloud Foundry manifest ------------------------------------------------------------------------------


def _yaml_for(text: str, source: str) -> tuple[YAML, Any]:
    try:
        _, indent, block_seq_indent = load_yaml_guess_indent(text)
        yaml = YAML(typ="rt")
        yaml.preserve_quotes = True
        yaml.width = 1 << 16  # never fold long lines (the VCAP_SERVICES JSON is one)
        indent = indent or 2
        offset = block_seq_indent or 0
        yaml.indent(mapping=max(indent - offset, 2) if offset else indent, sequence=indent, offset=offset)
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise SvcctlError(f"{where}: cannot parse the manifest as YAML ({problem}); nothing was written.") from None
    except YAMLError as exc:
        raise SvcctlError(f"{source}: cannot parse the manifest as YAML ({exc}); nothing was written.") from None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    yaml.explicit_start = first.startswith("---")
    return yaml, data


def _chain(node: Any) -> list[tuple[dict[Any, list[Any]], Any, int]]:
    """The (comment items, key, slot) holders along the last-entry path of a node, outermost first."""
    holders: list[tuple[dict[Any, list[Any]], Any, int]] = []
    while True:
        if isinstance(node, CommentedMap) and len(node):
            key = list(node.keys())[-1]
            holders.append((node.ca.items, key, 2))
            node = node[key]
        elif isinstance(node, CommentedSeq) and len(node):
            index = len(node) - 1
            holders.append((node.ca.items, index, 0))
            node = node[index]
        else:
            return holders


def _detach_tail(node: Any) -> str:
    """Take the full-line comments after a node's last line off it, keeping any end-of-line comment.

    ruamel.yaml attaches the comment lines that follow a block to its deepest last entry; appending an
    entry after that block would otherwise move them above the new entry.
    """
    rest = ""
    for items, key, slot in _chain(node):
        entry = items.get(key)
        token = entry[slot] if entry is not None and len(entry) > slot else None
        if isinstance(token, CommentToken):
            first, newline, tail = token.value.partition("\n")
            if tail:
                token.value = first + newline
                rest += tail
    return rest


def _attach_tail(node: Any, rest: str) -> None:
    """Put comment lines detached by `_detach_tail` after the new last line of `node`."""
    _attach(_chain(node), rest)


def _attach(holders: list[tuple[dict[Any, list[Any]], Any, int]], rest: str) -> None:
    if not rest or not holders:
        return
    items, key, slot = holders[-1]
    entry = items.setdefault(key, [None, None, None, None])
    token = entry[slot]
    if isinstance(token, CommentToken):
        value = token.value
        token.value = (value if value.endswith("\n") else value + "\n") + rest
    else:
        entry[slot] = CommentToken("\n" + rest, CommentMark(0))


def _append(mapping: CommentedMap, key: str, value: Any) -> None:
    rest = _detach_tail(mapping)
    mapping[key] = value
    _attach_tail(mapping, rest)


def _remove(mapping: CommentedMap, key: str) -> str:
    """Delete a key; comment lines that followed its value go after the previous entry, or are returned."""
    keys = list(mapping.keys())
    position = keys.index(key)
    value = mapping[key]
    rest = _detach_tail(value) if isinstance(value, CommentedMap | CommentedSeq) else ""
    entry = mapping.ca.items.pop(key, None)
    token = entry[2] if entry is not None and len(entry) > 2 else None
    if isinstance(token, CommentToken):
        rest += token.value.partition("\n")[2]  # its end-of-line comment described the value removed
    del mapping[key]
    if not rest:
        return ""
    if position > 0:
        previous = keys[position - 1]
        _attach([(mapping.ca.items, previous, 2), *_chain(mapping[previous])], rest)
        return ""
    if len(keys) > 1:  # the lines now sit before the next key
        entry = mapping.ca.items.setdefault(keys[1], [None, None, None, None])
        entry[1] = [CommentToken(rest, CommentMark(0)), *(entry[1] or [])]
        return ""
    return rest


def render_cf(
    existing_text: str | None, app_name: str, services: Sequence[BoundService], *, source: str = "manifest"
) -> str:
    """Set `env.VCAP_SERVICES` of application `app_name`, leaving every other byte's meaning alone.

    The application entry (and the file) is created if missing; with no services, VCAP_SERVICES (and an
    `env` left empty by that) is removed. Other apps, keys, comments and order survive. The JSON values are
    kept out of the YAML round trip where that gives the very same text (`svcctl.apply.vcap_swap`).
    """
    vcap = json.dumps(vcap_services(services), sort_keys=True, separators=(",", ":")) if services else None
    swap = Swap()
    swapped = swap.out_of(existing_text or "")
    stand_in = swap.stand_in(vcap) if vcap is not None else None
    if swapped is not None and (vcap is None or stand_in is not None):
        with suppress(SvcctlError):  # the slow way below says what is wrong, where, in the file as it is
            fast = swap.back_into(_render_cf(swapped, app_name, stand_in, source))
            if fast is not None:
                return fast
    return _render_cf(existing_text or "", app_name, vcap, source)


def _render_cf(text: str, app_name: str, vcap: str | None, source: str) -> str:
    """render_cf through ruamel.yaml's round trip: `vcap` is the VCAP_SERVICES JSON (None: remove it)."""
    yaml, data = _yaml_for(text, source)
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise SvcctlError(f"{source}: a cf manifest is a mapping with `applications:`; nothing was written.")
    apps = data.get("applications")
    if apps is None:
        apps = CommentedSeq()
        _append(data, "applications", apps)
    if not isinstance(apps, CommentedSeq):
        raise SvcctlError(f"{source}: `applications` must be a list; nothing was written.")
    app = next((a for a in apps if isinstance(a, CommentedMap) and a.get("name") == app_name), None)
    if app is None:
        app = CommentedMap([("name", app_name)])
        rest = _detach_tail(apps)
        apps.append(app)
        _attach_tail(apps, rest)
    env = app.get("env")
    if env is not None and not isinstance(env, CommentedMap):
        raise SvcctlError(f"{source}: `env` of application {app_name} must be a mapping; nothing was written.")
    if vcap is not None:
        value = SingleQuotedScalarString(vcap)
        if env is None:
            _append(app, "env", CommentedMap([("VCAP_SERVICES", value)]))
        elif "VCAP_SERVICES" in env:
            env["VCAP_SERVICES"] = value
        else:
            _append(env, "VCAP_SERVICES", value)
    elif env is not None and "VCAP_SERVICES" in env:
        rest = _remove(env, "VCAP_SERVICES")
        if not env:
            rest += _remove(app, "env")
        if rest:
            _attach_tail(app, rest)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


# --- dotenv ----------------------------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def _prefix(instance: str) -> str:
    return instance.upper().replace("-", "_")


def _dotenv_line(name: str, value: str) -> str:
    if any(c in value for c in "'\\\n\r"):
        raise ValueError(f"value of {name} cannot be single-quoted safely for dotenv")
    return f"{name}='{value}'\n"


def render_dotenv(existing_text: str | None, services: Sequence[BoundService], *, source: str = "manifest") -> str:
    """Replace (or append) the svcctl block of a dotenv file; every line outside the block is kept as is.

    Per service: <PREFIX>_URL, _HOST, _PORT, _DATABASE (sql), _USERNAME, _PASSWORD, PREFIX being the
    instance name upper-cased with `-` as `_`. DATABASE_URL / REDIS_URL point at the first sql / redis
    service by name, unless that name is already defined elsewhere in the file or by a service prefix.
    """
    lines = (existing_text or "").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    begin = end = None
    for number, line in enumerate(lines):
        marker = line.strip()
        if marker == DOTENV_BEGIN:
            if begin is not None:
                raise SvcctlError(f"{source}:{number + 1}: a second svcctl block begins here; nothing was written.")
            begin = number
        elif marker == DOTENV_END:
            if begin is None or end is not None:
                raise SvcctlError(
                    f"{source}:{number + 1}: `{DOTENV_END}` without a matching `{DOTENV_BEGIN}`; nothing was written."
                )
            end = number
    if begin is not None and end is None:
        raise SvcctlError(
            f"{source}:{begin + 1}: the svcctl block is not closed by `{DOTENV_END}`; nothing was written."
        )
    before, after = (lines, []) if begin is None or end is None else (lines[:begin], lines[end + 1 :])
    defined = {m.group(1) for m in map(_ASSIGNMENT.match, before + after) if m}

    block: list[str] = []
    names: set[str] = set()
    ordered = sorted(services, key=lambda s: (s.instance, s.binding_name))
    for svc in ordered:
        prefix = _prefix(svc.instance)
        values = [("URL", svc.uri.reveal()), ("HOST", svc.host), ("PORT", str(svc.port))]
        if svc.database is not None:
            values.append(("DATABASE", svc.database))
        values += [("USERNAME", svc.username), ("PASSWORD", svc.password.reveal())]
        for suffix, value in values:
            names.add(f"{prefix}_{suffix}")
            block.append(_dotenv_line(f"{prefix}_{suffix}", value))
    aliases: list[str] = []
    for alias, engines in (("DATABASE_URL", _SQL), ("REDIS_URL", frozenset({"redis"}))):
        first = next((s for s in ordered if s.engine in engines), None)
        if first is not None and alias not in defined and alias not in names:
            aliases.append(_dotenv_line(alias, first.uri.reveal()))
    if not services:
        if begin is None:
            return "".join(lines)
        if not after and before and not before[-1].strip():
            before = before[:-1]  # the blank line svcctl put before the block when it appended it
        return "".join(before + after)
    managed = [DOTENV_BEGIN + "\n", *aliases, *block, DOTENV_END + "\n"]
    if begin is None:
        separator = ["\n"] if lines and lines[-1].strip() else []
        return "".join([*lines, *separator, *managed])
    return "".join([*before, *managed, *after])


# --- writing ---------------------------------------------------------------------------------------------


def write_manifest(path: Path, text: str, *, root: Path) -> None:
    """Replace `path` atomically with `text`, mode 0600: readers see the old or the new file, never half.

    `path` must be inside the environment's directory `root` and reached through no symlink (see
    `svcctl.model.paths`); this is checked again here, since the tree may have changed since validate.
    """
    with _manifest_dir(path, root) as directory:
        _replace(directory, path, text)


def render_manifest(
    existing_text: str | None, fmt: ManifestFormat, app_name: str, services: Sequence[BoundService], source: str
) -> str:
    """Render a manifest of any format from its current text (None when the file does not exist)."""
    if fmt == "cf":
        return render_cf(existing_text, app_name, services, source=source)
    if fmt == "dotenv":
        return render_dotenv(existing_text, services, source=source)
    if existing_text is not None and existing_text.strip():
        check_json_manifest(existing_text, source)
    return render_json(services)


def update_manifest(
    path: Path, fmt: ManifestFormat, app_name: str, services: Sequence[BoundService], *, root: Path
) -> bool:
    """Bring one app's manifest up to date; True if the file was (re)written.

    A missing file is not created for an app without services; an unchanged file is left alone but
    still restricted to 0600. The file is read and written in one directory, opened from `root` one
    component at a time and never through a symlink, so what was read is what gets replaced.
    """
    with _manifest_dir(path, root) as directory:
        existing = _read_existing(directory, path)
        if existing is None and not services:
            return False
        text = render_manifest(existing, fmt, app_name, services, str(path))
        if text == existing:
            _restrict(directory, path)
            return False
        _replace(directory, path, text)
        return True


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@contextmanager
def _manifest_dir(path: Path, root: Path) -> Iterator[int]:
    """A descriptor of the manifest's directory, opened from `root` down without following any symlink.

    The path is first checked by the rule validate used (for its messages), then each directory is opened
    with O_NOFOLLOW relative to its parent: a symlink put in place since then is refused, not followed.
    """
    root = root.absolute()
    try:
        relative = Path(os.path.normpath(path.absolute())).relative_to(os.path.normpath(root))
    except ValueError:
        raise SvcctlError(
            f"cannot write manifest {path}: it is outside the environment directory {root}; fix the app's "
            "manifest path. Nothing was written."
        ) from None
    try:
        manifest_path(root, root, str(relative))
    except ValueError as exc:
        raise SvcctlError(f"cannot write manifest {path}: {exc}, and run apply again; nothing was written.") from None
    try:
        fd = os.open(root, _DIRECTORY)  # the operator named the environment's directory: it may be a symlink
    except OSError as exc:
        raise SvcctlError(
            f"cannot write manifest {path}: cannot open {root}: {exc.strerror}; nothing was written."
        ) from None
    try:
        walked = root
        for part in relative.parts[:-1]:
            walked = walked / part
            try:
                child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise SvcctlError(
                    f"cannot write {path}: directory {walked} does not exist; nothing was written."
                ) from None
            except OSError as exc:
                if _is_link(fd, part):
                    raise _symlink_error(path, walked) from None
                raise SvcctlError(
                    f"cannot write {path}: cannot open directory {walked}: {exc.strerror}; nothing was written."
                ) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _is_link(directory: int, name: str) -> bool:
    return stat.S_ISLNK(_lstat_mode(directory, name) or 0)


def _lstat_mode(directory: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
    except OSError:
        return None


def _symlink_error(path: Path, link: Path) -> SvcctlError:
    return SvcctlError(
        f"cannot write manifest {path}: {link} is a symlink, and svcctl writes manifests only through real "
        "directories and files, so that no symlink can send credentials outside the environment. Replace it "
        "with the file or directory itself and run apply again; nothing was written."
    )


def _check_target(directory: int, path: Path) -> None:
    """Refuse a target that is a symlink or not a regular file, right before replacing it."""
    mode = _lstat_mode(directory, path.name)
    if mode is None:
        return
    if stat.S_ISLNK(mode):
        raise _symlink_error(path, path)
    if not stat.S_ISREG(mode):
        raise _not_a_file(path)


def _not_a_file(path: Path) -> SvcctlError:
    return SvcctlError(
        f"cannot write manifest {path}: it is not a regular file; point the app's manifest at a file. "
        "Nothing was written."
    )


def _open_existing(directory: int, path: Path) -> int | None:
    """A read-only descriptor of the manifest (None if missing): never through a symlink, only a regular file."""
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_link(directory, path.name):
            raise _symlink_error(path, path) from None
        raise SvcctlError(f"cannot read manifest {path}: {exc.strerror}; nothing was written.") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_file(path)
    return fd


def _read_existing(directory: int, path: Path) -> str | None:
    """The manifest's text, or None if there is no file yet."""
    fd = _open_existing(directory, path)
    if fd is None:
        return None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        try:
            return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise SvcctlError(f"cannot read manifest {path}: {exc}; nothing was written.") from None


def _restrict(directory: int, path: Path) -> None:
    """Take group and other permissions off an existing manifest, without following a symlink."""
    fd = _open_existing(directory, path)
    if fd is None:
        return
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _replace(directory: int, path: Path, text: str) -> None:
    """Write a new 0600 file next to the target (O_EXCL, O_NOFOLLOW), fsync it, rename it over the target."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = f".{path.name}.{secrets.token_hex(6)}.svcctl-tmp"
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=directory)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise SvcctlError(
                f"cannot write {path}: cannot create a file in {path.parent}: {exc.strerror}; nothing was written."
            ) from None
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise SvcctlError(f"cannot write {path}: no free temporary name in {path.parent}; nothing was written.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        _check_target(directory, path)
        os.rename(tmp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise
    os.fsync(directory)


def git_tracked_warning(path: Path) -> str | None:
    """A one-line warning when `path` sits in a Git work tree and is tracked or not ignored; else None."""
    directory = path.resolve().parent
    env = {k: v for k, v in os.environ.items() if k not in {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"}}

    def git(*args: str) -> int | None:
        try:
            res = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, env=env, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return res.returncode

    if git("rev-parse", "--is-inside-work-tree") != 0:
        return None
    name = path.name
    if git("ls-files", "--error-unmatch", "--", name) == 0:
        return (
            f"warning: {path} now holds secrets and is tracked by Git: run `git rm --cached {name}` there "
            "and add it to .gitignore"
        )
    if git("check-ignore", "-q", "--", name) == 1:
        return f"warning: {path} now holds secrets and is not git-ignored: add it to .gitignore"
    return None
