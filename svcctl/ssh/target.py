"""Who and where to connect: a node's SSH target and its resolution through the OpenSSH client config."""

from __future__ import annotations

import getpass
import os
import pwd
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from svcctl.model.spec import Node
from svcctl.ssh.config_scan import Finding, scan_ssh_config
from svcctl.ssh.effective import Effective, Unhonoured, defaults, parse_ssh_g, ssh_client, ssh_g, ssh_g_argv, unhonoured
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
    certificate_files: tuple[Path, ...] = ()
    proxy_command: str | None = None  # a trusted config's, tokens expanded: run by `$SHELL -c "exec ..."`
    use_agent: bool = True  # False with `IdentityAgent none`
    host_key_alias: str | None = None
    algorithms: tuple[tuple[str, tuple[str, ...]], ...] = ()  # e.g. ("ciphers", (...)) the config chose

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
        """Names whose known_hosts entries pin this host: `name` on port 22, `[name]:port` otherwise; a
        HostKeyAlias alone, on any port, as OpenSSH looks it up (it names the key, not the address)."""
        if self.port == DEFAULT_PORT or self.host_key_alias is not None:
            return self.host_key_names
        return tuple(f"[{name}]:{self.port}" for name in self.host_key_names)


_ADVICE = {
    "ProxyCommand": "move it into your own ~/.ssh/config (svcctl runs it from there), or use ProxyJump",
    "Include": "copy the settings this node needs into the file itself",
    "LocalForward": "delete it: svcctl opens the one forward it needs itself",
    "RemoteForward": "delete it: svcctl opens the one forward it needs itself",
    "DynamicForward": "delete it: svcctl opens the one forward it needs itself",
}
_TRUSTED_ADVICE = "move it into your own ~/.ssh/config, which svcctl trusts, and leave the node's ssh_config unset"
# Host names, addresses and user names svcctl substitutes into %h / %r or hands to ssh: nothing a shell,
# a known_hosts line or an ssh_config pattern would read as syntax.
_SAFE_HOST = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]*")
_SAFE_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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
def _scan_config(path: str, node: str, _mtime_ns: int, _size: int) -> None:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SshConfigError(f"node {node}: cannot read ssh_config {path}: it is not UTF-8 ({exc.reason})") from None
    findings = scan_ssh_config(text)
    if findings:
        raise _refusal(Path(path), node, findings)


