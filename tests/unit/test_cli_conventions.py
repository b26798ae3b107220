"""CLI conventions every command keeps: usage errors exit 1, NO_COLOR, `validate -o json`, completion."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from svcctl import cli

REPO = Path(__file__).resolve().parents[2]
LOADER_CASES = Path(__file__).parent / "loader_cases"
ESC = "\x1b"


def svcctl(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svcctl", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["no-such-command"],
        [],
        ["validate", "--paralel", "4"],
        ["validate", "-o", "yaml"],
        ["schema", "extra-argument"],
        ["plan", "--detailed-exitcode", "--paralel", "4"],
        ["plan", "--parallel", "0"],
        ["apply", "--auto-aprove"],
        ["tunnel"],
        ["tunnel", "db", "--port", "not-a-number"],
        ["key", "init", "--forse"],
        ["key"],
    ],
    ids=lambda a: " ".join(a) or "(nothing)",
)
def test_a_usage_error_exits_1_never_2(args: list[str]) -> None:
    """2 means "changes pending" to a drift job (`plan --detailed-exitcode`): a typo must not look like drift."""
    res = svcctl(*args)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "Usage:" in res.stdout + res.stderr


def test_help_and_version_exit_0() -> None:
    assert svcctl("--help").returncode == 0
    version = svcctl("--version")
    assert (version.returncode, version.stdout.startswith("svcctl ")) == (0, True)


def on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """What svcctl writes when its stdout is a terminal (a pty), where colour would be on by default."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update({"PYTHONPATH": str(REPO), **env})
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "svcctl", *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode()


@pytest.mark.parametrize("args", [["--help"], ["plan", "--help"], ["validate", "examples/lab"]])
def test_no_color_output_has_no_escape_codes(args: list[str]) -> None:
    output = on_a_terminal(*args, env={"NO_COLOR": "1", "TERM": "xterm-256color"})
    assert output.strip()
    assert ESC not in output


def test_no_color_turns_the_plans_colour_default_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli.colour_default() is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.colour_default() is False


@pytest.mark.parametrize("case", sorted(p.name for p in LOADER_CASES.iterdir() if p.is_dir()))
def test_validate_json_lists_exactly_the_loader_cases_problems(case: str) -> None:
    folder = LOADER_CASES / case
    expected = (folder / "expected.txt").read_text().splitlines()
    res = svcctl("validate", ".", "-o", "json", cwd=folder)
    doc = json.loads(res.stdout)
    assert set(doc) == {"valid", "problems", "counts"}
    lines = []
    for p in doc["problems"]:
        assert set(p) == {"file", "line", "column", "message"}
        lines += f"{p['file']}:{p['line']}:{p['column']}: {p['message']}".splitlines()
    assert lines == expected
    assert (res.returncode, doc["valid"]) == ((0, True) if not expected else (1, False))


def test_shell_completion_completes_commands() -> None:
    script = svcctl("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.returncode == 0 and "_SVCCTL_COMPLETE" in script.stdout
    res = svcctl(env={"_SVCCTL_COMPLETE": "complete_bash", "COMP_WORDS": "svcctl pl", "COMP_CWORD": "1"})
    assert res.stdout.split() == ["plan"]
