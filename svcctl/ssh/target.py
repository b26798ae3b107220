"""Who and where to connect: a node's SSH target and its resolution through the OpenSSH client config."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import paramiko

from svcctl.model.spec import Node
from svcctl.ssh.config_scan import Finding, scan_ssh_config
from svcctl.ssh.errors import SshConfigError

DEFAULT_PORT = 22
_MAX_JUMPS = 8


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node, as declared; `resolve` applies the OpenSSH client config to it."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    jump_host: str | None = None
    ssh_config: str | None = None
    known_hosts: str | None = None
    accept_new_host_keys: bool = False
    connect_timeout: float = 10

    @classmethod
    def from_node(
        cls, name: str, node: Node, *, accept_new_host_keys: bool = False, connect_timeout: float = 10
    ) -> SshTarget:
        """The target of a declared node; a port left at its default lets ssh_config decide."""
        return cls(
            name=name,
            host=node.host,
            user=node.user,
            port=node.port if "port" in node.model_fields_set else None,
            identity_file=node.identity_file,
            jump_host=node.jump_host,
            ssh_config=node.ssh_config,
            known_hosts=node.known_hosts,
            accept_new_host_keys=accept_new_host_keys,
            connect_timeout=connect_timeout,
        )


@dataclass(frozen=True)
class ResolvedTarget:
    """A target after ssh_config: the address to dial, who to log in as, which keys, which known_hosts."""

    name: str
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]
    identities_only: bool
    known_hosts_files: tuple[Path, ...]
    host_key_names: tuple[str, ...]
    accept_new_host_keys: bool
    connect_timeout: float
    jump: ResolvedTarget | None = None
    config_file: Path | None = None

    @property
    def address(self) -> str:
        """`hostname:port` as dialled, with brackets around IPv6 addresses."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"

    @property
    def shown(self) -> str:
        """How messages name the host: `alias (address:port)`, or just the address when they agree."""
        return self.address if self.alias == self.hostname else f"{self.alias} ({self.address})"

    @property
    def lookup_names(self) -> tuple[str, ...]:
        """Names whose known_hosts entries pin this host: `name` on port 22, `[name]:port` otherwise."""
        if self.port == DEFAULT_PORT:
            return self.host_key_names
        return tuple(f"[{name}]:{self.port}" for name in self.host_key_names)


_ADVICE = {
    "ProxyCommand": "use ProxyJump or the node's jump_host instead",
    "Include": "copy the settings this node needs into the file itself",
    "LocalForward": "delete it: svcctl opens the one forward it needs itself",
    "RemoteForward": "delete it: svcctl opens the one forward it needs itself",
    "DynamicForward": "delete it: svcctl opens the one forward it needs itself",
}
_TRUSTED_ADVICE = "move it into your own ~/.ssh/config, which svcctl trusts, and leave the node's ssh_config unset"
# Unsupported in the user's own config: paramiko would silently ignore them (issue #11 adds `ssh -G`).
_UNSUPPORTED = {"proxycommand": "ProxyCommand", "include": "Include"}
# Host names, addresses and user names svcctl substitutes into %h / %r or hands to ssh: nothing a shell,
# a known_hosts line or an ssh_config pattern would read as syntax.
_SAFE_HOST = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]*")
_SAFE_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class _Config:
    """A parsed ssh_config and, for the user's own, where it sets what svcctl does not support yet."""

    parsed: paramiko.SSHConfig
    unsupported: tuple[Finding, ...] = ()


def _refusal(path: Path, node: str, findings: list[Finding]) -> SshConfigError:
    first = findings[0]
    advice = "remove it" if first.directive.startswith("character") else _ADVICE.get(first.directive, _TRUSTED_ADVICE)
    also = ""
    if len(findings) > 1:
        also = " Also refused: " + ", ".join(f"line {f.line} ({f.directive})" for f in findings[1:]) + "."
    return SshConfigError(
        f"node {node}: {path}:{first.line}: {first.directive} {first.why}, and this ssh_config is named by "
        f"the environment's YAML, which a pull request can change; svcctl refuses it before reading the file. "
        f"To keep it, {advice}.{also}"
    )


@lru_cache(maxsize=32)
def _parse_config(path: str, trusted: bool, node: str, _mtime_ns: int, _size: int) -> _Config:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SshConfigError(f"node {node}: cannot read ssh_config {path}: it is not UTF-8 ({exc.reason})") from None
    findings = scan_ssh_config(text)
    if not trusted and findings:
        raise _refusal(Path(path), node, findings)
    unsupported = tuple(f for f in findings if f.directive in _UNSUPPORTED.values())
    return _Config(paramiko.SSHConfig.from_text(text), unsupported)


