"""OpenSSH command-line options that reach a resolved target exactly as svcctl's own SSH layer does.

For the OpenSSH clients svcctl starts (Ansible's ssh during apply): the settings are the ones `resolve`
got from `ssh -G` and the YAML, passed explicitly with `-F none`, so ssh reads no config file of its own
and plan and apply reach the same host, as the same user, with the same keys, certificates, proxy and
known_hosts. Host keys are strict, nothing is forwarded, no local command runs.

Every path and command is passed with its `%` doubled: ssh expands tokens in them, and they were
expanded already.
"""

from __future__ import annotations

import shlex

from svcctl.ssh.target import ResolvedTarget

NO_FORWARDING = ("-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "PermitLocalCommand=no")
"""A node is never handed the operator's agent, display or a local command (a hostile node could use them)."""

_STDIO_TARGET = "[%h]:%p"
_SPELLING = {
    "ciphers": "Ciphers",
    "macs": "MACs",
    "kexalgorithms": "KexAlgorithms",
    "hostkeyalgorithms": "HostKeyAlgorithms",
    "pubkeyacceptedalgorithms": "PubkeyAcceptedAlgorithms",
}


def _literal(text: str) -> str:
    """A value ssh will not expand: `%` doubled."""
    return text.replace("%", "%%")


def config_word(text: str) -> str:
    """One word of an OpenSSH option value: double-quoted when it holds a space or quote (ssh's argv_split)."""
    if not any(c.isspace() or c in "\\\"'" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def openssh_options(target: ResolvedTarget, ssh: str = "ssh") -> list[str]:
    """ssh options for `target` (not its host, user or port: those are the caller's), jump hosts included.

    `-F none` first: no ~/.ssh/config or /etc/ssh/ssh_config adds anything svcctl did not resolve.
    A ProxyCommand from the user's own config is passed as resolved (tokens expanded, then escaped), so
    ssh runs the very command svcctl runs; a jump host becomes `ssh ... -W [%h]:%p` with these same
    options for the jump host, recursively.
    """
    opts = ["-F", "none", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", *NO_FORWARDING]
    if target.known_hosts_files:
        files = " ".join(config_word(_literal(str(p))) for p in target.known_hosts_files)
        opts += ["-o", "UserKnownHostsFile=" + files, "-o", "GlobalKnownHostsFile=none"]
    for ident in target.identity_files:  # not -i, which ssh checks for before it expands tokens
        opts += ["-o", "IdentityFile=" + config_word(_literal(str(ident)))]
    for cert in target.certificate_files:
        opts += ["-o", "CertificateFile=" + config_word(_literal(str(cert)))]
    if target.identities_only:
        opts += ["-o", "IdentitiesOnly=yes"]
    if target.host_key_alias is not None:  # the name svcctl looked the host's key up under
        opts += ["-o", "HostKeyAlias=" + target.host_key_alias]
    if not target.use_agent:
        opts += ["-o", "IdentityAgent=none"]
    for keyword, names in target.algorithms:
        opts += ["-o", f"{_SPELLING[keyword]}={','.join(names)}"]
    if target.proxy_command is not None:
        opts += ["-o", "ProxyCommand=" + _literal(target.proxy_command)]
    elif target.jump is not None:
        opts += ["-o", "ProxyCommand=" + jump_command(target.jump, ssh)]
    return opts


def jump_command(jump: ResolvedTarget, ssh: str = "ssh") -> str:
    """The ProxyCommand that carries a connection through `jump`: `ssh <its options> -W [%h]:%p`."""
    words = [ssh, *openssh_options(jump, ssh), "-o", "ControlMaster=no", "-o", "ControlPath=none"]
    words += ["-l", jump.user, "-p", str(jump.port), "-W", _STDIO_TARGET, "--", jump.hostname]
    # ssh expands %-tokens in ProxyCommand: keep the two we mean, escape (and quote) every other word.
    return " ".join(w if w == _STDIO_TARGET else shlex.quote(_literal(w)) for w in words)
