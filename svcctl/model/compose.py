"""Compose YAML text into ruamel.yaml's node tree: libyaml's composer where its tree is bound to be the same.

ruamel.yaml's round-trip composer is pure Python, about 0.8 ms a line on the lab machine: 0.8 s of a
converged plan of a 1,000-object environment, most of what the controller spends. libyaml's (ruamel.yaml.clib's
CParser, which builds the same `ruamel.yaml.nodes` and resolves tags with ruamel's own resolver) is about 13x
faster. It is taken only where the two trees cannot differ, and the round-trip composer everywhere else:

- the text is ASCII with no `&`, `*`, `!` or `%`: so no anchor or alias (which the C composer does not
  mark on its nodes, and the loader must refuse), no explicit tag and no directive (libyaml reads YAML 1.1,
  ruamel 1.2), nor any character the two read differently;
- libyaml accepts it; any error it finds is left to the round-trip composer, whose messages the loader
  reports as they were;
- it holds no empty plain scalar (`key:` with nothing after it), whose position the two composers give
  differently (the end of its line; the start of the next token);
- plain scalars get ruamel's style for them (None; libyaml says '').

Without ruamel.yaml.clib installed, every text takes the round-trip composer.
"""

from __future__ import annotations

import io
import re

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from _ruamel_yaml import CParser  # ruamel.yaml.clib
except ImportError:  # pragma: no cover - depends on the install
    CParser = None

_UNSAFE_FOR_C = re.compile(r"[&*!%]|[^\x00-\x7f]")


def fast_path(text: str) -> bool:
    """Whether `text` may be composed by libyaml (see the module's docstring)."""
    return CParser is not None and _UNSAFE_FOR_C.search(text) is None


def _plain_style(root: Node) -> bool:
    """Give plain scalars ruamel's style; False if the tree holds an empty plain scalar (see above)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, ScalarNode):
            if node.style == "":
                if node.value == "":
                    return False
                node.style = None
        elif isinstance(node, MappingNode):
            for key, value in node.value:
                stack += [key, value]
        elif isinstance(node, SequenceNode):
            stack += node.value
    return True


def compose_all(text: str, yaml: YAML) -> list[Node]:
    """Every document of `text` as round-trip nodes; errors are the round-trip composer's (`yaml`'s)."""
    if fast_path(text):
        try:
            documents = list(YAML(typ="safe").compose_all(io.StringIO(text)))
        except Exception:
            documents = None
        if documents is not None and all(_plain_style(d) for d in documents):
            return documents
    return list(yaml.compose_all(io.StringIO(text)))
