"""Find the ssh_config lines that would run a command, load code, read other files or open forwards.

An ssh_config named by the environment's YAML is untrusted input (a pull request can change it), and
`plan` runs in CI holding SSH keys. paramiko runs `Match exec` while it looks a host up, and the OpenSSH
client runs far more, so such a file is scanned before anything parses it (`svcctl.ssh.target`).

The scan reads each line the way OpenSSH does (`strdelim`: leading whitespace, one `=` or whitespace
after the keyword, quotes, case-insensitive) and the way paramiko does (`str.strip`, `\\w+` keyword,
`shlex` for Match), and reports a line if either reading finds a refused directive.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_WHITESPACE = " \t\r\n"
_DELIMITERS = re.compile(r'[ \t\r\n"=]')
_PARAMIKO_SETTING = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")


@dataclass(frozen=True)
class Finding:
    """One refused line: where, which directive (OpenSSH's spelling) and what it would do."""

    line: int
    directive: str
    why: str


# keyword -> (how OpenSSH spells it, what it does, values that make it harmless)
_DIRECTIVES: dict[str, tuple[str, str, frozenset[str]]] = {
    "proxycommand": ("ProxyCommand", "runs a command on this machine", frozenset({"none"})),
    "localcommand": ("LocalCommand", "runs a command on this machine", frozenset()),
    "permitlocalcommand": (
        "PermitLocalCommand yes",
        "lets LocalCommand run a command on this machine",
        frozenset({"no", "false"}),
    ),
    "knownhostscommand": ("KnownHostsCommand", "runs a command on this machine", frozenset({"none"})),
    "pkcs11provider": ("PKCS11Provider", "loads a library into ssh on this machine", frozenset({"none"})),
    "securitykeyprovider": (
        "SecurityKeyProvider",
        "loads a library into ssh on this machine",
        frozenset({"internal"}),
    ),
    "include": ("Include", "reads other files, which could hold any directive", frozenset()),
    "localforward": ("LocalForward", "opens a port forward svcctl did not ask for", frozenset()),
    "remoteforward": ("RemoteForward", "opens a port forward svcctl did not ask for", frozenset()),
    "dynamicforward": ("DynamicForward", "opens a port forward svcctl did not ask for", frozenset()),
}
_MATCH_EXEC = ("Match exec", "runs a command on this machine")


def _strdelim(text: str) -> tuple[str | None, str | None]:
    """OpenSSH's `strdelim`: the next token and what follows it (None: no more / unmatched quote)."""
    found = _DELIMITERS.search(text)
    if found is None:
        return text, None
    at = found.start()
    if text[at] == '"':
        unquoted = text[:at] + text[at + 1 :]
        end = unquoted.find('"', at)
        if end == -1:
            return None, None
        return unquoted[:end], unquoted[end + 1 :].lstrip(_WHITESPACE)
    rest = text[at + 1 :].lstrip(_WHITESPACE)
    if text[at] != "=" and rest.startswith("="):
        rest = rest[1:].lstrip(_WHITESPACE)
    return text[:at], rest


def _openssh_reading(line: str) -> tuple[str, str] | None:
    """(keyword lowercased, arguments) as OpenSSH's readconf reads the line; None for blanks and comments."""
    line = line.rstrip(_WHITESPACE + "\f")
    keyword, rest = _strdelim(line)
    if keyword == "" and rest is not None:
        keyword, rest = _strdelim(rest)
    if not keyword or keyword.startswith("#"):
        return None
    return keyword.lower(), rest or ""


def _paramiko_reading(line: str) -> tuple[str, str] | None:
    """(keyword lowercased, value) as paramiko's SSHConfig.parse reads the line."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    found = _PARAMIKO_SETTING.match(line)
    return (found.group(1).lower(), found.group(2)) if found else None


def _plain(value: str) -> str:
    """A value with quotes and backslashes gone: how either parser could end up reading it."""
    return re.sub(r"[\"'\\]", "", value).strip().lower()


def _has_exec(arguments: str) -> bool:
    """Whether any criterion of a Match line is (or could be read as) `exec`, negated or not."""
    words = re.split(r"[\s=,]+", _plain(arguments))
    return any(word.lstrip("!") == "exec" for word in words)


def _bad_character(line: str) -> str | None:
    for char in line.removesuffix("\r"):
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


def scan_ssh_config(text: str) -> list[Finding]:
    """Every line of an ssh_config text that runs or loads something, reads other files or opens forwards.

    Also every line holding a control, format or line-separator character (other than tab and CR-LF):
    OpenSSH and paramiko split and strip those differently, and they can hide a line from a reviewer.
    """
    findings: list[Finding] = []
    for number, line in enumerate(text.split("\n"), 1):
        char = _bad_character(line)
        if char is not None:
            findings.append(Finding(number, f"character {char}", "is a control or invisible character"))
            continue
        seen: set[str] = set()
        for reading in (_openssh_reading(line), _paramiko_reading(line)):
            if reading is None:
                continue
            keyword, value = reading
            if keyword == "match" and _has_exec(value):
                directive, why = _MATCH_EXEC
            elif keyword in _DIRECTIVES and _plain(value) not in _DIRECTIVES[keyword][2]:
                directive, why, _ = _DIRECTIVES[keyword]
            else:
                continue
            if directive not in seen:
                seen.add(directive)
                findings.append(Finding(number, directive, why))
    return findings
