"""A Redis instance's backup user (issue #13): `svcctl_backup`, least privilege, its password a systemd credential.

Pure pieces without a host: its rules per Redis major, what the plan reads back (`credentials` of
backup.<instance>), the driver leaving it out of the bindings, the secrets apply passes, and the objects
module's steps (ACL line, ACL LOAD, credential file, the old admin password file removed) with the node's
commands faked. The e2e side (GET refused with NOPERM, nothing in clear on disk) is tests/e2e/test_backups.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import backups
from svcctl.drivers.redis.driver import DRIVER
from svcctl.drivers.redis.observe import _redis_user
from svcctl.drivers.reported import engine_report
from svcctl.hostlib.backups import REDIS_BACKUP_USER, credential_paths
from svcctl.hostlib.redis_acl import acl_rules
from svcctl.hostlib.verifiers import redis_acl_digest
from svcctl.secrets import Secret, derive_password, instance_backup_password
from svcctl.state import Kind, Resource
from tests.unit.test_objects_connections import load, module_utils  # noqa: F401 (a fixture)

KEY = bytes(range(32))


def password_for(purpose: str) -> Secret:
    return derive_password(KEY, purpose)


def test_the_backup_rules_allow_only_what_a_dump_needs_in_the_form_of_each_redis() -> None:
    assert acl_rules("backup", "7") == ("resetkeys", "resetchannels", "-@all", "+bgsave", "+lastsave", "+info", "+ping")
    assert acl_rules("backup", "6.0.16") == ("resetkeys", "-@all", "+bgsave", "+lastsave", "+info", "+ping")
    assert not any(r.startswith(("~", "&", "%")) or r in ("allkeys", "allchannels") for r in acl_rules("backup"))


def test_its_password_has_a_purpose_of_its_own() -> None:
    backup = instance_backup_password(KEY, "cache")
    assert backup == password_for("instance/cache/backup")
    assert backup != password_for("instance/cache/admin")


def redis_report(line: str | None, credential: bool = True, legacy: bool = False, version: str = "5:7.0.15-1") -> Any:
    users = [{"name": "default", "flags": ["on"], "rules": ["~*", "&*", "+@all"], "hashes": []}]
    if line is not None:
        users.append(_redis_user(line.split()))
    instance = {
        "config": {"port": "6380"},
        "users": users,
        "unit": {"active": True, "enabled": True},
        "backup": {"credential": credential, "legacy_auth": legacy},
    }
    return engine_report("n", "redis", {"installed": True, "version": version, "instances": {"cache": instance}})


def line(password: str | Secret = "", rules: tuple[str, ...] = acl_rules("backup", "7"), flag: str = "on") -> str:
    secret = password or password_for("instance/cache/backup")
    clear = secret.reveal() if isinstance(secret, Secret) else secret
    return f"user {REDIS_BACKUP_USER} {flag} #{redis_acl_digest(clear)} {' '.join(rules)}"


def test_the_observe_fragment_keeps_the_backup_users_verifier_and_no_other_non_svcctl_one() -> None:
    assert _redis_user(line().split())["hashes"] == [redis_acl_digest(password_for("instance/cache/backup").reveal())]
    assert _redis_user(f"user someone on #{'a' * 64} ~*".split())["hashes"] == []


@pytest.mark.parametrize(
    ("report", "want"),
    [
        (redis_report(line()), "current"),
        (redis_report(None), "stale"),  # no backup user
        (redis_report(line("another password")), "stale"),
        (redis_report(line(rules=acl_rules("backup", "6"))), "stale"),  # Redis 6's rules on Redis 7
        (redis_report(line(rules=(*acl_rules("backup"), "+keys"))), "stale"),
        (redis_report(line(flag="off")), "stale"),
        (redis_report(line(), credential=False), "stale"),  # no credential file for the service
        (redis_report(line(), legacy=True), "stale"),  # the old admin password file is still there
        (redis_report(line(rules=acl_rules("backup", "6")), version="5:6.0.16-1+deb11u2"), "current"),
        (None, "stale"),
    ],
)
def test_a_redis_backups_credentials_are_current_only_when_all_of_it_is_svcctls(report: Any, want: str) -> None:
    assert backups.redis_credentials("cache", report, password_for) == want


def test_parse_puts_the_credentials_on_the_backup_and_the_user_in_no_binding() -> None:
    report = redis_report(line())
    seen = {"engine": "redis", "schedule": "daily", "keep": 2, "port": 6380, "timer": {"active": True, "enabled": True}}
    (backup,) = backups.parse("n", {"instances": {"cache": seen}}, report, password_for)
    assert backup.attrs["credentials"] == "current"
    assert backups.parse("n", {"instances": {"cache": seen}})[0].attrs["credentials"] == "stale"
    parsed = DRIVER.parse("n", report, password_for)
    assert [r.address for r in parsed] == ["engine.n.redis", "instance.cache"]  # not binding.cache:svcctl_backup


def test_apply_gets_the_backup_password_and_the_admin_one_for_acl_load() -> None:
    backup = Resource(kind=Kind.BACKUP, name="cache", node="n", engine="redis", attrs={})
    assert backups.secrets_for(backup, password_for) == {
        "password": password_for("instance/cache/backup"),
        "admin_password": password_for("instance/cache/admin"),
    }
    assert backups.secrets_for(backup.model_copy(update={"engine": "postgres"}), password_for) == {}


# --- the objects module's backup change, the node's commands faked ------------------------------------------


class Node:
    """What the module runs: systemctl, redis-server --version, systemd-creds (a reversible fake), redis-cli."""

    def __init__(self, systemd: int, active: bool = True) -> None:
        self.systemd, self.active = systemd, active
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def sh(self, argv: list[str], input: str | None = None, env: Any = None, **_: Any) -> tuple[int, str, str]:
        self.calls.append(list(argv))
        self.envs.append(dict(env or {}))
        assert all(password_for("instance/cache/backup").reveal() not in a for a in argv)  # never an argument
        assert all(password_for("instance/cache/admin").reveal() not in a for a in argv)
        if argv[:2] == ["systemctl", "--version"]:
            return 0, f"systemd {self.systemd} ({self.systemd}.1-1)\n+PAM\n", ""
        if argv[:2] == ["redis-server", "--version"]:
            return 0, "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64\n", ""
        if argv[0] == "systemctl" and argv[1] == "show":
            state = "active" if self.active else "inactive"
            return 0, f"ActiveState={state}\nUnitFileState=enabled\n", ""
        if argv[:2] == ["systemd-creds", "encrypt"]:
            assert "--with-key=host" in argv and "--name=svcctl-backup" in argv and argv[-2] == "-"
            Path(argv[-1]).write_text("ENC:" + (input or "")[::-1])
            return 0, "", ""
        if argv[:2] == ["systemd-creds", "decrypt"]:
            text = Path(argv[-2]).read_text()
            return (0, text[4:][::-1], "") if text.startswith("ENC:") else (1, "", "bad")
        if argv[0] == "redis-cli":
            return 0, "OK" if "LOAD" in argv else "1", ""
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def objects(module_utils: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    mod = load("redis")
    etc = tmp_path / "etc"
    (etc / "redis").mkdir(parents=True)
    (etc / "svcctl" / "backup").mkdir(parents=True)

    def paths(i: str) -> dict[str, str]:
        return {
            "conf": str(etc / "redis" / f"redis-{i}.conf"),
            "acl": str(etc / "redis" / f"users-{i}.acl"),
            "data": str(tmp_path / "data" / i),
            "unit": f"redis-server@{i}.service",
        }

    def stores(i: str) -> dict[str, str]:
        return {
            "encrypted": str(etc / "credstore.encrypted" / f"svcctl-backup-{i}"),
            "plain": str(etc / "credstore" / f"svcctl-backup-{i}"),
        }

    monkeypatch.setattr(mod, "paths", paths)
    monkeypatch.setattr(mod, "credential_paths", stores)
    monkeypatch.setattr(mod, "LEGACY_AUTH", str(etc / "svcctl" / "backup" / "{}.auth"))
    (etc / "redis" / "redis-cache.conf").write_text("port 6380\ndir /x\n")
    admin = f"user default on #{'a' * 64} ~* &* +@all"
    binding = f"user sv_web_cache_r0 on #{'b' * 64} ~* &* +@all -@admin -@dangerous"
    (etc / "redis" / "users-cache.acl").write_text(f"{admin}\n{binding}\n")
    (etc / "svcctl" / "backup" / "cache.auth").write_text("the old admin password")

    class Module:
        check_mode = False

        def __init__(self) -> None:
            self.params = {"dump_dir": str(tmp_path / "dumps")}

    def make(node: Node) -> Any:
        monkeypatch.setattr(mod, "sh", node.sh)
        found = mod.Objects(Module())
        found.ids = {"redis": (os.getuid(), os.getgid()), "root": (0, 0)}
        return found

    return mod, etc, make


def change(action: str = "create") -> dict[str, Any]:
    return {"kind": "backup", "action": action, "address": "backup.cache", "name": "cache",
            "names": {"instance": "cache"}, "attrs": {"port": 6380}}  # fmt: skip


SECRET = {
    "password": password_for("instance/cache/backup").reveal(),
    "admin_password": password_for("instance/cache/admin").reveal(),
}


def test_a_backup_makes_its_user_loads_it_encrypts_its_credential_and_removes_the_old_file(objects: Any) -> None:
    _, etc, make = objects
    node = Node(systemd=252)
    obj = make(node)
    unit_line = obj.backup(change(), SECRET)
    acl = (etc / "redis" / "users-cache.acl").read_text().splitlines()
    assert acl[:2] == [f"user default on #{'a' * 64} ~* &* +@all", acl[1]] and acl[1].startswith("user sv_web_cache_r0")
    assert acl[2] == line()  # svcctl's rules for the node's Redis 7, the derived password's verifier
    assert node.calls[[c[0] for c in node.calls].index("redis-cli")][-2:] == ["ACL", "LOAD"]
    assert node.envs[[c[0] for c in node.calls].index("redis-cli")]["REDISCLI_AUTH"] == SECRET["admin_password"]
    stored = etc / "credstore.encrypted" / "svcctl-backup-cache"
    assert unit_line == f"LoadCredentialEncrypted=svcctl-backup:{stored}"
    assert SECRET["password"] not in stored.read_text() and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert oct((etc / "credstore.encrypted").stat().st_mode & 0o777) == "0o700"
    assert not (etc / "svcctl" / "backup" / "cache.auth").exists()
    # Again: nothing to do (the credential decrypts to the same password), no second ACL LOAD.
    again = Node(systemd=252)
    obj = make(again)
    obj.backup(change(), SECRET)
    assert obj.did == [] and not any(c[0] == "redis-cli" or c[1] == "encrypt" for c in again.calls)


def test_the_instances_own_rewrite_keeps_the_backup_user(objects: Any) -> None:
    mod, etc, make = objects
    make(Node(systemd=252)).backup(change(), SECRET)
    text = (etc / "redis" / "users-cache.acl").read_text()
    rewritten = mod.with_line(text, "default", f"user default on #{'c' * 64} ~* &* +@all")
    assert line() in rewritten.splitlines()
    assert line() in mod.with_line(rewritten, "sv_web_cache_r0", None).splitlines()


def test_systemd_247_gets_a_root_only_plain_credential_and_load_credential(objects: Any) -> None:
    _, etc, make = objects
    unit_line = make(Node(systemd=247)).backup(change(), SECRET)
    plain = etc / "credstore" / "svcctl-backup-cache"
    assert unit_line == f"LoadCredential=svcctl-backup:{plain}"
    assert plain.read_text() == SECRET["password"] and oct(plain.stat().st_mode & 0o777) == "0o600"
    assert not (etc / "credstore.encrypted" / "svcctl-backup-cache").exists()


def test_deleting_the_backup_removes_its_user_live_and_every_credential_file(objects: Any) -> None:
    _, etc, make = objects
    make(Node(systemd=252)).backup(change(), SECRET)
    (etc / "credstore").mkdir()
    (etc / "credstore" / "svcctl-backup-cache").write_text("left from 247")
    node = Node(systemd=252)
    make(node).backup_delete(change("delete"), SECRET)
    assert REDIS_BACKUP_USER not in (etc / "redis" / "users-cache.acl").read_text()
    assert any(c[0] == "redis-cli" and c[-2:] == ["DELUSER", REDIS_BACKUP_USER] for c in node.calls)
    assert not list((etc / "credstore.encrypted").iterdir()) and not list((etc / "credstore").iterdir())


def test_a_backup_of_an_instance_that_was_not_made_fails_by_name(objects: Any) -> None:
    mod, etc, make = objects
    (etc / "redis" / "users-cache.acl").unlink()
    with pytest.raises(mod.Failed, match=r"users-cache\.acl does not exist"):
        make(Node(systemd=252)).backup(change(), SECRET)
    with pytest.raises(mod.Failed, match="no backup password"):
        make(Node(systemd=252)).backup(change(), {"admin_password": "x"})


def test_the_credential_paths_are_per_instance_and_refuse_other_names() -> None:
    assert credential_paths("cache") == {
        "encrypted": "/etc/credstore.encrypted/svcctl-backup-cache",
        "plain": "/etc/credstore/svcctl-backup-cache",
    }
    with pytest.raises(ValueError, match="not an instance name"):
        credential_paths("../x")
