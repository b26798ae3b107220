"""The runner's pure parts: Ansible's ssh options read back by `ssh -G`, secret masking, the kept log."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from svcctl.apply.runner import ssh_args
from svcctl.ssh import ResolvedTarget


def target(known: tuple[Path, ...]) -> ResolvedTarget:
    return ResolvedTarget(
        name="db-1", alias="db-1", hostname="10.0.0.11", port=22, user="deploy",
        identity_files=(Path("/keys/id_ed25519"),), identities_only=True, known_hosts_files=known,
        host_key_names=("db-1",), accept_new_host_keys=False, connect_timeout=10,
    )  # fmt: skip


def ssh_g(args: str) -> dict[str, str]:
    res = subprocess.run(["ssh", "-G", *shlex.split(args), "db-1"], capture_output=True, text=True, check=True)
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


def test_known_hosts_paths_with_spaces_and_quotes_stay_whole() -> None:
    known = (Path("/etc/svcctl/known hosts"), Path('/tmp/odd"name\\x'), Path("/plain/known_hosts"))
    seen = ssh_g(ssh_args(target(known)))
    assert seen["userknownhostsfile"] == " ".join(str(p) for p in known)


def test_nothing_is_forwarded_and_host_keys_are_strict() -> None:
    seen = ssh_g(ssh_args(target((Path("/k"),))))
    assert seen["forwardagent"] == "no"
    assert seen["forwardx11"] == "no"
    assert seen["permitlocalcommand"] == "no"
    assert seen["stricthostkeychecking"] == "true"
    assert seen["batchmode"] == "yes"
    assert seen["identitiesonly"] == "yes"


def test_the_masker_hides_every_secret_even_one_inside_another() -> None:
    from svcctl.apply.runner import masker

    mask = masker(["abc", "xxabcxx", ""])
    assert mask("a=xxabcxx b=abc c=ab") == "a=*** b=*** c=ab"


def test_a_kept_log_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from svcctl.apply.runner import keep_log

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    path = keep_log("output")
    assert path is not None and path.read_text() == "output"
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)


def test_an_objects_modules_summary_names_each_changed_object_and_nothing_else() -> None:
    from svcctl.apply.runner import _objects_changed

    summary = {"msg": [
        {"address": "binding.app.db", "action": "update", "changed": True, "did": ["grant"]},
        {"address": "instance.db", "action": "create", "changed": False, "did": []},
        {"address": 3, "action": "create", "changed": True},
    ]}  # fmt: skip
    assert _objects_changed(summary) == ["update binding.app.db"]
    assert _objects_changed({"msg": ["svcctl: dumped instance.db"]}) == []  # a report, not a summary
    assert _objects_changed({"censored": "hidden"}) == []
