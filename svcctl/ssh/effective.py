"""A host's effective OpenSSH client settings, as `ssh -G` prints them: asked of OpenSSH, parsed into a value.

OpenSSH itself evaluates `Host`, `Match` (including `exec`, in a trusted config), `Include`, token and
`~` expansion in HostName and the known_hosts files; svcctl reads the result. The parser is a pure
function (`parse_ssh_g`), tested on recorded outputs; `ssh_g` runs the client with stdin closed, a
scrubbed environment, and no shell.

OpenSSH prints its built-in defaults too, so a setting is known to come from the config only by comparing
with what the same client prints for no config at all (`defaults`): that is how a default `IdentityFile`
list is told from one the config sets.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from svcctl.secrets import scrubbed_environ
from svcctl.ssh.errors import SshConfigError

_TIMEOUT_S = 30
_MAX_OUTPUT = 1 << 20

Options = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Effective:
    """What `ssh -G` says for one host: the settings svcctl honours, typed; all of them raw in `options`.

    A field is None (or empty) when the config leaves it at OpenSSH's default, so that svcctl's own
    defaults (its `$HOME`, its default keys) apply exactly as before.
    """

    host: str
    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...] = ()  # raw (`~`, `%h` unexpanded), as the config gives them
    certificate_files: tuple[str, ...] = ()
    identities_only: bool = False
    proxy_command: str | None = None  # raw: %h, %p, %r, %n unexpanded
    proxy_jump: str | None = None
    user_known_hosts: tuple[str, ...] | None = None  # expanded by OpenSSH
    global_known_hosts: tuple[str, ...] | None = None
    strict_host_key_checking: str = "ask"  # true, false, ask, accept-new
    host_key_alias: str | None = None
    identity_agent: str | None = None
    algorithms: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (keyword, names) the config changed
    options: Options = field(default_factory=dict)


ALGORITHMS = ("ciphers", "macs", "kexalgorithms", "hostkeyalgorithms", "pubkeyacceptedalgorithms")
"""Algorithm lists svcctl honours when the config changes them: paramiko keeps only those (in that order),
and Ansible's ssh is given the list itself."""


