"""Hostile SSH input without any host: an ssh_config from a pull request, host names, known_hosts lines."""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from svcctl.ssh import (
    ResolvedTarget,
    SshConfigError,
    SshTarget,
    check_host,
    check_host_key,
    check_user,
    resolve,
    scan_ssh_config,
    valid_known_host_name,
)
from svcctl.tunnel.forward import ForwardSpec, OpenSshForwarder

LAB = Path("/var/lib/svcctl-lab/ssh_config")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own: no real ~/.ssh/config or known_hosts takes part."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def keygen(path: Path) -> bytes:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1])


# -- the scan: spellings OpenSSH or paramiko would act on ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "directive"),
    [
        ('Match exec "touch /tmp/x"', "Match exec"),
        ("match  EXEC true", "Match exec"),
        ("MATCH Exec true", "Match exec"),
        ("Match host x exec y", "Match exec"),
        ("Match host=x exec=y", "Match exec"),
        ('Match !exec "false"', "Match exec"),
        ('Match !"exec" false', "Match exec"),
        ('Match "exec" "true"', "Match exec"),
        ("Match e\\xec true", "Match exec"),  # paramiko's shlex reads exec
        ("Match ex''ec true", "Match exec"),
        ("\t Match\texec\ttrue", "Match exec"),
        ("Match=exec true", "Match exec"),
        ("Match = originalhost x exec y", "Match exec"),
        ("\u00a0Match exec true", "Match exec"),  # str.strip (paramiko) removes a no-break space
        ("Match\u00a0exec true", "Match exec"),
        ("Match exec true # comment", "Match exec"),
        ("ProxyCommand touch /tmp/x", "ProxyCommand"),
        ("ProxyCommand=touch /tmp/x", "ProxyCommand"),
        ("ProxyCommand = touch /tmp/x", "ProxyCommand"),
        ("  proxycommand\ttouch /tmp/x", "ProxyCommand"),
        ("PROXYCOMMAND nc %h %p", "ProxyCommand"),
        ('"ProxyCommand" touch /tmp/x', "ProxyCommand"),
        ('Proxy"Command" touch /tmp/x', "ProxyCommand"),  # OpenSSH joins a quoted part to the keyword
        ('"ProxyCommand"touch /tmp/x', "ProxyCommand"),
        ("=ProxyCommand touch /tmp/x", "ProxyCommand"),  # OpenSSH skips a leading '='
        ('ProxyCommand "touch /tmp/x"', "ProxyCommand"),
        ("LocalCommand touch /tmp/x", "LocalCommand"),
        ("localcommand=none", "LocalCommand"),
        ("PermitLocalCommand yes", "PermitLocalCommand yes"),
        ("PermitLocalCommand=YES", "PermitLocalCommand yes"),
        ('PermitLocalCommand "yes"', "PermitLocalCommand yes"),
        ("PermitLocalCommand true", "PermitLocalCommand yes"),
        ("KnownHostsCommand /bin/sh -c id %H", "KnownHostsCommand"),
        ("Include ~/.ssh/other", "Include"),
        ("include=/etc/ssh/ssh_config.d/*.conf", "Include"),
        ("PKCS11Provider /tmp/evil.so", "PKCS11Provider"),
        ("SecurityKeyProvider /tmp/evil.so", "SecurityKeyProvider"),
        ("RemoteForward 9000 127.0.0.1:22", "RemoteForward"),
        ("LocalForward 9000 127.0.0.1:22", "LocalForward"),
        ("DynamicForward 1080", "DynamicForward"),
        ('Host x\rMatch exec "touch /tmp/x"', "character U+000D"),  # paramiko's files split at a bare CR
        ("Host x\x0bProxyCommand y", "character U+000B"),
        ("\x85Match exec true", "character U+0085"),
        ("\x1b[2K# looks like a comment", "character U+001B"),
        ("# fine \u202e txet neddih", "character U+202E"),
        ("Host a\u2028Match exec b", "character U+2028"),
        ("Host a\x00", "character U+0000"),
    ],
)
def test_a_refused_directive_is_found_however_it_is_spelled(line: str, directive: str) -> None:
    text = f"Host lab-1\n  HostName 10.0.0.1\n{line}\nHost other\n"
    assert [(f.line, f.directive) for f in scan_ssh_config(text)] == [(3, directive)]


