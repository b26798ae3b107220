"""Host key pinning: known_hosts parsing (hashed, `[host]:port`, wildcard entries), checking, accept-new."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from svcctl.ssh.errors import ChangedHostKey, SshConfigError, UnknownHostKey
from svcctl.ssh.target import DEFAULT_PORT, ResolvedTarget

# Host key algorithms that a known_hosts key type may be presented under, best first.
_ALGORITHMS_OF_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}
_known_hosts_lock = threading.Lock()


def fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: `SHA256:` + unpadded base64, as `ssh-keygen -l`."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _blob_type(blob: bytes) -> str:
    """The key type named inside a public key blob (its first SSH string)."""
    if len(blob) < 4:
        return ""
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length].decode("ascii", "replace")


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        parts = pattern.split("|")
        if len(parts) != 4:
            return False
        try:
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
        except ValueError:
            return False
        actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(actual, expected)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, flags=re.IGNORECASE) is not None


@dataclass(frozen=True)
class KnownHostEntry:
    """One line of a known_hosts file, with where it is so messages can point at it."""

    file: Path
    line: int
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes
    marker: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint of the pinned key."""
        return fingerprint(self.blob)

    def matches(self, name: str) -> bool:
        """Whether this entry covers `name` (plain, `[host]:port`, wildcard or hashed; `!` negates)."""
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern[1:] if negated else pattern, name):
                if negated:
                    return False
                hit = True
        return hit


