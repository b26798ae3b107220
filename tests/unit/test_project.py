"""The Ansible project an apply runs is assembled from the shared plays and each engine's folder.

An engine is one folder (svcctl/drivers/<engine>/): its driver, its host parts and its Ansible files. These
tests hold the assembly to that: every file a play names exists in the merged project, nothing is shadowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from svcctl.apply import project
from svcctl.apply.execute import BATCHED
from svcctl.drivers import ENGINES
from svcctl.errors import SvcctlError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project.assemble(tmp_path_factory.mktemp("project") / "project")


def test_the_project_has_the_shared_plays_and_every_engines_files(assembled: Path) -> None:
    files = sorted(str(p.relative_to(assembled)) for p in assembled.rglob("*") if p.is_file())
    expected = ["apply.yml", "library/svcctl_registry.py", "tasks/backup.yml", "tasks/change.yml", "tasks/session.yml"]
    for engine in ENGINES:
        folder = REPO / "svcctl" / "drivers" / engine / "ansible"
        expected += [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc"]
    assert files == sorted(expected)
    assert not [f for f in files if f.endswith("__init__.py") or "__pycache__" in f]


def test_every_file_a_play_names_is_in_the_project(assembled: Path) -> None:
    """apply.yml includes tasks/<engine>_objects.yml or change.yml; change.yml includes <engine>.yml or
    session.yml; tasks name templates and modules. Each must exist once merged."""
    for engine in ENGINES:
        assert (assembled / "tasks" / f"{engine}.yml").is_file()
        assert (assembled / "tasks" / f"{engine}_backup.yml").is_file()
    modules = {p.stem for p in (assembled / "library").glob("*.py")}
    for engine in sorted({engine for engine, _ in BATCHED}):  # engines whose objects one module run makes
        assert (assembled / "tasks" / f"{engine}_objects.yml").is_file()
        assert f"svcctl_{engine}_objects" in modules
    for tasks in (assembled / "tasks").glob("*.yml"):
        text = tasks.read_text()
        for src in re.findall(r"^\s+src: ([\w.-]+\.j2)\s*$", text, re.MULTILINE):
            assert (assembled / "templates" / src).is_file(), (tasks.name, src)
        for module in re.findall(r"^  (svcctl_\w+):\s*$", text, re.MULTILINE):
            assert module in modules, (tasks.name, module)
    named = re.findall(r"^      (svcctl_\w+):\s*$", (assembled / "apply.yml").read_text(), re.MULTILINE)
    assert named == ["svcctl_registry"]  # the play's own task names its module; it must ship
    assert set(named) <= modules


def test_two_parts_shipping_one_file_is_refused(tmp_path: Path) -> None:
    for part in ("a", "b"):
        (tmp_path / part / "tasks").mkdir(parents=True)
        (tmp_path / part / "tasks" / "change.yml").write_text(f"# {part}\n")
    with pytest.raises(SvcctlError, match=r"^part-b and part-a both ship tasks/change\.yml"):
        project.assemble(tmp_path / "out", [("part-a", tmp_path / "a"), ("part-b", tmp_path / "b")])


def test_a_missing_part_says_to_reinstall(tmp_path: Path) -> None:
    with pytest.raises(SvcctlError, match=r"Ansible files of svcctl\.drivers\.x are missing"):
        project.assemble(tmp_path / "out", [("svcctl.drivers.x", tmp_path / "absent")])


def test_svcctl_playbooks_names_a_whole_project_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCCTL_PLAYBOOKS", str(tmp_path / "mine"))
    assert project.assemble(tmp_path / "out") == tmp_path / "mine"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_an_engine_is_one_folder(engine: str) -> None:
    """What adding an engine takes: its driver, its observe and session parts, its tasks, all in one folder."""
    folder = REPO / "svcctl" / "drivers" / engine
    for part in ("driver.py", "observe.py", "session.py", f"ansible/tasks/{engine}.yml"):
        assert (folder / part).is_file(), part
    outside = [str(p.relative_to(REPO)) for p in (REPO / "playbooks").rglob("*") if engine in p.name]
    assert outside == []
