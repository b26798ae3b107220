"""`ssh -G` read back: the parser on recorded outputs, precedence, what cannot be honoured, and the OpenSSH
options, ProxyCommand and certificates svcctl derives from it. No host: OpenSSH runs, but never connects."""

from __future__ import annotations

import base64
import shlex
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest

from svcctl.ssh import ResolvedTarget, SshConfigError, SshTarget, check_host_key, resolve
from svcctl.ssh.effective import parse_options, parse_ssh_g, unhonoured
from svcctl.ssh.openssh import openssh_options
from svcctl.ssh.proxy import ProxyProcess
from svcctl.ssh.session import _identities, _restrict

CASES = Path(__file__).parent / "ssh_g_cases"
DEFAULTS = parse_options((CASES / "defaults.txt").read_text())


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own, so no real ~/.ssh/config or known_hosts takes part."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def keygen(path: Path, *extra: str) -> bytes:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", *extra, "-f", str(path)], check=True)
    return base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1])


# -- the parser, on outputs recorded from OpenSSH 9.2 (tests/unit/ssh_g_cases/ssh_config) ---------------------


def test_a_recorded_output_parses_into_what_the_config_set() -> None:
    got = parse_ssh_g((CASES / "db-1.txt").read_text(), DEFAULTS)
    assert (got.host, got.hostname, got.user, got.port) == ("db-1", "192.0.2.11", "ops", 2222)
    assert got.identity_files == ("~/.ssh/first", "/keys/%h-second")  # raw: svcctl expands them
    assert got.certificate_files == ("~/.ssh/first-cert.pub",)
    assert got.identities_only is True
    assert (got.proxy_jump, got.proxy_command) == ("ops@bastion:2200,second", None)
    assert got.user_known_hosts == ("/pins/known_hosts", "/pins/more")
    assert got.global_known_hosts is None  # left at OpenSSH's default
    assert (got.strict_host_key_checking, got.host_key_alias, got.identity_agent) == ("accept-new", "db-one", "none")
    assert unhonoured(got, DEFAULTS) == []


def test_defaults_are_told_from_settings_the_config_made() -> None:
    got = parse_ssh_g((CASES / "defaults.txt").read_text(), DEFAULTS)
    assert got.identity_files == ()  # OpenSSH's ~/.ssh/id_* list: svcctl's own defaults apply
    assert got.certificate_files == ()
    assert (got.user_known_hosts, got.global_known_hosts) == (None, None)
    assert (got.proxy_command, got.proxy_jump, got.host_key_alias) == (None, None, None)
    assert got.strict_host_key_checking == "ask"
    assert unhonoured(got, DEFAULTS) == []


def test_a_proxycommand_is_kept_raw_and_what_cannot_be_honoured_is_named() -> None:
    got = parse_ssh_g((CASES / "behind.txt").read_text(), DEFAULTS)
    assert got.proxy_command == "ssh -W %h:%p jump"
    assert [(u.directive, u.value) for u in unhonoured(got, DEFAULTS)] == [
        ("ProxyUseFdpass", "yes"),
        ("AddressFamily", "inet"),
    ]


@pytest.mark.parametrize("text", ["", "host a\nuser b\n", "host a\nhostname a\nuser b\nport x\n"])
def test_an_output_without_host_hostname_user_and_port_is_an_error(text: str) -> None:
    with pytest.raises(SshConfigError, match="printed no host, hostname, user and port"):
        parse_ssh_g(text, DEFAULTS)


def test_the_recorded_config_still_gives_the_recorded_output(home: Path) -> None:
    """The cases stay true of the OpenSSH installed: the same fields, from a live `ssh -G` (as the user's own
    config: it holds a ProxyCommand, which a YAML-named one may not)."""
    (home / ".ssh" / "config").write_text((CASES / "ssh_config").read_text())
    got = resolve(SshTarget("n", "db-1", jump_host="none"))
    assert (got.hostname, got.port, got.user, got.host_key_alias, got.use_agent) == (
        "192.0.2.11",
        2222,
        "ops",
        "db-one",
        False,
    )
    assert got.identity_files == (home / ".ssh" / "first", Path("/keys/192.0.2.11-second"))
    assert got.certificate_files == (home / ".ssh" / "first-cert.pub",)


