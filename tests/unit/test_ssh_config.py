"""SSH target resolution, fingerprints and known_hosts matching, without any host."""

from __future__ import annotations

import base64
import getpass
import os
import stat
import subprocess
from pathlib import Path

import pytest

from svcctl.model.spec import Node
from svcctl.ssh import (
    ChangedHostKey,
    SshConfigError,
    SshTarget,
    UnknownHostKey,
    check_host_key,
    fingerprint,
    known_entries,
    parse_jump,
    read_known_hosts,
    resolve,
)

CONFIG = """\
Host db-*
  User fromconfig
  IdentityFile ~/.ssh/first
  IdentityFile /keys/%h-second

Host db-1
  HostName 192.0.2.11
  Port 2222
  ProxyJump ops@bastion:2200
  UserKnownHostsFile /pins/known_hosts /pins/more
  StrictHostKeyChecking no

Host db-2
  HostName 192.0.2.12
  StrictHostKeyChecking accept-new

Host bastion
  HostName 198.51.100.7
  User bastionuser
  IdentityFile /keys/bastion

Host *
  IdentitiesOnly yes
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own, so no real ~/.ssh/config or known_hosts leaks into the expectations."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    return path


def keygen(path: Path) -> tuple[str, bytes]:
    """Generate an ed25519 key pair; return the public key's type and blob."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return kind, base64.b64decode(blob)


def ssh_keygen_fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


# -- resolution ---------------------------------------------------------------------------------------------


def test_an_alias_takes_hostname_user_port_identities_jump_and_known_hosts_from_the_config(
    config: Path, home: Path
) -> None:
    got = resolve(SshTarget("db-1", "db-1", ssh_config=str(config)))
    assert (got.alias, got.hostname, got.port, got.user) == ("db-1", "192.0.2.11", 2222, "fromconfig")
    assert got.identity_files == (home / ".ssh" / "first", Path("/keys/192.0.2.11-second"))
    assert got.identities_only is True
    assert got.known_hosts_files[:2] == (Path("/pins/known_hosts"), Path("/pins/more"))
    assert got.host_key_names == ("db-1", "192.0.2.11")
    assert got.lookup_names == ("[db-1]:2222", "[192.0.2.11]:2222")
    assert got.config_file == config
    assert got.jump is not None
    assert (got.jump.alias, got.jump.hostname, got.jump.port, got.jump.user) == (
        "bastion",
        "198.51.100.7",
        2200,
        "ops",
    )
    assert got.jump.identity_files == (Path("/keys/bastion"),)
    assert got.jump.jump is None


def test_a_host_key_alias_is_looked_up_alone_whatever_the_port(tmp_path: Path) -> None:
    # OpenSSH (sshconnect.c, get_hostfile_hostname_ipaddr): HostKeyAlias replaces `[host]:port` entirely, which
    # is what it is for: a host reached through a forwarded or relayed port keeps its own pinned key.
    config = tmp_path / "ssh_config"
    config.write_text("Host db-1\n  HostName 127.0.0.1\n  Port 42100\n  HostKeyAlias db-1.example\n")
    got = resolve(SshTarget("db-1", "db-1", ssh_config=str(config)))
    assert (got.hostname, got.port, got.host_key_alias) == ("127.0.0.1", 42100, "db-1.example")
    assert got.lookup_names == ("db-1.example",)
    config.write_text("Host db-1\n  HostName 127.0.0.1\n  Port 42100\n")
    plain = resolve(SshTarget("db-1", "db-1", ssh_config=str(config)))
    assert plain.lookup_names == ("[db-1]:42100", "[127.0.0.1]:42100")


def test_explicit_fields_win_over_the_config(config: Path, tmp_path: Path) -> None:
    target = SshTarget(
        "db-1",
        "db-1",
        user="yamluser",
        port=22,
        identity_file=str(tmp_path / "yaml_key"),
        jump_host="none",
        ssh_config=str(config),
        known_hosts=str(tmp_path / "pins"),
    )
    got = resolve(target)
    assert (got.hostname, got.port, got.user, got.jump) == ("192.0.2.11", 22, "yamluser", None)
    assert got.identity_files[0] == tmp_path / "yaml_key"  # tried first, the config's after it
    assert got.known_hosts_files == (tmp_path / "pins",)
    assert got.lookup_names == ("db-1", "192.0.2.11")


def test_strict_host_key_checking_no_is_not_honoured_but_accept_new_is(config: Path) -> None:
    assert resolve(SshTarget("db-1", "db-1", ssh_config=str(config))).accept_new_host_keys is False
    assert resolve(SshTarget("db-2", "db-2", ssh_config=str(config))).accept_new_host_keys is True
    assert resolve(SshTarget("x", "other", ssh_config=str(config), accept_new_host_keys=True)).accept_new_host_keys


