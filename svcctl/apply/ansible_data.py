"""Variables for Ansible as data, never as templates.

ansible-core templates every string it reads from an inventory or an extra-vars file, so a value from the
YAML (an identity file path) or from a node (an attribute it reported) holding `{{ lookup("pipe", ...) }}`
would run on the controller. Every mapping and list svcctl hands to Ansible is therefore tagged `!unsafe`,
and everything in it, keys included, is read as plain text that is never rendered.

The tag goes on the containers, never on a string: ansible-core's `!unsafe` constructor resolves a tagged
scalar's type again from its value as if it were unquoted (ansible-core 2.19), so `!unsafe "15"` loaded as
the int 15, `!unsafe ""` as None and `!unsafe "*"` not at all (PyYAML's resolver takes `*` for a tag it
cannot construct). A tagged container is resolved as a container, and what it holds is constructed as
written, quoted strings as strings, with the unsafe mark carried down to each of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def unsafe_yaml(value: Mapping[str, Any] | list[Any]) -> str:
    """`value` (JSON-like data) as one line of flow YAML in which every mapping and list is tagged `!unsafe`."""
    if not isinstance(value, Mapping | list | tuple):
        raise TypeError(f"Ansible variables are a mapping or a list, not a {type(value).__name__}")
    return _flow(value)


def _flow(value: Any) -> str:
    if isinstance(value, str):
        return _quoted(value)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "!unsafe {" + ", ".join(f"{_quoted(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "!unsafe [" + ", ".join(_flow(v) for v in value) + "]"
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