@pytest.mark.parametrize(
    "line",
    [
        '# Match exec "touch /tmp/x"',
        "   #ProxyCommand touch /tmp/x",
        "\t# Include elsewhere",
        "ProxyCommand none",
        'ProxyCommand "none"',
        "ProxyCommand=NONE",
        "PermitLocalCommand no",
        "PermitLocalCommand=false",
        "KnownHostsCommand none",
        "PKCS11Provider none",
        "SecurityKeyProvider internal",
        "Match host exec-1",
        "Match host executor user deploy",
        "Match originalhost db-* user ops",
        "Match all",
        "Host exec",
        "HostName 10.0.0.1",
        "ProxyJump ops@bastion:2200",
        "ControlPath /var/lib/svcctl-lab/cm/%C",
        "IdentityFile ~/.ssh/id_ed25519",
        "StrictHostKeyChecking accept-new",
        "User deploy\r",
        "\tUser\tdeploy",
        "",
        "   ",
    ],
)
def test_harmless_lines_pass(line: str) -> None:
    assert scan_ssh_config(f"Host lab-1\n{line}\n") == []


def test_every_refused_line_is_reported_with_its_number() -> None:
    text = "# header\r\nInclude a\r\nHost x\r\n  ProxyCommand nc %h %p\r\n\r\nMatch exec true\r\n"
    assert [(f.line, f.directive) for f in scan_ssh_config(text)] == [
        (2, "Include"),
        (4, "ProxyCommand"),
        (6, "Match exec"),
    ]


def test_the_labs_own_config_passes() -> None:
    text = (
        "# written by lab/labctl.py\n\nHost lab-1\n  HostName 10.211.37.11\n  User deploy\n"
        "  IdentityFile /var/lib/svcctl-lab/id_ed25519\n  IdentitiesOnly yes\n"
        "  UserKnownHostsFile /var/lib/svcctl-lab/known_hosts\n  StrictHostKeyChecking yes\n"
        "  ControlMaster auto\n  ControlPath /var/lib/svcctl-lab/cm/%C\n  ControlPersist 60\n"
        "  ConnectTimeout 5\n  ServerAliveInterval 5\n"
    )
    assert scan_ssh_config(text) == []
    if LAB.is_file():
        assert scan_ssh_config(LAB.read_text()) == []


# -- an ssh_config named by the YAML -------------------------------------------------------------------------


def test_a_yaml_named_config_with_match_exec_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    config = tmp_path / "ssh_config"
    config.write_text(f'Host lab-1\n  HostName 10.0.0.1\nMatch exec "touch {marker}"\n  User x\n')
    with pytest.raises(SshConfigError) as caught:
        resolve(SshTarget("n1", "lab-1", ssh_config=str(config)))
    message = str(caught.value)
    assert message.startswith(f"node n1: {config}:3: Match exec runs a command on this machine")
    assert "move it into your own ~/.ssh/config, which svcctl trusts" in message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("ProxyCommand touch {marker}", "move it into your own ~/.ssh/config (svcctl runs it from there)"),
        ("Include {marker}", "copy the settings this node needs into the file itself"),
        ("LocalCommand touch {marker}", "your own ~/.ssh/config, which svcctl trusts"),
        ("RemoteForward 9000 127.0.0.1:22", "svcctl opens the one forward it needs itself"),
        ("# \x1b]0;owned\x07", "remove it"),
    ],
)
def test_other_refusals_say_what_to_do_instead(tmp_path: Path, line: str, advice: str) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host lab-1\n  HostName 10.0.0.1\n  " + line.format(marker=tmp_path / "marker") + "\n")
    with pytest.raises(SshConfigError, match=f"{config}:3: ") as caught:
        resolve(SshTarget("n1", "lab-1", ssh_config=str(config)))
    assert advice in str(caught.value)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)