def test_defaults_without_any_config_are_local_user_port_22_and_home_known_hosts(home: Path) -> None:
    got = resolve(SshTarget("n", "203.0.113.5"))
    assert (got.hostname, got.port, got.user, got.jump, got.config_file) == (
        "203.0.113.5",
        22,
        getpass.getuser(),
        None,
        None,
    )
    assert got.known_hosts_files[0] == home / ".ssh" / "known_hosts"
    assert got.identity_files == ()
    assert got.accept_new_host_keys is False


def test_home_ssh_config_is_read_when_the_node_names_no_config(home: Path) -> None:
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").write_text("Host short\n  HostName long.example.org\n  Port 2022\n")
    got = resolve(SshTarget("n", "short"))
    assert (got.hostname, got.port, got.config_file) == ("long.example.org", 2022, home / ".ssh" / "config")


def test_a_jump_chain_goes_through_each_hop_in_order(config: Path) -> None:
    got = resolve(SshTarget("n", "db-2", jump_host="first:2201,bastion", ssh_config=str(config)))
    assert got.jump is not None and got.jump.jump is not None
    assert (got.jump.hostname, got.jump.user, got.jump.jump.hostname, got.jump.jump.port) == (
        "198.51.100.7",
        "bastionuser",
        "first",
        2201,
    )
    assert got.jump.jump.jump is None


def test_a_proxyjump_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.write_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(SshConfigError, match="ProxyJump loop"):
        resolve(SshTarget("n", "a", ssh_config=str(loop)))


def test_a_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SshConfigError, match=f"cannot read ssh_config {tmp_path}/absent: No such file"):
        resolve(SshTarget("n", "a", ssh_config=str(tmp_path / "absent")))


def test_from_node_leaves_a_default_port_to_the_config() -> None:
    assert SshTarget.from_node("a", Node(host="h")).port is None
    node = Node(host="h", user="u", port=2222, jump_host="j", identity_file="/k", known_hosts="/kh")
    got = SshTarget.from_node("a", node, accept_new_host_keys=True, connect_timeout=3)
    assert got == SshTarget("a", "h", "u", 2222, "/k", "j", None, "/kh", True, 3)


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("bastion", (None, "bastion", None)),
        ("ops@bastion:2200", ("ops", "bastion", 2200)),
        ("ssh://ops@bastion:2200", ("ops", "bastion", 2200)),
        ("[2001:db8::1]:2200", (None, "2001:db8::1", 2200)),
        ("2001:db8::1", (None, "2001:db8::1", None)),
    ],
)
def test_jump_specs_parse(spec: str, parts: tuple[str | None, str, int | None]) -> None:
    assert parse_jump(spec) == parts


@pytest.mark.parametrize("spec", ["bastion:99999", "bastion:ssh", "@bastion", "[::1"])
def test_bad_jump_specs_are_errors(spec: str) -> None:
    with pytest.raises(SshConfigError, match="cannot parse jump host"):
        parse_jump(spec)


# -- fingerprints and known_hosts ----------------------------------------------------------------------------


def test_fingerprint_is_what_ssh_keygen_prints(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    assert fingerprint(blob) == ssh_keygen_fingerprint(tmp_path / "k.pub")
    assert fingerprint(blob).startswith("SHA256:") and not fingerprint(blob).endswith("=")


def pinned(tmp_path: Path, text: str, host: str = "lab-1", port: int | None = None) -> SshTarget:
    cfg = tmp_path / "cfg"
    cfg.write_text(f"Host lab-1\n  HostName 10.9.9.1\nHost {host}\n  User deploy\n")
    (tmp_path / "known_hosts").write_text(text)
    return SshTarget("n1", host, port=port, ssh_config=str(cfg), known_hosts=str(tmp_path / "known_hosts"))


def line_for(names: str, pub: Path) -> str:
    kind, blob = pub.read_text().split()[:2]
    return f"{names} {kind} {blob}\n"


@pytest.mark.parametrize("names", ["lab-1", "10.9.9.1", "lab-1,10.9.9.1", "LAB-1", "10.9.9.*", "lab-?"])
def test_an_entry_for_the_alias_or_the_address_pins_the_host(tmp_path: Path, names: str) -> None:
    _, blob = keygen(tmp_path / "k")
    target = resolve(pinned(tmp_path, "# comment\n\n" + line_for(names, tmp_path / "k.pub")))
    assert [(e.line, e.fingerprint) for e in known_entries(target)] == [(3, fingerprint(blob))]
    check_host_key(target, blob)  # no exception: pinned


def test_hashed_entries_written_by_ssh_keygen_match(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    pinned(tmp_path, line_for("10.9.9.1", tmp_path / "k.pub"))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(tmp_path / "known_hosts")], check=True)
    hashed = (tmp_path / "known_hosts").read_text()
    assert hashed.startswith("|1|") and "10.9.9.1" not in hashed
    target = resolve(pinned(tmp_path, hashed))
    assert len(known_entries(target)) == 1
    check_host_key(target, blob)
    assert known_entries(resolve(pinned(tmp_path, hashed, host="10.9.9.2"))) == []