# -- precedence: the YAML's fields win, as `ssh -l -p -i -J` would ----------------------------------------------


def test_the_yamls_user_and_port_reach_ssh_g_so_match_user_sees_them(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Match user yamluser\n  HostName 192.0.2.50\nHost a\n  User fromconfig\n  Port 2200\n")
    plain = resolve(SshTarget("n", "a", ssh_config=str(config)))
    assert (plain.hostname, plain.user, plain.port) == ("a", "fromconfig", 2200)
    got = resolve(SshTarget("n", "a", user="yamluser", port=22, ssh_config=str(config)))
    assert (got.hostname, got.user, got.port) == ("192.0.2.50", "yamluser", 22)


def test_match_and_include_in_the_users_own_config_are_evaluated_by_openssh(home: Path, tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("Host db-*\n  User included\n")
    (home / ".ssh" / "config").write_text(
        f"Include {tmp_path}/inc.conf\nHost db-2\n  HostName 192.0.2.2\n"
        "Match originalhost db-2 host 192.0.2.*\n  Port 2202\n"
    )
    got = resolve(SshTarget("n", "db-2"))
    assert (got.hostname, got.user, got.port) == ("192.0.2.2", "included", 2202)


def test_a_hop_takes_its_own_settings_and_the_chain_is_in_order(home: Path) -> None:
    (home / ".ssh" / "config").write_text(
        "Host node\n  HostName 192.0.2.1\n  ProxyJump first,second\n"
        "Host second\n  HostName 192.0.2.3\n  User hop\n"
        "Host first\n  ProxyCommand nc %h %p\n  HostName 192.0.2.2\n"
    )
    got = resolve(SshTarget("n", "node"))
    assert got.jump is not None and got.jump.jump is not None
    assert (got.jump.alias, got.jump.hostname, got.jump.user) == ("second", "192.0.2.3", "hop")
    assert (got.jump.jump.alias, got.jump.jump.proxy_command) == ("first", "nc 192.0.2.2 22")


def test_known_hosts_tokens_and_tilde_are_homes_in_the_users_config(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  HostName 192.0.2.5\n  UserKnownHostsFile ~/.ssh/kh_%h %d/kh2\n")
    assert resolve(SshTarget("n", "a")).known_hosts_files[:2] == (
        home / ".ssh" / "kh_192.0.2.5",
        home / "kh2",
    )


def test_an_identity_token_svcctl_cannot_expand_is_an_error(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  IdentityFile ~/.ssh/%C\n")
    with pytest.raises(SshConfigError, match="uses the token %C, which svcctl cannot expand"):
        resolve(SshTarget("n", "a"))


def test_a_config_openssh_refuses_is_an_error_naming_what_it_said(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host a\n  NoSuchOption yes\n")
    with pytest.raises(SshConfigError) as caught:
        resolve(SshTarget("n", "a", ssh_config=str(config)))
    message = str(caught.value)
    assert message.startswith("node n: OpenSSH cannot read the ssh settings for host a (`ssh -G` exited 255")
    assert "Bad configuration option" in message and "\n" not in message


# -- what OpenSSH (Ansible's ssh) is told ------------------------------------------------------------------------


def target(**fields: object) -> ResolvedTarget:
    base: dict[str, object] = {
        "name": "db-1", "alias": "db-1", "hostname": "10.0.0.11", "port": 22, "user": "deploy",
        "identity_files": (Path("/keys/id 50%"),), "identities_only": True,
        "known_hosts_files": (Path("/kh/a%h"),), "host_key_names": ("db-1",), "accept_new_host_keys": False,
        "connect_timeout": 10,
    }  # fmt: skip
    return ResolvedTarget(**{**base, **fields})  # type: ignore[arg-type]


def test_ansibles_ssh_reads_no_config(tmp_path: Path) -> None:
    chosen = target(certificate_files=(Path("/c/x-cert.pub"),), use_agent=False, host_key_alias="db-one")
    argv = ["ssh", "-G", *openssh_options(chosen)]
    seen = parse_options(subprocess.run([*argv, "10.0.0.11"], capture_output=True, text=True, check=True).stdout)
    assert seen["globalknownhostsfile"] == ("none",)
    assert seen["certificatefile"] == ("/c/x-cert.pub",)
    assert seen["identityagent"] == ("none",)
    assert seen["hostkeyalias"] == ("db-one",)
    assert seen["stricthostkeychecking"] == ("true",) and seen["batchmode"] == ("yes",)
    assert openssh_options(target())[:2] == ["-F", "none"]


def test_ansibles_ssh_runs_exactly_the_proxycommand_svcctl_runs_and_keeps_paths_literal(tmp_path: Path) -> None:
    out = tmp_path / "ran"
    key = tmp_path / "id 50%h"
    keygen(key)
    command = f"sh -c 'echo x%hy 100% > {out}'"  # as resolved: tokens already expanded
    options = openssh_options(target(proxy_command=command, identity_files=(key,)))
    argv = ["ssh", "-v", *options, "-o", "ConnectTimeout=5", "10.0.0.11", "true"]
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30, check=False)
    assert out.read_text() == "x%hy 100%\n"  # ssh expanded nothing more
    assert f"identity file {key} type" in res.stderr  # the very file, not `id 5010.0.0.11`


def test_a_jump_chain_nests_each_hops_own_options() -> None:
    second = target(alias="b2", hostname="192.0.2.2", user="hop2", port=2202, identity_files=())
    first = target(alias="b1", hostname="192.0.2.1", user="hop1", jump=second, identity_files=())
    opts = openssh_options(target(jump=first))
    outer = opts[opts.index("-o", opts.index("IdentitiesOnly=yes")) + 1]
    assert outer.startswith("ProxyCommand=")
    words = shlex.split(outer.removeprefix("ProxyCommand=").replace("%%", "%"))  # as ssh expands it once
    assert words[-4:] == ["-W", "[%h]:%p", "--", "192.0.2.1"]
    assert words[words.index("-l") + 1] == "hop1" and "-F" in words
    inner = next(w for w in words if w.startswith("ProxyCommand="))
    inner_words = shlex.split(inner.removeprefix("ProxyCommand=").replace("%%", "%"))
    assert inner_words[-4:] == ["-W", "[%h]:%p", "--", "192.0.2.2"]
    assert inner_words[inner_words.index("-p") + 1] == "2202"


# -- the ProxyCommand as svcctl runs it --------------------------------------------------------------------------


def test_a_proxycommand_runs_under_the_shell_with_the_key_scrubbed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SVCCTL_KEY", "not-for-children")
    monkeypatch.setenv("SHELL", "/bin/sh")
    # OpenSSH prefixes `exec`: a list of commands needs a shell of its own, as in a real ProxyCommand
    proxy = ProxyProcess(f"sh -c 'env > {tmp_path / 'env'}; echo complaint >&2; exec cat'")
    try:
        proxy.socket.sendall(b"ping\n")
        assert proxy.socket.recv(16) == b"ping\n"  # stdio is the connection
    finally:
        proxy.close()
    assert proxy.process.returncode is not None
    assert "SVCCTL_KEY" not in (tmp_path / "env").read_text()
    assert proxy.said() == "complaint"


def test_a_proxycommand_that_exits_is_end_of_file_not_a_hang() -> None:
    proxy = ProxyProcess("echo nope >&2; exit 3")
    try:
        proxy.socket.settimeout(10)
        assert proxy.socket.recv(16) == b""
        assert proxy.said() == "nope"
    finally:
        proxy.close()


# -- certificates --------------------------------------------------------------------------------------------


def test_certificate_files_are_paired_with_their_keys_and_offered_first(tmp_path: Path) -> None:
    keygen(tmp_path / "ca")
    keygen(tmp_path / "id")
    keygen(tmp_path / "other")
    signed = tmp_path / "elsewhere-cert.pub"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "t", "-n", "deploy", str(tmp_path / "id.pub")],
        check=True,
    )
    (tmp_path / "id-cert.pub").rename(signed)  # not beside the key: only CertificateFile finds it
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "t", str(tmp_path / "other.pub")], check=True)
    secret = tmp_path / "secret"
    secret.write_text("hunter2 do-not-print\n")
    got = target(
        identity_files=(tmp_path / "id",),
        certificate_files=(signed, tmp_path / "other-cert.pub", secret, tmp_path / "absent"),
    )
    keys, problems = _identities(got)
    assert [k.public_blob is not None for _, k in keys] == [True, False]
    assert keys[0][1].public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"  # type: ignore[union-attr]
    assert keys[0][0].startswith(f"{signed} (ssh-ed25519 certificate SHA256:")
    assert problems == [
        f"certificate {tmp_path / 'other-cert.pub'} certifies none of the identity files' keys",
        f"certificate {secret} is not an OpenSSH certificate",
        f"certificate {tmp_path / 'absent'} does not exist",
    ]
    assert isinstance(keys[1][1], paramiko.PKey)