def _load_config(path: Path, *, node: str) -> None:
    """Refuse an ssh_config named by the YAML (untrusted) if the scan finds anything, before OpenSSH reads it."""
    try:
        stat = path.stat()
        if not path.is_file():
            raise SshConfigError(f"cannot read ssh_config {path}: it is not a file")
        _scan_config(str(path), node, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise SshConfigError(f"cannot read ssh_config {path}: {exc.strerror or exc}") from None


def check_untrusted_config(path: Path, node: str) -> None:
    """Refuse (SshConfigError naming file:line) an ssh_config named by the YAML that could run anything.

    For every caller that hands the file to the OpenSSH client (`ssh -G`, the OpenSSH forwarder).
    """
    _load_config(path, node=node)


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


_TOKEN = re.compile(r"%.")


def _expand(path: str, *, node: str, what: str = "path", tokens: dict[str, str] | None = None) -> Path:
    """A path with OpenSSH's %-tokens and a leading `~` expanded (`~` and %d: $HOME, as svcctl always had it).

    `tokens` gives the host's own (%h, %n, %p, %r, %k); their values were checked safe before. A token
    svcctl does not know (%C, %j) is an error, never left in the path.
    """
    table = {"%%": "%", "%d": str(Path.home()), "%u": getpass.getuser(), "%i": str(os.getuid())}
    if "%l" in path or "%L" in path:
        table["%l"] = socket.gethostname()
        table["%L"] = table["%l"].split(".")[0]
    table.update(tokens or {})

    def sub(found: re.Match[str]) -> str:
        token = found.group(0)
        if token not in table:
            raise SshConfigError(
                f"node {node}: {what} {path!a} uses the token {token}, which svcctl cannot expand; write the "
                "path out in full (or with %h, %p, %r, %n, %d, %u) for this host."
            )
        return table[token]

    return Path(_TOKEN.sub(sub, path)).expanduser()


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


def _user_config() -> Path | None:
    """The user's own config: `$HOME/.ssh/config`, if there is one."""
    default = Path.home() / ".ssh" / "config"
    return default if default.is_file() else None


def resolve(target: SshTarget) -> ResolvedTarget:
    """Ask OpenSSH (`ssh -G`) for the node's settings and those of its jump hosts; the YAML's fields win.

    The config is the target's `ssh_config` file, else `$HOME/.ssh/config` if present (always passed with
    `-F`, so /etc/ssh/ssh_config takes no part). OpenSSH evaluates Host, Match, Include and tokens; svcctl
    honours HostName, User, Port, IdentityFile, CertificateFile, IdentitiesOnly, IdentityAgent none,
    ProxyCommand, ProxyJump, HostKeyAlias, UserKnownHostsFile, GlobalKnownHostsFile and
    StrictHostKeyChecking (`accept-new` records unknown keys; `no`/`off`/`ask` are NOT honoured: svcctl
    never disables host key checking, it treats them as `yes`). A setting it cannot honour for the host
    (`effective.UNHONOURED`) is an error naming it. The YAML's host, user, port, identity_file (tried
    first), jump_host and known_hosts win over the file, as `ssh -l -p -i -J` would.

    A `ssh_config` named by the target (the YAML) is untrusted: it is refused if it could run a command,
    load a library, read other files or open forwards (`config_scan`) before OpenSSH reads it.
    `$HOME/.ssh/config` is the user's own and trusted: its Include, Match exec and ProxyCommand are
    OpenSSH's to evaluate and svcctl's to run. Host and user names are checked (`check_host`, `check_user`)
    before any use.
    """
    trusted = not target.ssh_config
    config_file: Path | None
    if target.ssh_config:
        config_file = _expand(target.ssh_config, node=target.name, what="ssh_config")
        _load_config(config_file, node=target.name)
    else:
        config_file = _user_config()
    return _resolve_hop(
        target,
        alias=target.host,
        user=target.user,
        port=target.port,
        jump=target.jump_host,
        config_file=config_file,
        trusted=trusted,
        depth=0,
    )


def _refuse_unhonoured(found: list[Unhonoured], config_file: Path | None, alias: str, node: str) -> None:
    if not found:
        return
    where = f"the ssh_config {config_file}" if config_file else "OpenSSH's defaults"
    named = ", ".join(f"{u.directive} {u.value}" for u in found)
    advice = "; ".join(f"{u.directive}: {u.advice}" for u in found)
    raise SshConfigError(
        f"node {node}: {where} sets {named} for host {alias}, which svcctl cannot honour (its SSH client is "
        f"paramiko, not OpenSSH), and ignoring it would connect some other way than you configured. To fix it, "
        f"{advice}; or exclude this host from that Host/Match block."
    )


def _proxy_command(raw: str, tokens: dict[str, str], node: str, config_file: Path | None) -> str:
    """A trusted config's ProxyCommand with %h, %n, %p, %r and %% expanded as OpenSSH does (values checked)."""

    def sub(found: re.Match[str]) -> str:
        tok = found.group(0)
        if tok == "%%":
            return "%"
        if tok not in ("%h", "%n", "%p", "%r"):
            raise SshConfigError(
                f"node {node}: the ProxyCommand in {config_file} uses {tok}; OpenSSH accepts only %h, %n, %p, "
                "%r and %% there. Fix the ProxyCommand."
            )
        return tokens[tok]

    return _TOKEN.sub(sub, raw)


def _openssh_home() -> str:
    """The home directory OpenSSH expands `~` to: the password database's, whatever $HOME says."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir.rstrip("/") or "/"
    except KeyError:
        return str(Path.home())


def _known_hosts_files(effective: Effective, tokens: dict[str, str], node: str) -> list[Path]:
    """Known-hosts files the config names (expanded by OpenSSH, `~` being $HOME here too), else the defaults."""
    files: list[Path] = []
    openssh_home, home = _openssh_home(), str(Path.home())
    for configured, default in (
        (effective.user_known_hosts, ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")),
        (effective.global_known_hosts, ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")),
    ):
        if configured is None:
            files += [_expand(p, node=node, what="known_hosts file", tokens=tokens) for p in default]
            continue
        for value in configured:
            if value.lower() == "none":
                continue
            if openssh_home != home and (value == openssh_home or value.startswith(openssh_home + "/")):
                value = home + value[len(openssh_home) :]  # OpenSSH's `~` is the passwd entry's; svcctl's is $HOME
            files.append(Path(value))
    return files


def _resolve_hop(
    target: SshTarget,
    *,
    alias: str,
    user: str | None,
    port: int | None,
    jump: str | None,
    config_file: Path | None,
    trusted: bool,
    depth: int,
) -> ResolvedTarget:
    if depth > _MAX_JUMPS:
        raise SshConfigError(
            f"node {target.name}: more than {_MAX_JUMPS} jump hosts; is there a ProxyJump loop in {config_file}?"
        )
    node = target.name
    role = "host" if depth == 0 else "jump host"
    check_host(alias, node, role)  # before ssh -G: a trusted `Match exec` may substitute it (%h)
    if user is not None:
        check_user(user, node, f"{role} user")
    ssh = ssh_client()
    argv = ssh_g_argv(ssh, alias, config=str(config_file) if config_file else None, user=user, port=port)
    baseline = defaults(ssh)
    effective = parse_ssh_g(ssh_g(argv, node=node, config=config_file), baseline, where=f"ssh -G {alias}")
    _refuse_unhonoured(unhonoured(effective, baseline), config_file, alias, node)
    hostname = check_host(effective.hostname, node, f"HostName of {role} {alias}")
    resolved_user = check_user(effective.user, node, f"{role} user")
    port = effective.port
    key_alias = effective.host_key_alias  # checked where it is written (known_hosts) or substituted (%k)
    tokens = {"%h": hostname, "%n": alias, "%p": str(port), "%r": resolved_user}
    if key_alias is None or _SAFE_HOST.fullmatch(key_alias):
        tokens["%k"] = key_alias or alias
    is_final = depth == 0
    identities: list[Path] = []
    if is_final and target.identity_file:
        identities.append(_expand(target.identity_file, node=node, what="identity_file"))
    identities += [_expand(p, node=node, what="IdentityFile", tokens=tokens) for p in effective.identity_files]
    if not is_final and not identities and target.identity_file:
        identities.append(_expand(target.identity_file, node=node, what="identity_file"))  # a bastion: the node's key
    certificates = [_expand(p, node=node, what="CertificateFile", tokens=tokens) for p in effective.certificate_files]
    if target.known_hosts:
        known = [_expand(target.known_hosts, node=node, what="known_hosts")]
    else:
        known = _known_hosts_files(effective, tokens, node)
    names = (key_alias,) if key_alias else tuple(dict.fromkeys([alias, hostname]))

    proxy: str | None = None
    jump_spec: str | None
    if jump is not None:  # the YAML's jump_host (or the rest of a chain) wins over the config's, as ssh -J does
        jump_spec = None if jump.strip().lower() == "none" else jump
    else:
        jump_spec = effective.proxy_jump
        if effective.proxy_command is not None:
            if not trusted:  # the scan refused it already; never run a command an untrusted file names
                raise SshConfigError(f"node {node}: {config_file} sets a ProxyCommand for host {alias}; refused.")
            proxy = _proxy_command(effective.proxy_command, tokens, node, config_file)
    resolved_jump: ResolvedTarget | None = None
    if jump_spec:
        hops = [hop for hop in jump_spec.split(",") if hop.strip()]
        jump_user, jump_host, jump_port = parse_jump(hops[-1])
        resolved_jump = _resolve_hop(
            target,
            alias=jump_host,
            user=jump_user,
            port=jump_port,
            jump=",".join(hops[:-1]) if len(hops) > 1 else None,
            config_file=config_file,
            trusted=trusted,
            depth=depth + 1,
        )
    return ResolvedTarget(
        name=node,
        alias=alias,
        hostname=hostname,
        port=port,
        user=resolved_user,
        identity_files=tuple(dict.fromkeys(identities)),
        identities_only=effective.identities_only,
        known_hosts_files=tuple(dict.fromkeys(known)),
        host_key_names=names,
        accept_new_host_keys=target.accept_new_host_keys or effective.strict_host_key_checking == "accept-new",
        connect_timeout=target.connect_timeout,
        jump=resolved_jump,
        config_file=config_file,
        certificate_files=tuple(dict.fromkeys(certificates)),
        proxy_command=proxy,
        use_agent=(effective.identity_agent or "").lower() != "none",
        host_key_alias=key_alias,
        algorithms=effective.algorithms,
    )
