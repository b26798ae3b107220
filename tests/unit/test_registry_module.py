"""apply's first registry write (playbooks/library/svcctl_registry.py): the records and the helper, one process.

The module is loaded as Ansible ships it (the host library as `ansible.module_utils.svcctl_hostlib`) and run
on a scratch registry; pure logic, no node.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ansible.module_utils
import pytest

from svcctl.apply.runner import write_host_programs
from svcctl.drivers.hostprograms import registry_program
from tests.conftest import REPO


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    programs = write_host_programs(tmp_path_factory.mktemp("run"))
    path: list[str] = ansible.module_utils.__path__
    path.append(str(programs / "module_utils"))
    spec = importlib.util.spec_from_file_location(
        "svcctl_registry_under_test", REPO / "playbooks" / "library" / "svcctl_registry.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    path.remove(str(programs / "module_utils"))


def test_the_helper_is_written_once_as_svcctl_built_it_and_kept_when_unchanged(module: Any, tmp_path: Path) -> None:
    helper = tmp_path / "lib" / "svcctl" / "svcctl-registry.py"
    text = registry_program()
    assert module.install_helper(str(helper), text, check=True) is True
    assert not helper.exists()  # check mode writes nothing
    assert module.install_helper(str(helper), text, check=False) is True
    assert helper.read_text() == text
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    before = helper.stat().st_mtime_ns
    assert module.install_helper(str(helper), text, check=False) is False
    assert helper.stat().st_mtime_ns == before
    helper.write_text(text + "# edited on the node\n")
    assert module.install_helper(str(helper), text, check=False) is True  # an older or edited helper is replaced
    assert helper.read_text() == text
    os.chmod(helper, 0o777)
    assert module.install_helper(str(helper), text, check=False) is True
    assert stat.S_IMODE(helper.stat().st_mode) == 0o755
    assert not [p.name for p in helper.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_check_mode_tells_whether_recording_would_change_the_registry(
    module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tmp_path / "registry.json"
    real_read = module.read_registry
    monkeypatch.setattr(module, "read_registry", lambda: real_read(str(registry)))
    change = {"address": "instance.orders", "attrs": {"plan": "small", "port": 5432}}
    assert module.would_record("prod", [change]) is True
    assert not registry.exists()
    registry.write_text(json.dumps({"format": 1, "objects": {"instance.orders": {
        "attrs": change["attrs"], "environment": "prod", "applied_at": "2026-12-01T00:00:00+00:00"}}}))  # fmt: skip
    assert module.would_record("prod", [change]) is False
    assert module.would_record("staging", [change]) is True  # another environment's record is a change
    assert module.would_record("prod", [{**change, "attrs": {"plan": "large", "port": 5432}}]) is True
