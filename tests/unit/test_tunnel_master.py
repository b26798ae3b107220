"""The tunnel's OpenSSH master, without a host: its cipher preference, the name ssh checks the key under, the
choice of forwarder, and which nodes it connects to before the registries are read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from svcctl.model.spec import Environment
from svcctl.ssh import ResolvedTarget
from svcctl.tunnel import command
from svcctl.tunnel.command import _connect_early
from svcctl.tunnel.errors import TunnelError
from svcctl.tunnel.forward import use_openssh
from svcctl.tunnel.master import PREFERRED_CIPHER, cipher_preference, destination

SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(SSH is None, reason="no OpenSSH client")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGg+YQ6e3Zl0CXr0xw2NfSJ4Gyr6UoNmXXyNeYYSmdkE"


def target(tmp_path: Path, known: str, *, alias: str = "db-1", port: int = 22, **kw: object) -> ResolvedTarget:
    pinned = tmp_path / "known_hosts"
    pinned.write_text(known)
    fields: dict[str, object] = {
        "name": "db-1", "alias": alias, "hostname": "192.0.2.5", "port": port, "user": "deploy",
        "identity_files": (), "identities_only": True, "known_hosts_files": (pinned,),
        "host_key_names": (alias, "192.0.2.5"), "accept_new_host_keys": False, "connect_timeout": 10,
    }  # fmt: skip
    fields.update(kw)
    return ResolvedTarget(**fields)  # type: ignore[arg-type]


@needs_ssh
def test_aes_gcm_goes_first_and_the_clients_other_ciphers_stay(tmp_path: Path) -> None:
    assert SSH is not None
    opts = cipher_preference(target(tmp_path, ""), SSH)
    assert opts[0] == "-o"
    names = opts[1].removeprefix("Ciphers=").split(",")
    assert names[0] == PREFERRED_CIPHER
    assert len(names) > 1 and len(set(names)) == len(names)  # still negotiating the others, each once


@needs_ssh
def test_a_cipher_list_the_ssh_config_chose_is_left_alone(tmp_path: Path) -> None:
    assert SSH is not None
    chosen = target(tmp_path, "", algorithms=(("ciphers", ("aes256-ctr",)),))
    assert cipher_preference(chosen, SSH) == []


def test_ssh_is_given_the_name_the_key_is_pinned_under(tmp_path: Path) -> None:
    assert destination(target(tmp_path, f"db-1 {KEY}\n")) == "db-1"
    assert destination(target(tmp_path, f"192.0.2.5 {KEY}\n")) == "192.0.2.5"
    assert destination(target(tmp_path, f"[db-1]:2222 {KEY}\n", port=2222)) == "db-1"
    assert destination(target(tmp_path, f"[192.0.2.5]:2222 {KEY}\n", port=2222)) == "192.0.2.5"
    assert destination(target(tmp_path, f"db-1 {KEY}\n", host_key_alias="db")) == "192.0.2.5"  # ssh uses the alias
    assert destination(target(tmp_path, "")) == "db-1"  # nothing pinned: ssh refuses, as svcctl would


def test_auto_is_openssh_when_there_is_an_ssh_and_paramiko_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert use_openssh("auto") and use_openssh("openssh")
    assert not use_openssh("paramiko")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert not use_openssh("auto")
    with pytest.raises(TunnelError, match="no `ssh` client on PATH"):
        use_openssh("openssh")
    with pytest.raises(ValueError, match="unknown forwarder"):
        use_openssh("stunnel")


def _env(tmp_path: Path, instances: str) -> Environment:
    from svcctl.model.loader import load_environment

    (tmp_path / "svcctl.yaml").write_text(
        "environment: early\n"
        "nodes:\n"
        "  n1: {host: 192.0.2.1, engines: [postgres]}\n"
        "  n2: {host: 192.0.2.2, engines: [postgres, redis]}\n"
        "services:\n  postgres: {engine: postgres, versions: ['15']}\n  redis: {engine: redis, versions: ['7']}\n"
        "plans:\n  small: {service: postgres, storage_mb: 512, connections: 20}\n"
        "  cache: {service: redis, memory_mb: 16, eviction: allkeys-lru, connections: 50}\n"
        f"instances:\n{instances}"
    )
    return load_environment(tmp_path)


def test_no_early_connection_when_the_node_is_not_known_before_the_registries_are_read(tmp_path: Path) -> None:
    env = _env(tmp_path, "  db: {plan: small}\n")  # postgres: n1 or n2
    assert _connect_early(env, "db") is None
    assert _connect_early(env, "nosuch") is None  # locate says what is wrong


@needs_ssh
def test_the_one_possible_node_is_connected_early_only_if_its_key_is_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    def fake_master(target: ResolvedTarget, ssh: str) -> str:  # records the node instead of connecting to it
        started.append(target.name)
        return target.name

    monkeypatch.setattr(command, "SshMaster", fake_master)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts: nothing pins 192.0.2.2 yet
    env = _env(tmp_path, "  cache1: {plan: cache}\n  db: {plan: small, node: n1}\n")  # redis: only on n2
    assert _connect_early(env, "cache1") is None and started == []
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(f"192.0.2.2 {KEY}\n192.0.2.1 {KEY}\n")
    assert _connect_early(env, "cache1") is not None  # the only candidate
    assert _connect_early(env, "db") is not None  # pinned by the YAML
    assert started == ["n2", "n1"]


def test_a_killed_tunnels_control_directory_is_removed_and_a_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import tempfile

    from svcctl.tunnel.master import PRIVATE_PREFIX, remove_leftovers

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.Popen(["true"])  # a pid that no longer runs (reused within the test: unlikely)
    ended.wait()
    dead = tmp_path / f"{PRIVATE_PREFIX}{ended.pid}-abc"
    live = tmp_path / f"{PRIVATE_PREFIX}{os.getpid()}-def"
    other = tmp_path / "svcctl-apply-1-ghi"
    for d in (dead, live, other):
        d.mkdir()
    remove_leftovers()
    assert not dead.exists() and live.exists() and other.exists()
