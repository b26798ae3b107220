"""Round-trip a cf manifest without making ruamel.yaml read and write its VCAP_SERVICES JSON character by character.

svcctl writes VCAP_SERVICES as one single-quoted line: for an app bound 500 times that is ~200 kB, and the
round-trip parser and emitter (pure Python) take ~0.5 s over it on every apply, converged ones included. So
each such line's value is swapped for a short token before the YAML is parsed and swapped back into the
rendered text. Only values the emitter would write back byte for byte are swapped (printable ASCII, no
space and no line break, so never folded; quotes doubled; nothing after it on its line), and the result is
refused (None: the caller renders the slow way) unless every token is found where it belongs;
tests/unit/test_manifests.py renders every case both ways and compares.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

# A value the emitter writes back unchanged: printable ASCII but space and quote, or a doubled quote.
_LINE = re.compile(r"^(?P<head>[ ]*VCAP_SERVICES:[ ]+)'(?P<body>(?:[!-&(-~]|'')*)'(?P<tail>[ ]*)$", re.MULTILINE)
_FOLDABLE = re.compile(r"[^!-~]")  # what the single-quoted emitter might fold at or escape (space, breaks, others)


@dataclass
class Swap:
    """The tokens that stand in for VCAP_SERVICES values in a manifest's text, and the values' quoted bodies."""

    token: str = field(default_factory=lambda: f"svcctl{secrets.token_hex(8)}")
    bodies: dict[str, str] = field(default_factory=dict)

    def out_of(self, text: str) -> str | None:
        """`text` with each VCAP_SERVICES line's value replaced by a token; None if the text holds the token."""
        if self.token in text:
            return None

        def swap(m: re.Match[str]) -> str:
            key = f"{self.token}x{len(self.bodies)}"
            self.bodies[key] = m["body"]
            return f"{m['head']}'{key}'{m['tail']}"

        return _LINE.sub(swap, text)

    def stand_in(self, value: str) -> str | None:
        """The token to render in place of a new VCAP_SERVICES value, or None if it could not be swapped back."""
        if _FOLDABLE.search(value):
            return None
        key = f"{self.token}new"
        self.bodies[key] = value.replace("'", "''")
        return key

    def back_into(self, rendered: str) -> str | None:
        """The rendered text with every token replaced by its value; None unless each token left is quoted once,
        last on its line, and no other trace of one remains.

        Last on its line: a comment after the value is aligned by the emitter to the value's length, which
        the token does not have."""
        for key, body in self.bodies.items():
            quoted = f"'{key}'"
            count = rendered.count(quoted)
            if count > 1 or count != rendered.count(quoted + "\n") + rendered.endswith(quoted):
                return None
            if count:
                rendered = rendered.replace(quoted, f"'{body}'")
        return None if self.token in rendered else rendered