def parse_options(text: str) -> dict[str, tuple[str, ...]]:
    """`ssh -G` output as keyword (lowercase) -> values in order (IdentityFile and friends repeat)."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword:
            options.setdefault(keyword.lower(), []).append(value.strip())
    return {k: tuple(v) for k, v in options.items()}


def _one(options: Options, key: str) -> str | None:
    values = options.get(key)
    return values[0] if values else None


def _set(options: Options, defaults: Options, key: str) -> tuple[str, ...] | None:
    """The values of `key` if the config set them (they differ from OpenSSH's defaults), else None."""
    values = options.get(key, ())
    return None if values == defaults.get(key, ()) else values


def parse_ssh_g(text: str, defaults: Options, *, where: str = "ssh -G") -> Effective:
    """The typed settings in one `ssh -G` output; `defaults` is the same client's output for no config.

    Raises SshConfigError when the output lacks what every `ssh -G` prints (host, hostname, user, port).
    """
    options = parse_options(text)
    host, hostname, user, port = (_one(options, k) for k in ("host", "hostname", "user", "port"))
    if host is None or hostname is None or user is None or port is None or not port.isdigit():
        raise SshConfigError(f"{where} printed no host, hostname, user and port; is `ssh` the OpenSSH client?")
    identities = _set(options, defaults, "identityfile") or ()
    proxy = _one(options, "proxycommand")
    jump = _one(options, "proxyjump")
    return Effective(
        host=host,
        hostname=hostname,
        user=user,
        port=int(port),
        identity_files=identities,
        certificate_files=options.get("certificatefile", ()),
        identities_only=_one(options, "identitiesonly") == "yes",
        proxy_command=None if proxy is None or proxy.lower() == "none" else proxy,
        proxy_jump=None if jump is None or jump.lower() == "none" else jump,
        user_known_hosts=_split(_set(options, defaults, "userknownhostsfile")),
        global_known_hosts=_split(_set(options, defaults, "globalknownhostsfile")),
        strict_host_key_checking=(_one(options, "stricthostkeychecking") or "ask").lower(),
        host_key_alias=_one(options, "hostkeyalias"),
        identity_agent=_one(options, "identityagent"),
        algorithms=tuple(
            (key, tuple(name for name in values[0].split(",") if name))
            for key in ALGORITHMS
            if (values := _set(options, defaults, key))
        ),
        options=options,
    )


def _split(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Known-hosts files: OpenSSH prints them space-separated on one line."""
    if values is None:
        return None
    return tuple(word for value in values for word in value.split())


# ---------------------------------------------------------------------------------------------------------------
# What svcctl cannot honour: refused for the hosts they apply to, never silently ignored.

# keyword -> (OpenSSH's spelling, values that are fine, what to do instead)
UNHONOURED: dict[str, tuple[str, frozenset[str], str]] = {
    "proxyusefdpass": ("ProxyUseFdpass", frozenset({"no"}), "remove it: svcctl talks to the ProxyCommand's stdio"),
    "canonicalizehostname": (
        "CanonicalizeHostname",
        frozenset({"false", "no"}),
        "give the full name as HostName instead",
    ),
    "addressfamily": ("AddressFamily", frozenset({"any"}), "give an address of that family as HostName instead"),
    "bindaddress": ("BindAddress", frozenset(), "remove it for this host"),
    "bindinterface": ("BindInterface", frozenset(), "remove it for this host"),
    "knownhostscommand": ("KnownHostsCommand", frozenset({"none"}), "record the host's key in a known_hosts file"),
    "pkcs11provider": ("PKCS11Provider", frozenset({"none"}), "use a key file or ssh-agent instead"),
    "securitykeyprovider": ("SecurityKeyProvider", frozenset({"internal"}), "use a key file or ssh-agent instead"),
    "revokedhostkeys": (
        "RevokedHostKeys",
        frozenset({"none"}),
        "mark the revoked keys `@revoked` in a known_hosts file svcctl reads instead",
    ),
    "requiredrsasize": ("RequiredRSASize", frozenset({"1024"}), "remove it for this host (paramiko has no minimum)"),
    "pubkeyauthentication": (
        "PubkeyAuthentication",
        frozenset({"true", "yes", "unbound", "host-bound"}),
        "svcctl logs in with keys only; allow it for this host",
    ),
}


@dataclass(frozen=True)
class Unhonoured:
    """One setting svcctl cannot honour: how OpenSSH spells it, its value, what to do instead."""

    directive: str
    value: str
    advice: str


def unhonoured(effective: Effective, defaults: Options) -> list[Unhonoured]:
    """The settings of `effective` that svcctl cannot carry out as OpenSSH would.

    Only settings the config changed count (a value OpenSSH prints by default is never refused), and
    IdentityAgent is refused only when it names a socket other than $SSH_AUTH_SOCK (svcctl's agent).
    """
    found: list[Unhonoured] = []
    for key, (directive, fine, advice) in UNHONOURED.items():
        values = _set(effective.options, defaults, key)
        if values and values[0].lower() not in fine:
            found.append(Unhonoured(directive, values[0], advice))
    agent = effective.identity_agent
    if agent is not None and agent.lower() not in ("none", "ssh_auth_sock", "$ssh_auth_sock"):
        found.append(Unhonoured("IdentityAgent", agent, "set SSH_AUTH_SOCK to that socket instead"))
    return found


# ---------------------------------------------------------------------------------------------------------------
# Running ssh -G


def ssh_client() -> str:
    """The OpenSSH client svcctl asks for settings (and Ansible connects with): `ssh` on PATH."""
    found = shutil.which("ssh")
    if found is None:
        raise SshConfigError(
            "svcctl asks the OpenSSH client (`ssh -G`) how to reach each node, and there is no `ssh` on PATH; "
            "install the OpenSSH client (openssh-client), which apply needs anyway."
        )
    return found


def ssh_g_argv(
    ssh: str, host: str, *, config: str | None, user: str | None = None, port: int | None = None
) -> list[str]:
    """The `ssh -G` command line: names and numbers only, each its own argument, the host after `--`.

    `config` None reads no file at all (`-F none`): svcctl always names the file, so the system-wide
    /etc/ssh/ssh_config never takes part and `~/.ssh/config` means `$HOME/.ssh/config`.
    """
    argv = [ssh, "-G", "-F", config if config is not None else "none"]
    if user is not None:
        argv += ["-l", user]
    if port is not None:
        argv += ["-p", str(port)]
    return [*argv, "--", host]


def ssh_g(argv: Sequence[str], *, node: str, config: Path | None = None) -> str:
    """Run `ssh -G` (no shell, stdin closed, the key scrubbed from its environment) and return its output.

    Answers are kept for the process's life, keyed by the command line and the config file's inode, size
    and modification time (a file it includes that changes meanwhile is not noticed).
    """
    stamp: tuple[int, int, int] | None = None
    if config is not None:
        with contextlib.suppress(OSError):
            info = config.stat()
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
    return _run(tuple(argv), node, stamp)


@lru_cache(maxsize=256)
def _run(argv: tuple[str, ...], node: str, _stamp: tuple[int, int, int] | None) -> str:
    try:
        res = subprocess.run(
            argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=_TIMEOUT_S, env=scrubbed_environ(), check=False
        )
    except subprocess.TimeoutExpired:
        raise SshConfigError(
            f"node {node}: `ssh -G` did not answer within {_TIMEOUT_S} s; does a `Match exec` in your ssh_config hang?"
        ) from None
    except OSError as exc:
        raise SshConfigError(f"node {node}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    out, err = res.stdout[:_MAX_OUTPUT].decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")
    if res.returncode != 0:
        said = " ".join(line.strip() for line in err.splitlines() if line.strip())[:500] or "nothing"
        raise SshConfigError(
            f"node {node}: OpenSSH cannot read the ssh settings for host {argv[-1]} (`ssh -G` exited "
            f"{res.returncode}; it said: {said}). Fix the ssh_config it names."
        )
    return out


def defaults(ssh: str) -> dict[str, tuple[str, ...]]:
    """What this OpenSSH client prints for a host no config mentions: its built-in defaults."""
    return parse_options(ssh_g(ssh_g_argv(ssh, "svcctl-defaults.invalid", config=None), node="(defaults)"))


def clear_cache() -> None:
    """Forget every `ssh -G` answer (for tests that change a config file in place)."""
    _run.cache_clear()
