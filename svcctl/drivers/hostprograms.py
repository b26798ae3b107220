"""Host programs: the scripts svcctl runs on a node, each built from the host library and its own parts.

A node has only its release's python3, no svcctl. So a program is one text: the `svcctl.hostlib` modules
it uses, then its own parts (observe's header, each engine's fragment, its footer; the session helper;
the registry helper's entry point). Every part is an ordinary module that imports what it uses from
`svcctl.hostlib` (so ruff and mypy check it like any other); `bundle` drops those imports, since the
modules' text is already in the program. Parts may import from one another the same way (a fragment
from observe's header). `bundle` refuses a name imported that no earlier part defines, and two parts that
define one name, so the concatenation means what the modules say.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from importlib import resources

HOSTLIB = "svcctl.hostlib"
HOSTLIB_MODULES = ("registry", "verifiers", "run", "redis_acl")
SCRIPTS = "svcctl.drivers.scripts"
_HEAD = "#!/usr/bin/python3\n# Built by svcctl from svcctl.hostlib and its own parts; stdlib only, Python 3.9+.\n"
_FUTURE = "from __future__ import annotations\n"


class BundleError(RuntimeError):
    """Two parts of a host program define the same name, or a part imports from svcctl outside hostlib."""


def hostlib_source(module: str) -> str:
    """The text of one host library module (`registry`, `verifiers`, `run`)."""
    return resources.files(HOSTLIB).joinpath(f"{module}.py").read_text()


def script_source(name: str) -> str:
    """The text of one program part shipped in svcctl/drivers/scripts/."""
    return resources.files("svcctl.drivers").joinpath("scripts", name).read_text()


def bundle(hostlib: Sequence[str], parts: Sequence[tuple[str, str]]) -> str:
    """One program: the named hostlib modules, then `parts` ((label, source) in order), as a single script.

    Imports from `svcctl.hostlib`, from `svcctl.drivers.scripts` and `from __future__ import annotations` are
    dropped from every piece
    (the latter is put once at the top, so annotations are never evaluated on the node's older Python).
    """
    pieces = [(f"svcctl.hostlib.{m}", hostlib_source(m)) for m in hostlib] + list(parts)
    seen: dict[str, str] = {}
    out = [_HEAD, _FUTURE]
    for label, source in pieces:
        tree = ast.parse(source, filename=label)
        drop: set[int] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == "__future__" or _is_part(node.module):
                    drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
                if _is_part(node.module):
                    for alias in node.names:
                        if alias.asname:
                            raise BundleError(f"{label}: renames {alias.name} from {node.module}; use it as it is")
                        if alias.name not in seen:
                            raise BundleError(f"{label}: imports {alias.name} from {node.module}, which no earlier "
                                              "part of the program defines")  # fmt: skip
                elif node.module.split(".")[0] == "svcctl":
                    raise BundleError(f"{label}: imports {node.module}; a host program may use only svcctl.hostlib")
            for name in _defined(node):
                if name in seen and not name.startswith("__"):
                    raise BundleError(f"{label} defines {name}, which {seen[name]} already defines")
                seen[name] = label
        kept = [line for number, line in enumerate(source.splitlines(), 1) if number not in drop]
        out.append(f"\n# --- {label} " + "-" * max(0, 100 - len(label)) + "\n" + "\n".join(kept) + "\n")
    return "".join(out)


def _is_part(module: str) -> bool:
    """Whether an import names another part of a host program (the library, or a script beside this one)."""
    return any(module == p or module.startswith(p + ".") for p in (HOSTLIB, SCRIPTS))


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


def registry_program() -> str:
    """svcctl-registry.py: apply's registry helper (`record`, `record-many`, `forget`)."""
    entry = "import sys\n\nprint(registry_main(sys.argv[1:]))\n"
    return bundle(["registry"], [("svcctl-registry", entry)])


def session_program() -> str:
    """svcctl-session.py: the tunnel's session helper (`create`, `drop`, `find`)."""
    return bundle(
        ["run", "registry", "verifiers", "redis_acl"], [("session_host.py", script_source("session_host.py"))]
    )


def observe_program(fragments: Sequence[tuple[str, str]]) -> str:
    """The observe script: the header, each engine's fragment ((label, source)), the footer."""
    parts = [("observe_header.py", script_source("observe_header.py")), *fragments]
    parts.append(("observe_footer.py", script_source("observe_footer.py")))
    return bundle(["run", "registry", "verifiers"], parts)