def read_known_hosts(path: Path) -> list[KnownHostEntry]:
    """Parse a known_hosts file (missing file: no entries); lines that cannot be parsed are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SshConfigError(f"cannot read known_hosts {path}: {exc.strerror or exc}") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        if _blob_type(blob) != fields[1]:
            continue
        entries.append(KnownHostEntry(path, number, tuple(fields[0].split(",")), fields[1], blob, marker))
    return entries


def known_entries(target: ResolvedTarget) -> list[KnownHostEntry]:
    """Every known_hosts entry that pins `target` under any of its names (alias or address)."""
    names = target.lookup_names
    return [
        entry
        for path in target.known_hosts_files
        for entry in read_known_hosts(path)
        if any(entry.matches(name) for name in names)
    ]


def preferred_key_types(entries: Sequence[KnownHostEntry], offered: Sequence[str]) -> list[str]:
    """Host key algorithms with those we hold keys for first, so the server shows us a key we can check."""
    first: list[str] = []
    for entry in entries:
        if entry.marker is None:
            first += [a for a in _ALGORITHMS_OF_TYPE.get(entry.key_type, (entry.key_type,)) if a in offered]
    first = list(dict.fromkeys(first))
    return first + [a for a in offered if a not in first]


def check_host_key(target: ResolvedTarget, key_blob: bytes, *, role: str = "") -> None:
    """Refuse a host key that is unknown, revoked or changed; record an unknown one if accept-new is on."""
    entries = known_entries(target)
    verdict = _verdict(target, key_blob, entries, role)
    if verdict is None:
        return
    if isinstance(verdict, UnknownHostKey) and target.accept_new_host_keys:
        with _known_hosts_lock:  # re-check: another thread may have recorded it meanwhile
            verdict = _verdict(target, key_blob, known_entries(target), role)
            if isinstance(verdict, UnknownHostKey):
                _append_known_host(target, key_blob)
                return
    if verdict is not None:
        raise verdict


def _verdict(
    target: ResolvedTarget, blob: bytes, entries: list[KnownHostEntry], role: str
) -> UnknownHostKey | ChangedHostKey | None:
    key_type = _blob_type(blob)
    presented = fingerprint(blob)
    node = target.name
    what = f"{role}{target.shown}"
    for entry in entries:
        if entry.marker == "@revoked" and entry.blob == blob:
            return ChangedHostKey(
                f"node {node}: {what} presented host key {key_type} {presented}, which {entry.file}:{entry.line} "
                "marks as @revoked. svcctl refuses to connect; find out why the key was revoked and give the host "
                "a new key.",
                node=node,
                host=target.hostname,
                expected=[],
                presented=presented,
            )
    pinned = [e for e in entries if e.marker is None]
    if any(e.blob == blob for e in pinned):
        return None
    authorities = [e for e in entries if e.marker == "@cert-authority"]
    if authorities and not pinned:
        raise _certificates_only(target, authorities, what)
    if pinned:
        same_type = [e for e in pinned if e.key_type == key_type] or pinned
        expected = "; ".join(f"{e.key_type} {e.fingerprint} ({e.file}:{e.line})" for e in same_type)
        return ChangedHostKey(
            f"node {node}: the host key of {what} has CHANGED. known_hosts expects {expected}, but the host "
            f"presented {key_type} {presented}. Someone may be intercepting the connection, or the host was "
            "reinstalled. svcctl never connects to a host whose key changed: verify the new fingerprint with "
            f"the host's administrator, then fix or delete {same_type[0].file} line {same_type[0].line} "
            f"(e.g. ssh-keygen -R {target.lookup_names[0]} -f {same_type[0].file}) and record the new key.",
            node=node,
            host=target.hostname,
            expected=[e.fingerprint for e in same_type],
            presented=presented,
        )
    files = ", ".join(str(p) for p in target.known_hosts_files)
    first = target.known_hosts_files[0] if target.known_hosts_files else Path("~/.ssh/known_hosts")
    short_type = key_type.removeprefix("ssh-").split("-")[0]
    port = "" if target.port == DEFAULT_PORT else f" -p {target.port}"
    return UnknownHostKey(
        f"node {node}: the host key of {what} is not known (looked in {files}); the host presented "
        f"{key_type} {presented}. svcctl does not connect to unknown hosts. Verify that fingerprint out of band "
        f"(on the host: ssh-keygen -lf /etc/ssh/ssh_host_{short_type}_key.pub), then record it with "
        f"`ssh-keyscan -t {key_type}{port} {target.hostname} >> {first}`, or let svcctl record it on first "
        "connect with accept_new_host_keys or `StrictHostKeyChecking accept-new` in ssh_config.",
        node=node,
        host=target.hostname,
        key_type=key_type,
        fingerprint=presented,
    )


def _certificates_only(target: ResolvedTarget, authorities: list[KnownHostEntry], what: str) -> SshConfigError:
    """A host pinned only by @cert-authority lines: paramiko cannot verify host certificates, so refuse."""
    where = ", ".join(f"{e.file}:{e.line}" for e in authorities)
    port = "" if target.port == DEFAULT_PORT else f" -p {target.port}"
    return SshConfigError(
        f"node {target.name}: known_hosts trusts {what} only through @cert-authority ({where}): host "
        "certificates signed by that CA. svcctl's SSH client (paramiko) cannot verify host certificates (it checks "
        "no CA signature, principal or validity), so it refuses the host rather than accept it unchecked, even with "
        "accept-new. Pin the host's own key next to that line: verify its fingerprint out of band (on the host: "
        f"ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then add it with `ssh-keyscan -t ed25519{port} "
        f"{target.hostname} >> {authorities[0].file}`, or name a known_hosts file that pins it."
    )


_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_BRACKETED = re.compile(r"\[([^\]]+)\]:([0-9]{1,5})")
_KEY_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,63}")


def _valid_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)  # no scope id: "%" never passes
        except ValueError:
            return False
        return "%" not in host
    return _HOSTNAME.fullmatch(host) is not None


def valid_known_host_name(name: str) -> bool:
    """Whether `name` may be written as a known_hosts host: a host name, IPv4/IPv6 address or `[host]:port`.

    Anything else could make the line a wildcard (`*`, `?`), a negation (`!`), a list (`,`), a hashed
    entry (`|`), a marker (`@`) or more than one line.
    """
    bracketed = _BRACKETED.fullmatch(name)
    if bracketed is not None:
        return _valid_host(bracketed.group(1)) and 1 <= int(bracketed.group(2)) <= 65535
    return _valid_host(name)


def _append_known_host(target: ResolvedTarget, blob: bytes) -> None:
    """Record a newly accepted host key in the first known_hosts file (created 0600 if missing).

    Only names that are plain host names or addresses are written (`valid_known_host_name`): a name from
    the YAML or its ssh_config must not add a line, a wildcard or a marker to the file.
    """
    path = target.known_hosts_files[0]
    key_type = _blob_type(blob)
    for name in target.lookup_names:
        if not valid_known_host_name(name):
            raise SshConfigError(
                f"node {target.name}: will not record the host key in {path}: the name {name!a} is not a host "
                "name, an IPv4/IPv6 address or [host]:port (no wildcards, lists, spaces or control characters). "
                "Fix the node's host, or HostName/HostKeyAlias in its ssh_config."
            )
    if _KEY_TYPE.fullmatch(key_type) is None:
        raise SshConfigError(
            f"node {target.name}: will not record the host key in {path}: its key type {key_type!a} is not a "
            "valid key type name."
        )
    names = ",".join(target.lookup_names)
    line = f"{names} {key_type} {base64.b64encode(blob).decode('ascii')}\n"
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            if out.tell() > 0 and not path.read_bytes().endswith(b"\n"):
                out.write("\n")
            out.write(line)
    except OSError as exc:
        raise SshConfigError(
            f"node {target.name}: cannot record the host key of {target.shown} in {path}: {exc.strerror or exc}"
        ) from None
