"""The wheel carries every file svcctl runs: its packages, the host parts, every engine's Ansible files, playbooks/.

setuptools copies only listed packages and, in them, modules and the package data its patterns name; a new
directory or file kind under svcctl/ or playbooks/ that pyproject.toml does not name would silently be
missing from an installed svcctl (tests/e2e/test_wheel_install.py shows the whole tool working from a wheel).
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

from tests.conftest import REPO

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_dir(package: str) -> Path:
    """Where setuptools reads a package from: the longest prefix named in package-dir, else its own path."""
    mapping: dict[str, str] = SETUPTOOLS.get("package-dir", {})
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in mapping:
            return REPO / mapping[prefix] / Path(*parts[i:])
    return REPO / Path(*parts)


def directories(root: Path, package: str) -> dict[str, Path]:
    """Every directory under root (caches aside) as the package name it is installed as."""
    found = {package: root}
    for path in sorted(root.rglob("*")):
        if path.is_dir() and "__pycache__" not in path.parts:
            found[".".join([package, *path.relative_to(root).parts])] = path
    return found


def test_every_directory_of_svcctl_and_playbooks_is_a_listed_package() -> None:
    expected = directories(REPO / "svcctl", "svcctl") | directories(REPO / "playbooks", "svcctl.playbooks")
    assert sorted(SETUPTOOLS["packages"]) == sorted(expected)
    for package, path in expected.items():
        assert package_dir(package) == path


def test_every_file_there_is_a_module_or_named_package_data() -> None:
    patterns: dict[str, list[str]] = SETUPTOOLS["package-data"]
    missing = []
    for package in SETUPTOOLS["packages"]:
        for path in sorted(package_dir(package).iterdir()):
            if path.is_dir() or path.suffix == ".pyc":
                continue
            if path.suffix == ".py" or any(fnmatch(path.name, p) for p in patterns.get(package, [])):
                continue
            missing.append(str(path.relative_to(REPO)))
    assert missing == []
