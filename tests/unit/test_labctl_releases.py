"""lab/labctl.py's decisions about releases without booting anything: names, addresses, sources, stale images.

labctl.py is a stdlib script, not part of the package; it is imported from the file, so what is tested is
what `make lab` runs.  tests/e2e/test_lab.py boots the hosts these decisions describe.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "lab" / "labctl.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labctl", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its main() runs only as __main__
    return module


labctl = _load()
MACHINE_SOURCES = [
    ("http://mirror.invalid/debian", ["bookworm", "bookworm-updates"], ["main"]),
    ("http://mirror.invalid/debian-security", ["bookworm-security"], ["main"]),
]


def test_release_hosts_sit_above_the_numbered_hosts_in_release_order() -> None:
    names = ["lab-trixie", "lab-10", "lab-bullseye", "lab-2", "lab-bookworm", "lab-1"]
    assert sorted(names, key=labctl.host_order) == [
        "lab-1", "lab-2", "lab-10", "lab-bullseye", "lab-bookworm", "lab-trixie",
    ]  # fmt: skip
    assert [labctl.host_release(n) for n in ("lab-1", "lab-bullseye", "lab-bookworm", "lab-trixie")] == [
        "bookworm", "bullseye", "bookworm", "trixie",
    ]  # fmt: skip
    numbered = {labctl.address(n) for n in labctl.host_names(labctl.MAX_HOSTS)}
    releases = {labctl.address(labctl.release_host(r)) for r in labctl.RELEASES}
    assert len(numbered) == labctl.MAX_HOSTS and len(releases) == len(labctl.RELEASES)
    assert not numbered & releases
    assert labctl.address("lab-1") == f"{labctl.NET}.11"


def test_a_releases_sources_are_the_machines_with_the_suites_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labctl, "apt_sources", lambda: MACHINE_SOURCES)
    assert labctl.sources_list("bullseye") == (
        "deb http://mirror.invalid/debian bullseye main\n"
        "deb http://mirror.invalid/debian bullseye-updates main\n"
        "deb http://mirror.invalid/debian-security bullseye-security main\n"
    )
    assert labctl.sources_list() == labctl.sources_list("bookworm")
    assert "bookworm" in labctl.sources_list()
    monkeypatch.setitem(labctl.RELEASE_MISSING_SUITES, "trixie", ["trixie-updates"])
    assert "trixie-updates" not in labctl.sources_list("trixie")
    assert "trixie-security" in labctl.sources_list("trixie")


def test_each_release_has_its_own_recipe_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labctl, "apt_sources", lambda: MACHINE_SOURCES)
    keys = {labctl.recipe_key(r) for r in labctl.RELEASES}
    assert len(keys) == len(labctl.RELEASES)
    assert labctl.recipe("bookworm")["suite"] == "bookworm"


def test_an_image_says_its_release_from_its_marker_or_its_recipe(tmp_path: Path) -> None:
    building = tmp_path / "a"
    building.mkdir()
    (building / ".release").write_text("trixie\n")
    older = tmp_path / "b"  # built before images carried a marker
    older.mkdir()
    (older / ".complete").write_text(json.dumps({"suite": "bookworm"}))
    leftover = tmp_path / "c"
    leftover.mkdir()
    assert [labctl.image_release(d) for d in (building, older, leftover)] == ["trixie", "bookworm", None]
    assert not labctl.image_in_use(older)
