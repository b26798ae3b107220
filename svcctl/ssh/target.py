"""Who and where to connect: a node's SSH target and its resolution through the OpenSSH client config."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import paramiko

from svcctl.model.spec import Node
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


@lru_cache(maxsize=32)
def _parse_config(path: str, _mtime_ns: int, _size: int) -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_path(path)


def _load_config(path: Path) -> paramiko.SSHConfig:
    try:
        stat = path.stat()
        return _parse_config(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise SshConfigError(f"cannot read ssh_config {path}: {exc.strerror or exc}") from None
    except (paramiko.SSHException, ValueError) as exc:
        raise SshConfigError(f"cannot parse ssh_config {path}: {exc}") from None


def _expand(path: str, *, host: str = "", user: str = "") -> Path:
    home = str(Path.home())
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
    """
    if target.ssh_config:
        config_file: Path | None = _expand(target.ssh_config)
    else:
        default = Path.home() / ".ssh" / "config"
        config_file = default if default.is_file() else None
    config = _load_config(config_file) if config_file is not None else paramiko.SSHConfig()
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


def _resolve_hop(
    target: SshTarget,
    *,
    alias: str,
    user: str | None,
    port: int | None,
    jump: str | None,
    config: paramiko.SSHConfig,
    config_file: Path | None,
    depth: int,
) -> ResolvedTarget:
    if depth > _MAX_JUMPS:
        raise SshConfigError(
            f"node {target.name}: more than {_MAX_JUMPS} jump hosts; is there a ProxyJump loop in {config_file}?"
        )
    options = config.lookup(alias)
    hostname = options.get("hostname", alias)
    resolved_user = user or options.get("user") or getpass.getuser()
    if port is None:
        port_text = options.get("port", str(DEFAULT_PORT))
        if not port_text.isdigit():
            raise SshConfigError(f"{config_file}: Port {port_text!r} for host {alias} is not a number")
        port = int(port_text)
    is_final = depth == 0
    identities: list[Path] = []
    if is_final and target.identity_file:
        identities.append(_expand(target.identity_file))
    identities += [_expand(p, host=hostname, user=resolved_user) for p in options.get("identityfile", [])]
    if not is_final and not identities and target.identity_file:
        identities.append(_expand(target.identity_file))  # a bastion usually takes the node's key
    if target.known_hosts:
        known: list[Path] = [_expand(target.known_hosts)]
    else:
        user_files = options.get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2").split()
        global_files = options.get("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2").split()
        known = [_expand(p, host=hostname, user=resolved_user) for p in [*user_files, *global_files]]
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
