"""The hostile corpus: environments a pull request could carry to attack the controller or the hosts.

Each folder of `hostile_cases/` holds an environment and `expected.txt`, the problem line(s) `svcctl validate`
must print. Every case runs in a fresh copy of its folder: validate must exit 1 with each expected line
(file:line:column first), print no traceback and no raw control character, and leave the folder exactly as
it was: the payloads `touch marker`, so a command that ran would leave a file behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svcctl.model.types import unsafe_character

CASES = Path(__file__).parent / "hostile_cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file contents, or a symlink's target."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = f"-> {os.readlink(path)}" if path.is_symlink() else (path.read_bytes() if path.is_file() else "dir")
    return out


@pytest.mark.parametrize("case", CASE_NAMES)
def test_validate_refuses_the_hostile_case(case: str, tmp_path: Path) -> None:
    folder = tmp_path / case
    shutil.copytree(CASES / case, folder, symlinks=True)
    prepare = folder / "prepare.sh"  # a case may build what git cannot hold (a symlink out of the folder)
    if prepare.exists():
        subprocess.run(["sh", str(prepare), str(tmp_path)], cwd=folder, check=True)
        prepare.unlink()
    expected = (folder / "expected.txt").read_text().splitlines()
    before = tree(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "svcctl", "validate", "."],
        cwd=folder, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "SVCCTL_KEY": ""},
    )  # fmt: skip
    output = res.stdout + res.stderr
    assert res.returncode == 1, output
    for line in expected:
        assert line in output.splitlines(), f"missing {line!r} in:\n{output}"
    assert "Traceback" not in output
    assert unsafe_character(output.replace("\n", "")) is None, repr(output)
    assert tree(tmp_path) == before


def test_every_case_says_what_it_expects() -> None:
    for case in CASE_NAMES:
        lines = (CASES / case / "expected.txt").read_text().splitlines()
        assert lines and all(line.startswith("error: svcctl.yaml:") or line.startswith("error: ") for line in lines), (
            case
        )
