"""Where an app's manifest may be: a relative path inside the environment's directory, through no symlink.

The YAML of an unreviewed pull request names each manifest, and apply writes credentials there, so this
is the one rule deciding which file on the controller svcctl may write. `svcctl validate` applies it
through the loader, and apply applies it again right before writing (the tree may have changed since).
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Literal

Refusal = Literal["empty", "character", "home", "absolute", "parent", "outside", "symlink", "root"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_EXAMPLE = 'such as "apps/web/manifest.yml"'


class ManifestPathError(ValueError):
    """A refused manifest path; the message says why and what to write instead, `kind` which rule it broke."""

    def __init__(self, message: str, kind: Refusal) -> None:
        super().__init__(message)
        self.kind: Refusal = kind


def environment_root(path: Path) -> Path:
    """The environment's directory: PATH itself when it is a directory, else the directory of the file."""
    absolute = path.absolute()
    return absolute if absolute.is_dir() else absolute.parent


def manifest_path(env_root: Path, yaml_dir: Path, declared: str) -> Path:
    """The absolute path of the manifest `declared` in a file of `yaml_dir`; ManifestPathError if refused.

    Refused: an empty path, control or format characters, `~`, an absolute path, a `..` component, and
    any existing component (below `env_root`) that is a symlink, whether it points inside the environment
    or out of it: svcctl writes manifests only through real directories, so no symlink can redirect them.
    The path returned is lexical (not resolved), so a writer can open it component by component.
    """
    shown = quoted(declared)
    if not declared:
        raise ManifestPathError("must not be empty; write the manifest's path relative to the YAML file", "empty")
    bad = next((c for c in declared if unicodedata.category(c) in _UNSAFE_CATEGORIES), None)
    if bad is not None:
        raise ManifestPathError(
            f"path {shown} contains the control or format character U+{ord(bad):04X}, which is never allowed",
            "character",
        )
    inside = (
        f"a manifest must be inside the environment directory: write its path relative to the YAML file, {_EXAMPLE}"
    )
    if declared.startswith("~"):
        raise ManifestPathError(f'{shown} starts with "~"; {inside}', "home")
    if PurePosixPath(declared).is_absolute():
        raise ManifestPathError(f"{shown} is an absolute path; {inside}", "absolute")
    if ".." in declared.split("/"):
        raise ManifestPathError(f'{shown} contains ".."; {inside}', "parent")
    root = Path(os.path.normpath(env_root.absolute()))
    lexical = Path(os.path.normpath(yaml_dir.absolute() / declared))
    try:
        relative = lexical.relative_to(root)
    except ValueError:
        raise ManifestPathError(f"{shown} is outside the environment directory {root}; {inside}", "outside") from None
    if not relative.parts:
        raise ManifestPathError(f"{shown} names the environment directory itself; name a file inside it", "root")
    real_root = Path(os.path.realpath(root))
    current = root
    for depth, part in enumerate(relative.parts, start=1):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            break  # missing (or unreadable): nothing further down exists to redirect the path
        if stat.S_ISLNK(mode):
            _refuse_symlink(shown, current, Path(*relative.parts[:depth]), real_root)
    if not Path(os.path.realpath(lexical)).is_relative_to(real_root):  # pragma: no cover - the walk refuses first
        raise ManifestPathError(f"{shown} resolves outside the environment directory; {inside}", "outside")
    return lexical


def _refuse_symlink(shown: str, link: Path, component: Path, real_root: Path) -> None:
    try:
        target = quoted(str(link.readlink()))
    except OSError:
        target = "somewhere unreadable"
    if not Path(os.path.realpath(link)).is_relative_to(real_root):
        raise ManifestPathError(
            f"{shown} resolves outside the environment directory: {quoted(str(component))} is a symlink to "
            f"{target}; point the manifest at a real file inside the environment",
            "outside",
        )
    raise ManifestPathError(
        f"{shown} goes through the symlink {quoted(str(component))} (to {target}); svcctl writes manifests "
        "only through real directories and files, so that no symlink can redirect credentials: replace the "
        "symlink with the directory or file itself",
        "symlink",
    )


def quoted(value: str) -> str:
    """A path inside a message: quoted, control and format characters escaped, cut to a readable length."""
    shown = value if len(value) <= 120 else value[:117] + "..."
    escaped = "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        for char in shown.replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'