def test_a_cert_pub_beside_a_key_is_offered_before_the_plain_key(tmp_path: Path) -> None:
    keygen(tmp_path / "ca")
    keygen(tmp_path / "id")
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "t", str(tmp_path / "id.pub")], check=True)
    keys, problems = _identities(target(identity_files=(tmp_path / "id",)))
    assert problems == []
    assert [k.public_blob is not None for _, k in keys] == [True, False]


# -- @cert-authority -------------------------------------------------------------------------------------------


def test_a_host_pinned_only_by_a_cert_authority_is_refused_even_with_accept_new(tmp_path: Path) -> None:
    ca = keygen(tmp_path / "ca")
    host = keygen(tmp_path / "host")
    store = tmp_path / "known_hosts"
    store.write_text(f"@cert-authority *.example.org,10.0.0.11 ssh-ed25519 {base64.b64encode(ca).decode()}\n")
    pinned = target(known_hosts_files=(store,), host_key_names=("db-1", "10.0.0.11"), accept_new_host_keys=True)
    with pytest.raises(SshConfigError) as caught:
        check_host_key(pinned, host)
    message = str(caught.value)
    assert message.startswith(
        f"node db-1: known_hosts trusts db-1 (10.0.0.11:22) only through @cert-authority ({store}:1)"
    )
    assert "cannot verify host certificates" in message and "ssh-keyscan -t ed25519 10.0.0.11" in message
    assert "\n" not in message
    assert store.read_text().count("\n") == 1  # nothing recorded
    with store.open("a") as out:  # the host's own key beside it: pinned, the CA line does not matter
        out.write(f"10.0.0.11 ssh-ed25519 {base64.b64encode(host).decode()}\n")
    check_host_key(pinned, host)