def _load_config(path: Path, *, trusted: bool, node: str) -> _Config:
    """Parse an ssh_config; one not `trusted` (named by the YAML) is refused if the scan finds anything."""
    try:
        stat = path.stat()
        return _parse_config(str(path), trusted, node, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise SshConfigError(f"cannot read ssh_config {path}: {exc.strerror or exc}") from None
    except (paramiko.SSHException, ValueError) as exc:
        raise SshConfigError(f"cannot parse ssh_config {path}: {exc}") from None


def check_untrusted_config(path: Path, node: str) -> None:
    """Refuse (SshConfigError naming file:line) an ssh_config named by the YAML that could run anything.

    For callers that hand the file to the OpenSSH client itself, which would run far more than paramiko.
    """
    _load_config(path, trusted=False, node=node)


def _refuse_name(value: str, what: str, node: str, allowed: str) -> SshConfigError:
    return SshConfigError(
        f"node {node}: {what} {value!a} is not a safe name; svcctl accepts only {allowed} there, so that "
        "nothing in it can act as shell, ssh_config or known_hosts syntax. Fix the node's host/user/jump_host, "
        "or the HostName/User/ProxyJump in its ssh_config."
    )


def check_host(value: str, node: str, what: str = "host") -> str:
    """`value` if it is a safe host name, alias or address, else SshConfigError.

    A host reaches %h substitution, known_hosts lines and ssh's command line: no control characters,
    whitespace, shell metacharacters, `%` (so no IPv6 scope id), wildcards, brackets or a leading `-`/`.`.
    """
    if len(value) > 255 or _SAFE_HOST.fullmatch(value) is None:
        raise _refuse_name(value, what, node, "letters, digits, '.', '_', '-' and ':' (not first: '.' or '-')")
    return value


def check_user(value: str, node: str, what: str = "user") -> str:
    """`value` if it is a safe login name (it reaches %r substitution and ssh's -l), else SshConfigError."""
    if len(value) > 255 or _SAFE_USER.fullmatch(value) is None:
        raise _refuse_name(value, what, node, "letters, digits, '.', '_' and '-' (not first: '.' or '-')")
    return value


def _expand(path: str, *, host: str = "", user: str = "", node: str = "") -> Path:
    home = str(Path.home())
    if host and "%h" in path:
        check_host(host, node)
    if user and "%r" in path:
        check_user(user, node)
    tokens = {"%%": "%", "%d": home, "%u": getpass.getuser(), "%h": host, "%r": user}
    expanded = re.sub(r"%[%duhr]", lambda m: tokens[m.group(0)], path)
    return Path(expanded).expanduser()


def parse_jump(spec: str) -> tuple[str | None, str, int | None]:
    """Split one ProxyJump hop `[user@]host[:port]` (or `ssh://...`, `[v6]:port`) into its parts."""
    text = spec.strip()
    text = text.removeprefix("ssh://")
    user: str | None = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise SshConfigError(f'cannot parse jump host "{spec}": expected [user@]host[:port]')
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise SshConfigError(f'cannot parse jump host "{spec}": port "{port_text}" is not 1-65535')
        port = int(port_text)
    if not host or (user is not None and not user):
        raise SshConfigError(f'cannot parse jump host "{spec}": expected [user@]host[:port]')
    return user, host, port


def resolve(target: SshTarget) -> ResolvedTarget:
    """Apply the OpenSSH client config to a target; explicit target fields win over the file.

    The config is the target's `ssh_config` file, else ~/.ssh/config if present. HostName, User, Port,
    IdentityFile, IdentitiesOnly, ProxyJump, HostKeyAlias, UserKnownHostsFile, GlobalKnownHostsFile and
    StrictHostKeyChecking are honoured. `StrictHostKeyChecking accept-new` records unknown keys; `no`/`off`
    (and `ask`) are NOT honoured: svcctl never disables host key checking, it treats them as `yes`.

    A `ssh_config` named by the target (the YAML) is untrusted: it is refused if it could run a command,
    load a library, read other files or open forwards (`config_scan`). ~/.ssh/config is the user's own and
    trusted, but its ProxyCommand and Include are refused for the hosts they apply to, as svcctl cannot
    honour them yet. Host and user names are checked (`check_host`, `check_user`) before any use.
    """
    if target.ssh_config:
        config_file: Path | None = _expand(target.ssh_config)
    else:
        default = Path.home() / ".ssh" / "config"
        config_file = default if default.is_file() else None
    if config_file is None:
        config = _Config(paramiko.SSHConfig())
    else:
        config = _load_config(config_file, trusted=not target.ssh_config, node=target.name)
    return _resolve_hop(
        target,
        alias=target.host,
        user=target.user,
        port=target.port,
        jump=target.jump_host,
        config=config,
        config_file=config_file,
        depth=0,
    )


def _refuse_unsupported(
    options: paramiko.SSHConfigDict, config: _Config, config_file: Path | None, alias: str, node: str
) -> None:
    """In the user's own config, ProxyCommand and Include for this host: refused, not silently ignored."""
    for key, directive in _UNSUPPORTED.items():
        if not options.get(key):
            continue
        lines = ", ".join(str(f.line) for f in config.unsupported if f.directive == directive)
        where = f"{config_file}:{lines}" if lines else str(config_file)
        advice = (
            "Use ProxyJump (or the node's jump_host) instead"
            if key == "proxycommand"
            else "Copy the settings this host needs out of the included file into the config itself"
        )
        raise SshConfigError(
            f"node {node}: {where}: {directive} applies to host {alias}, and svcctl does not support {directive} "
            f"yet (issue #11 will resolve hosts with `ssh -G`); ignoring it would connect some other way than "
            f"you configured. {advice}, or exclude this host from that block."
        )


def _resolve_hop(
    target: SshTarget,
    *,
    alias: str,
    user: str | None,
    port: int | None,
    jump: str | None,
    config: _Config,
    config_file: Path | None,
    depth: int,
) -> ResolvedTarget:
    if depth > _MAX_JUMPS:
        raise SshConfigError(
            f"node {target.name}: more than {_MAX_JUMPS} jump hosts; is there a ProxyJump loop in {config_file}?"
        )
    role = "host" if depth == 0 else "jump host"
    check_host(alias, target.name, role)  # before lookup: paramiko substitutes it into `Match exec` (%h)
    if user is not None:
        check_user(user, target.name, f"{role} user")
    try:
        options = config.parsed.lookup(alias)
    except Exception as exc:  # `Match exec` runs through `invoke`, which may be missing or fail in many ways
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SshConfigError(f"node {target.name}: cannot look host {alias} up in {config_file}: {reason}") from None
    _refuse_unsupported(options, config, config_file, alias, target.name)
    hostname = check_host(options.get("hostname", alias), target.name, f"HostName of {role} {alias}")
    resolved_user = check_user(user or options.get("user") or getpass.getuser(), target.name, f"{role} user")
    if port is None:
        port_text = options.get("port", str(DEFAULT_PORT))
        if not port_text.isdigit():
            raise SshConfigError(f"{config_file}: Port {port_text!r} for host {alias} is not a number")
        port = int(port_text)
    is_final = depth == 0
    identities: list[Path] = []
    if is_final and target.identity_file:
        identities.append(_expand(target.identity_file))
    identities += [
        _expand(p, host=hostname, user=resolved_user, node=target.name) for p in options.get("identityfile", [])
    ]
    if not is_final and not identities and target.identity_file:
        identities.append(_expand(target.identity_file))  # a bastion usually takes the node's key
    if target.known_hosts:
        known: list[Path] = [_expand(target.known_hosts)]
    else:
        user_files = options.get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2").split()
        global_files = options.get("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2").split()
        known = [_expand(p, host=hostname, user=resolved_user, node=target.name) for p in [*user_files, *global_files]]
    strict = options.get("stricthostkeychecking", "yes").lower()
    alias_names = options.get("hostkeyalias")
    names = (alias_names,) if alias_names else tuple(dict.fromkeys([alias, hostname]))

    jump_spec = jump if jump is not None else options.get("proxyjump")
    resolved_jump: ResolvedTarget | None = None
    if jump_spec and jump_spec.strip().lower() != "none":
        hops = [hop for hop in jump_spec.split(",") if hop.strip()]
        jump_user, jump_host, jump_port = parse_jump(hops[-1])
        resolved_jump = _resolve_hop(
            target,
            alias=jump_host,
            user=jump_user,
            port=jump_port,
            jump=",".join(hops[:-1]) if len(hops) > 1 else None,
            config=config,
            config_file=config_file,
            depth=depth + 1,
        )
    return ResolvedTarget(
        name=target.name,
        alias=alias,
        hostname=hostname,
        port=port,
        user=resolved_user,
        identity_files=tuple(dict.fromkeys(identities)),
        identities_only=options.get("identitiesonly", "no").lower() == "yes",
        known_hosts_files=tuple(dict.fromkeys(known)),
        host_key_names=names,
        accept_new_host_keys=target.accept_new_host_keys or strict == "accept-new",
        connect_timeout=target.connect_timeout,
        jump=resolved_jump,
        config_file=config_file,
    )
