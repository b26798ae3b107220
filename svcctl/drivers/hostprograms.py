"""Host programs: the scripts svcctl runs on a node, each built from the host library and its own parts.

A node has only its release's python3, no svcctl. So a program is one text: the `svcctl.hostlib` modules
it uses, then its own parts: the shared ones in svcctl/drivers/host/ (observe's and the session helper's
header and footer, the release fragment) and each engine's, in svcctl/drivers/<engine>/ (`observe.py`,
`session.py`), plus the registry helper's entry point. Every part is an ordinary module that imports what it uses from
`svcctl.hostlib` (so ruff and mypy check it like any other); `bundle` drops those imports, since the
modules' text is already in the program. Parts may import from one another the same way (a fragment
from observe's header). `bundle` refuses a name imported that no earlier part defines, and two parts that
define one name, so the concatenation means what the modules say.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from importlib import resources

HOSTLIB = "svcctl.hostlib"
HOSTLIB_MODULES = ("registry", "verifiers", "run", "redis_acl", "marked", "backups")
ENGINES = ("postgres", "mysql", "redis")  # each one folder, svcctl/drivers/<engine>/
SHARED_PARTS = "svcctl.drivers.host"
ENGINE_PARTS = ("observe", "session")  # svcctl/drivers/<engine>/<part>.py
_ENGINE_PART = re.compile(r"svcctl\.drivers\.[a-z]+\.(?:" + "|".join(ENGINE_PARTS) + r")\Z")
_HEAD = "#!/usr/bin/python3\n# Built by svcctl from svcctl.hostlib and its own parts; stdlib only, Python 3.9+.\n"
_FUTURE = "from __future__ import annotations\n"
_ANNOTATION_ONLY = frozenset({"Any", "IO"})
"""typing's names that host code uses in annotations alone (never evaluated on the node: `from __future__ import
annotations`) or in an alias built at import (hostlib.registry's `Registry = dict[str, Any]`), so the program
binds them to `object` instead of importing typing, which cost each node 1-3 ms of CPU per observe."""


class BundleError(RuntimeError):
    """Two parts of a host program define the same name, or a part imports from svcctl outside hostlib."""


def hostlib_source(module: str) -> str:
    """The text of one host library module (`registry`, `verifiers`, `run`)."""
    return resources.files(HOSTLIB).joinpath(f"{module}.py").read_text()


def script_source(name: str) -> str:
    """The text of one shared program part, in svcctl/drivers/host/ (`observe_header.py`, ...)."""
    return resources.files(SHARED_PARTS).joinpath(name).read_text()


def engine_part(engine: str, part: str) -> tuple[str, str]:
    """(label, text) of one engine's program part: svcctl/drivers/<engine>/<part>.py (`observe`, `session`)."""
    if part not in ENGINE_PARTS:
        raise ValueError(f"no host part {part!r}; an engine has {', '.join(ENGINE_PARTS)}")
    return f"{engine}/{part}.py", resources.files(f"svcctl.drivers.{engine}").joinpath(f"{part}.py").read_text()


def bundle(hostlib: Sequence[str], parts: Sequence[tuple[str, str]]) -> str:
    """One program: the named hostlib modules, then `parts` ((label, source) in order), as a single script.

    Imports from `svcctl.hostlib`, from other host parts and `from __future__ import annotations` are
    dropped from every piece
    (the latter is put once at the top, so annotations are never evaluated on the node's older Python), and so
    is an import of typing's annotation-only names (_ANNOTATION_ONLY), which are bound to `object` once instead.
    """
    pieces = [(f"svcctl.hostlib.{m}", hostlib_source(m)) for m in hostlib] + list(parts)
    seen: dict[str, str] = {}
    stubbed: set[str] = set()
    out = [_HEAD, _FUTURE]
    for label, source in pieces:
        tree = ast.parse(source, filename=label)
        drop: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == "__future__" or _is_part(node.module) or _annotation_only(node):
                    drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
                if _annotation_only(node):
                    stubbed.update(alias.name for alias in node.names)
                if _is_part(node.module):
                    for alias in node.names:
                        if alias.asname:
                            raise BundleError(f"{label}: renames {alias.name} from {node.module}; use it as it is")
                        if alias.name not in seen:
                            raise BundleError(f"{label}: imports {alias.name} from {node.module}, which no earlier "
                                              "part of the program defines")  # fmt: skip
                elif node.module.split(".")[0] == "svcctl":
                    raise BundleError(
                        f"{label}: imports {node.module}; a host program may use only svcctl.hostlib and host parts"
                    )
            for name in _defined(node):
                if name in seen and not name.startswith("__"):
                    raise BundleError(f"{label} defines {name}, which {seen[name]} already defines")
                seen[name] = label
        kept = [line for number, line in enumerate(source.splitlines(), 1) if number not in drop]
        out.append(f"\n# --- {label} " + "-" * max(0, 100 - len(label)) + "\n" + "\n".join(kept) + "\n")
    if stubbed:  # typing's names, for annotations alone: see _ANNOTATION_ONLY
        out.insert(2, " = ".join(sorted(stubbed)) + " = object  # typing's, in annotations only: not imported\n")
    return "".join(out)


def _annotation_only(node: ast.ImportFrom) -> bool:
    """Whether an import takes from typing only names the node never needs for real (_ANNOTATION_ONLY)."""
    names = [alias.name for alias in node.names]
    plain = all(alias.asname is None for alias in node.names)
    return node.module == "typing" and plain and bool(names) and set(names) <= _ANNOTATION_ONLY


def _is_part(module: str) -> bool:
    """Whether an import names another part of a host program (the library, a shared or an engine's part)."""
    shared = any(module == p or module.startswith(p + ".") for p in (HOSTLIB, SHARED_PARTS))
    return shared or _ENGINE_PART.match(module) is not None


def _defined(node: ast.stmt) -> list[str]:
    """The top-level names a statement defines (functions, classes, assignments); imports do not count."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name)]


CODE_CACHE = "/var/cache/svcctl"
"""Where a node keeps each program's compiled code (root's, 0700): see `cached_program`."""

_LOADER = """\
#!/usr/bin/python3
# svcctl's {name} program, run from its compiled code: compiling it costs a node more CPU than running it, so
# the code is kept in {cache}/{name}.<python>.code (root's own, 0600, in root's own directory that no one else
# may write to) and used while it holds this very source; anything else there is not trusted, and the
# source below is compiled (and kept) again.  Built by svcctl; stdlib only, Python 3.9+.
import marshal
import os
import stat
import sys


def _svcctl_code(source, name, cache):
    tag = sys.implementation.cache_tag
    path = f"{{cache}}/{{name}}.{{tag}}.code"
    uid = os.geteuid()

    def own(st, is_kind):
        return is_kind(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022

    if tag:
        try:
            if own(os.lstat(cache), stat.S_ISDIR):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    st = os.fstat(fd)
                    if own(st, stat.S_ISREG) and not st.st_mode & 0o077 and st.st_size < 1 << 24:
                        kept, code = marshal.loads(os.read(fd, st.st_size + 1))
                        if kept == source and type(code) is type(_svcctl_code.__code__):
                            return code
                finally:
                    os.close(fd)
        except (OSError, ValueError, EOFError, TypeError):
            pass
    code = compile(source, "<stdin>", "exec", dont_inherit=True)
    if tag:
        temp = f"{{path}}.{{os.getpid()}}"
        try:
            if not os.path.lexists(cache) and os.path.isdir(os.path.dirname(cache)):
                os.mkdir(cache, 0o700)
            if own(os.lstat(cache), stat.S_ISDIR):
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(temp, flags, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(marshal.dumps((source, code)))
                os.replace(temp, path)
        except OSError:
            try:
                os.unlink(temp)
            except OSError:
                pass
    return code
"""
_LOADER_RUN = """
exec(_svcctl_code(_SOURCE, {name!r}, {cache!r}), {{"__name__": "__main__"}})
"""


def cached_program(program: str, name: str, cache: str = CODE_CACHE) -> str:
    """`program` as a script that runs its compiled code, kept on the node in `cache` (see _LOADER) while the
    source is the same: python3 compiling the observe script costs the node 10-15 ms of CPU per run, the
    loader (the source as one string literal, which python3 only tokenizes) and a kept code's load under 1 ms."""
    loader, run = _LOADER.format(name=name, cache=cache), _LOADER_RUN.format(name=name, cache=cache)
    return f"{loader}\n\n_SOURCE = {program!r}\n{run}"


def registry_program() -> str:
    """svcctl-registry.py: apply's registry helper (`record`, `record-many`, `forget`)."""
    entry = "import sys\n\nprint(registry_main(sys.argv[1:]))\n"
    return bundle(["registry"], [("svcctl-registry", entry)])


def session_program(engines: Sequence[str] = ENGINES) -> str:
    """svcctl-session.py: the tunnel's session helper (`create`, `drop`, `find`): its header, each engine's
    part, its footer (which names every engine's create and drop)."""
    parts = [("session_header.py", script_source("session_header.py"))]
    parts += [engine_part(engine, "session") for engine in engines]
    parts.append(("session_footer.py", script_source("session_footer.py")))
    return bundle(["run", "registry", "verifiers", "redis_acl"], parts)


def observe_program(fragments: Sequence[tuple[str, str]]) -> str:
    """The observe script: the header, each engine's fragment ((label, source)), the footer."""
    parts = [("observe_header.py", script_source("observe_header.py")), *fragments]
    parts.append(("observe_footer.py", script_source("observe_footer.py")))
    return bundle(["run", "registry", "verifiers", "marked", "backups"], parts)


def backup_program() -> str:
    """svcctl-backup.py: what each instance's backup service runs (`run`), and what `svcctl backups` asks (`list`)."""
    return bundle(["backups"], [("backup_main.py", script_source("backup_main.py"))])