def test_several_refused_lines_are_all_named(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Include x\nHost a\n  ProxyCommand y\nMatch exec z\n")
    with pytest.raises(SshConfigError) as caught:
        resolve(SshTarget("n1", "a", ssh_config=str(config)))
    assert f"{config}:1: Include" in str(caught.value)
    assert "Also refused: line 3 (ProxyCommand), line 4 (Match exec)." in str(caught.value)


def test_a_yaml_named_config_is_refused_even_when_it_is_the_users_own(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    own = home / ".ssh" / "config"
    own.write_text(f'Match exec "touch {marker}"\n  User x\n')
    with pytest.raises(SshConfigError, match="Match exec"):
        resolve(SshTarget("n1", "lab-1", ssh_config=str(own)))
    assert not marker.exists()


def test_a_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_bytes(b"Host a\n  User \xff\n")
    with pytest.raises(SshConfigError, match="is not UTF-8"):
        resolve(SshTarget("n1", "a", ssh_config=str(config)))


# -- the user's own ~/.ssh/config ----------------------------------------------------------------------------


def test_the_users_own_config_is_trusted_match_exec_and_all(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115 (invoke copies stdin to the command)
    marker = tmp_path / "marker"
    (home / ".ssh" / "config").write_text(f'Match exec "touch {marker}"\n  HostName 192.0.2.7\n')
    assert resolve(SshTarget("n1", "lab-1")).hostname == "192.0.2.7"
    assert marker.exists()  # as OpenSSH would: the user wrote it


def test_proxycommand_in_the_users_own_config_is_honoured_with_checked_tokens(home: Path) -> None:
    own = home / ".ssh" / "config"
    own.write_text(
        "Host other\n  HostName 192.0.2.9\n\nHost behind-*\n  User ops\n  ProxyCommand nc -q0 %h %p # %r %n %%\n"
    )
    got = resolve(SshTarget("n1", "behind-1", port=2200))
    assert got.proxy_command == "nc -q0 behind-1 2200 # ops behind-1 %"
    assert got.jump is None and got.config_file == own
    assert resolve(SshTarget("n2", "other")).proxy_command is None  # a block for other hosts does not matter
    # the YAML's jump_host wins over the config's ProxyCommand, as `ssh -J` does
    assert resolve(SshTarget("n1", "behind-1", jump_host="other")).proxy_command is None


def test_a_proxycommand_token_openssh_does_not_accept_is_an_error(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  ProxyCommand nc %C %p\n")
    with pytest.raises(SshConfigError, match=r"the ProxyCommand in .* uses %C; OpenSSH accepts only"):
        resolve(SshTarget("n1", "a"))


def test_include_in_the_users_own_config_is_honoured(home: Path, tmp_path: Path) -> None:
    included = tmp_path / "conf.d"
    included.mkdir()
    (included / "hidden.conf").write_text("Host hidden\n  HostName 192.0.2.10\n  Port 2022\n  User ops\n")
    (home / ".ssh" / "config").write_text(f"Include {included}/*.conf\nHost a\n  HostName 192.0.2.9\n")
    got = resolve(SshTarget("n1", "hidden"))
    assert (got.hostname, got.port, got.user) == ("192.0.2.10", 2022, "ops")
    assert resolve(SshTarget("n1", "a")).hostname == "192.0.2.9"


@pytest.mark.parametrize(
    ("line", "directive"),
    [
        ("ProxyUseFdpass yes", "ProxyUseFdpass yes"),
        ("CanonicalizeHostname yes", "CanonicalizeHostname true"),
        ("AddressFamily inet6", "AddressFamily inet6"),
        ("BindAddress 192.0.2.1", "BindAddress 192.0.2.1"),
        ("KnownHostsCommand /bin/true", "KnownHostsCommand /bin/true"),
        ("PubkeyAuthentication no", "PubkeyAuthentication false"),
        ("IdentityAgent /tmp/other.sock", "IdentityAgent /tmp/other.sock"),
        ("RevokedHostKeys /etc/ssh/revoked", "RevokedHostKeys /etc/ssh/revoked"),
        ("RequiredRSASize 2048", "RequiredRSASize 2048"),
    ],
)
def test_a_setting_svcctl_cannot_honour_is_an_error_for_its_hosts_only(home: Path, line: str, directive: str) -> None:
    own = home / ".ssh" / "config"
    own.write_text(f"Host a\n  {line}\nHost b\n  HostName 192.0.2.9\n")
    with pytest.raises(SshConfigError) as caught:
        resolve(SshTarget("n1", "a"))
    message = str(caught.value)
    assert message.startswith(f"node n1: the ssh_config {own} sets {directive} for host a, which svcctl cannot honour")
    assert "or exclude this host from that Host/Match block" in message and "\n" not in message
    assert resolve(SshTarget("n2", "b")).hostname == "192.0.2.9"


def test_identity_agent_none_is_honoured(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  IdentityAgent none\nHost b\n  IdentityAgent SSH_AUTH_SOCK\n")
    assert resolve(SshTarget("n1", "a")).use_agent is False
    assert resolve(SshTarget("n1", "b")).use_agent is True


# -- names substituted into %h / %r or written to known_hosts ------------------------------------------------


HOSTILE_NAMES = [
    "lab-1;touch /tmp/x",
    "lab-1 extra",
    "lab-1\n* ssh-ed25519 AAAA",
    "$(id)",
    "`id`",
    "a|b",
    "a&b",
    "a>b",
    "-oProxyCommand=x",
    "*",
    "a,b",
    "a%h",
    "fe80::1%eth0",
    "\x1b[31m",
    "'quoted'",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_host_names_are_refused(name: str) -> None:
    with pytest.raises(SshConfigError, match="is not a safe name"):
        check_host(name, "n1")


@pytest.mark.parametrize("name", ["lab-1", "10.0.0.1", "2001:db8::1", "::1", "db_1.example.org", "LAB-2."])
def test_host_names_and_addresses_pass(name: str) -> None:
    assert check_host(name, "n1") == name


@pytest.mark.parametrize("user", ["deploy;id", "a b", "-l", "a@b", "a\nb", "%r", "$USER"])
def test_hostile_user_names_are_refused(user: str) -> None:
    with pytest.raises(SshConfigError):
        check_user(user, "n1")
    with pytest.raises(SshConfigError, match="user"):
        resolve(SshTarget("n1", "lab-1", user=user))


def test_a_host_never_reaches_match_exec_in_the_users_own_config(home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (home / ".ssh" / "config").write_text('Match exec "true %h"\n  User x\n')
    with pytest.raises(SshConfigError, match="is not a safe name"):
        resolve(SshTarget("n1", f"lab-1;touch {marker}"))
    assert not marker.exists()


def test_hostnames_users_and_jump_hosts_from_a_config_are_checked_too(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host a\n  HostName 10.0.0.1;id\nHost b\n  User x$(id)\nHost c\n  ProxyJump o;id@j\n")
    for alias, what in (("a", "HostName of host a"), ("b", "host user"), ("c", "jump host user")):
        with pytest.raises(SshConfigError, match=f"node n1: {what} "):
            resolve(SshTarget("n1", alias, ssh_config=str(config)))
    with pytest.raises(SshConfigError, match="jump host 'x;y'"):
        resolve(SshTarget("n1", "a2", jump_host="x;y"))


@pytest.mark.parametrize(
    "name",
    ["lab-1", "10.9.9.1", "2001:db8::1", "[lab-1]:2222", "[2001:db8::1]:22", "db_1.example.org", "[::1]:65535"],
)
def test_valid_known_hosts_names(name: str) -> None:
    assert valid_known_host_name(name)


@pytest.mark.parametrize(
    "name",
    [
        *HOSTILE_NAMES,
        "lab-1\n* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",
        "!lab-1",
        "?ab",
        "|1|salt|hash",
        "@cert-authority",
        "[lab-1]:0",
        "[lab-1]:99999",
        "[lab-1]:22x",
        "[lab 1]:22",
        "[*]:22",
        "-lab",
        ".lab",
        "a" * 300,
    ],
)
def test_invalid_known_hosts_names(name: str) -> None:
    assert not valid_known_host_name(name)


def hostile_target(store: Path, names: tuple[str, ...]) -> ResolvedTarget:
    return ResolvedTarget(
        name="n1",
        alias=names[0],
        hostname="10.9.9.1",
        port=22,
        user="deploy",
        identity_files=(),
        identities_only=False,
        known_hosts_files=(store,),
        host_key_names=names,
        accept_new_host_keys=True,
        connect_timeout=5,
    )


def test_a_name_with_a_newline_cannot_add_a_line_to_known_hosts(tmp_path: Path) -> None:
    blob = keygen(tmp_path / "k")
    store = tmp_path / "known_hosts"
    store.write_text("# pins\n")
    attacker = "AAAAC3NzaC1lZDI1NTE5AAAAIAttackerAttackerAttackerAttackerAttacker"
    poisoned = f"lab-1\n* ssh-ed25519 {attacker}"
    with pytest.raises(SshConfigError, match="will not record the host key") as caught:
        check_host_key(hostile_target(store, (poisoned, "10.9.9.1")), blob)
    assert "\n" not in str(caught.value)
    assert store.read_text() == "# pins\n"
    # and from the YAML, the name is refused before any connection
    with pytest.raises(SshConfigError, match="is not a safe name"):
        resolve(SshTarget("n1", poisoned, known_hosts=str(store), accept_new_host_keys=True))


@pytest.mark.parametrize("alias", ["*", "lab-1,*", "!x", "|1|a|b"])
def test_a_host_key_alias_from_the_config_cannot_write_a_wildcard(tmp_path: Path, alias: str) -> None:
    blob = keygen(tmp_path / "k")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host lab-1\n  HostName 10.9.9.1\n  HostKeyAlias {alias}\n  StrictHostKeyChecking accept-new\n")
    store = tmp_path / "known_hosts"
    target = resolve(SshTarget("n1", "lab-1", ssh_config=str(config), known_hosts=str(store)))
    with pytest.raises(SshConfigError, match="will not record the host key"):
        check_host_key(target, blob)
    assert not store.exists()


def test_a_valid_name_is_still_recorded(tmp_path: Path) -> None:
    blob = keygen(tmp_path / "k")
    store = tmp_path / "known_hosts"
    target = resolve(SshTarget("n1", "lab-1", port=2222, known_hosts=str(store), accept_new_host_keys=True))
    check_host_key(target, blob)
    assert store.read_text().startswith("[lab-1]:2222 ssh-ed25519 ")
    target = resolve(SshTarget("n1", "lab-1", port=2222, known_hosts=str(store)))
    check_host_key(target, blob)  # pinned now
    assert len(store.read_text().splitlines()) == 1


# -- the OpenSSH forwarder -----------------------------------------------------------------------------------


def effective(argv: list[str]) -> dict[str, list[str]]:
    """What ssh would use for that command line (`ssh -G`: no connection is made)."""
    argv = [*argv]
    argv[1] = "-G"  # instead of -N
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    options: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, []).append(value)
    return options


def test_the_openssh_forwarder_never_forwards_the_agent_x11_or_runs_local_commands(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  Tunnel yes\n  UpdateHostKeys yes\n")
    argv = OpenSshForwarder(ForwardSpec(host="lab-1", remote_port=5432, ssh_config=config)).command(10000)
    got = effective(argv)
    assert got["forwardagent"] == ["no"] and got["forwardx11"] == ["no"]
    assert got["permitlocalcommand"] == ["no"] and got["tunnel"] == ["false"]
    assert got["updatehostkeys"] == ["false"]
    assert got["localforward"] == ["[127.0.0.1]:10000 [127.0.0.1]:5432"]  # our own -L survives
    assert got["clearallforwardings"] == ["no"]


def test_the_openssh_forwarders_jump_command_is_as_careful(tmp_path: Path) -> None:
    spec = ForwardSpec(host="lab-1", remote_port=5432, jump="ops@bastion:2200", known_hosts=tmp_path / "a %h b")
    argv = OpenSshForwarder(spec).command(10000)
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    words = shlex.split(proxy.removeprefix("ProxyCommand="))
    for option in ("ForwardAgent=no", "ForwardX11=no", "PermitLocalCommand=no"):
        assert option in words
    assert f"UserKnownHostsFile={tmp_path}/a %%h b" in words  # quoted, and %h in a path is no token
    assert words[-3:] == ["[%h]:%p", "--", "ops@bastion:2200"]


@pytest.mark.parametrize(
    "fields",
    [
        {"host": "lab-1;touch /tmp/x"},
        {"user": "deploy;id"},
        {"jump": "bastion%h;id"},
        {"jump": "ops;id@bastion"},
    ],
)
def test_the_openssh_forwarder_refuses_hostile_names(fields: dict[str, str]) -> None:
    spec = ForwardSpec(**{"host": "lab-1", "remote_port": 5432, **fields})  # type: ignore[arg-type]
    with pytest.raises(SshConfigError, match="is not a safe name"):
        OpenSshForwarder(spec).command(10000)


def test_the_openssh_forwarder_refuses_a_hostile_config(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text('Host *\n  User deploy\nMatch exec "touch /tmp/x"\n')
    with pytest.raises(SshConfigError, match=f"{config}:3: Match exec"):
        OpenSshForwarder(ForwardSpec(host="lab-1", remote_port=5432, ssh_config=config)).command(10000)