def test_bracketed_port_entries_match_only_that_port(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    text = line_for("[10.9.9.1]:2222", tmp_path / "k.pub")
    assert len(known_entries(resolve(pinned(tmp_path, text, port=2222)))) == 1
    check_host_key(resolve(pinned(tmp_path, text, port=2222)), blob)
    assert known_entries(resolve(pinned(tmp_path, text))) == []
    assert known_entries(resolve(pinned(tmp_path, line_for("10.9.9.1", tmp_path / "k.pub"), port=2222))) == []


def test_negated_patterns_exclude_a_host(tmp_path: Path) -> None:
    keygen(tmp_path / "k")
    target = resolve(pinned(tmp_path, line_for("10.9.9.*,!10.9.9.1", tmp_path / "k.pub")))
    assert known_entries(target) == []


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    keygen(tmp_path / "k")
    good = line_for("lab-1", tmp_path / "k.pub")
    path = tmp_path / "kh"
    path.write_text("garbage\nlab-1 ssh-ed25519 not-base64!\nlab-1 ssh-rsa " + good.split()[2] + "\n" + good)
    assert [e.line for e in read_known_hosts(path)] == [4]
    assert read_known_hosts(tmp_path / "absent") == []


def test_an_unknown_key_is_refused_with_its_fingerprint_and_how_to_accept_it(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    target = resolve(pinned(tmp_path, ""))
    with pytest.raises(UnknownHostKey) as caught:
        check_host_key(target, blob)
    fp = ssh_keygen_fingerprint(tmp_path / "k.pub")
    assert (caught.value.node, caught.value.host, caught.value.fingerprint) == ("n1", "10.9.9.1", fp)
    message = str(caught.value)
    assert message.startswith("node n1: the host key of lab-1 (10.9.9.1:22) is not known")
    assert f"ssh-ed25519 {fp}" in message
    assert f"ssh-keyscan -t ssh-ed25519 10.9.9.1 >> {tmp_path / 'known_hosts'}" in message
    assert "accept_new_host_keys" in message and "StrictHostKeyChecking accept-new" in message
    assert "Traceback" not in message and "\n" not in message


def test_accept_new_records_the_key_in_a_new_0600_file_and_then_it_is_pinned(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    store = tmp_path / "sub" / "known_hosts"
    target = resolve(SshTarget("n1", "10.9.9.1", port=2222, known_hosts=str(store), accept_new_host_keys=True))
    check_host_key(target, blob)
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    kind, b64 = (tmp_path / "k.pub").read_text().split()[:2]
    assert store.read_text() == f"[10.9.9.1]:2222 {kind} {b64}\n"
    check_host_key(target, blob)  # pinned now: nothing appended twice
    assert len(store.read_text().splitlines()) == 1
    _, other = keygen(tmp_path / "other")
    with pytest.raises(ChangedHostKey):  # accept-new never replaces a pinned key
        check_host_key(target, other)


def test_a_changed_key_is_refused_naming_both_fingerprints_and_the_line(tmp_path: Path) -> None:
    _, old = keygen(tmp_path / "old")
    _, new = keygen(tmp_path / "new")
    target = SshTarget("n1", "lab-1", known_hosts=str(tmp_path / "known_hosts"), accept_new_host_keys=True)
    (tmp_path / "known_hosts").write_text("# pins\n" + line_for("lab-1", tmp_path / "old.pub"))
    with pytest.raises(ChangedHostKey) as caught:
        check_host_key(resolve(target), new)
    assert caught.value.expected == [fingerprint(old)]
    assert caught.value.presented == fingerprint(new)
    message = str(caught.value)
    assert f"known_hosts expects ssh-ed25519 {fingerprint(old)} ({tmp_path / 'known_hosts'}:2)" in message
    assert f"the host presented ssh-ed25519 {fingerprint(new)}" in message
    assert f"fix or delete {tmp_path / 'known_hosts'} line 2" in message
    assert (tmp_path / "known_hosts").read_text().count("\n") == 2  # nothing recorded


def test_a_revoked_key_is_refused(tmp_path: Path) -> None:
    _, blob = keygen(tmp_path / "k")
    target = resolve(pinned(tmp_path, "@revoked " + line_for("lab-1", tmp_path / "k.pub")))
    with pytest.raises(ChangedHostKey, match=r"known_hosts:1 marks as @revoked"):
        check_host_key(target, blob)
