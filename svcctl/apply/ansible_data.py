"""Variables for Ansible as data, never as templates.

ansible-core templates every string it reads from an inventory or an extra-vars file, so a value from the
YAML (an identity file path) or from a node (an attribute it reported) holding `{{ lookup("pipe", ...) }}`
would run on the controller. Every string svcctl hands to Ansible, keys included, is therefore written
as YAML tagged `!unsafe`, which Ansible reads as plain text and never renders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def unsafe_yaml(value: Any) -> str:
    """`value` (JSON-like data) as one line of flow YAML in which every string is tagged `!unsafe`."""
    if isinstance(value, str):
        return "!unsafe " + _quoted(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{unsafe_yaml(str(k))}: {unsafe_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(unsafe_yaml(v) for v in value) + "]"
    raise TypeError(f"cannot pass a {type(value).__name__} to Ansible")


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar: printable ASCII as is, everything else escaped (YAML 1.1 escapes)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def write_unsafe(path: Path, value: Mapping[str, Any]) -> Path:
    """Write `value` as untemplatable YAML to a new file readable only by its owner; returns `path`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(unsafe_yaml(value) + "\n")
    return path