# -- algorithm lists ---------------------------------------------------------------------------------------------


def test_algorithm_lists_the_config_changes_are_kept_for_both_clients(home: Path) -> None:
    (home / ".ssh" / "config").write_text(
        "Host a\n  Ciphers aes256-ctr,chacha20-poly1305@openssh.com\n  KexAlgorithms -diffie-hellman-group14-sha256\n"
    )
    got = resolve(SshTarget("n", "a"))
    chosen = dict(got.algorithms)
    assert chosen["ciphers"] == ("aes256-ctr", "chacha20-poly1305@openssh.com")
    assert (
        "diffie-hellman-group14-sha256" not in chosen["kexalgorithms"]
        and "curve25519-sha256" in chosen["kexalgorithms"]
    )
    assert "macs" not in chosen  # left at OpenSSH's default: paramiko keeps its own
    assert resolve(SshTarget("n", "b")).algorithms == ()
    options = openssh_options(got)
    assert "Ciphers=aes256-ctr,chacha20-poly1305@openssh.com" in options

    security = paramiko.Transport(socket.socketpair()[0]).get_security_options()
    _restrict(security, got, chosen)
    assert tuple(security.ciphers) == ("aes256-ctr",)  # paramiko has no chacha20: the rest, in order
    assert "diffie-hellman-group14-sha256" not in security.kex


def test_an_algorithm_list_paramiko_has_none_of_is_an_error(home: Path) -> None:
    (home / ".ssh" / "config").write_text("Host a\n  Ciphers chacha20-poly1305@openssh.com\n")
    got = resolve(SshTarget("n", "a"))
    security = paramiko.Transport(socket.socketpair()[0]).get_security_options()
    with pytest.raises(SshConfigError, match=r"allows only chacha20-poly1305@openssh\.com as ciphers for a"):
        _restrict(security, got, dict(got.algorithms))
