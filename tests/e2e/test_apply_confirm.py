"""`svcctl apply` on a terminal asks before it changes anything: only `yes` applies.

svcctl runs on a pseudo-terminal (the `pty` module) as an operator's shell would run it: stdin, stdout and
stderr on the terminal, no --auto-approve. The test types its answer at the prompt.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.applying import LOCK_WAIT_S, apply, assert_converged, database_exists, held_by_another_apply, recorded
from tests.e2e.envs import SVCCTL, TEST_KEY, Env, make_env

PROMPT = "Do you want to perform these actions? Only 'yes' will be accepted: "
READ_LIMIT_S = 600  # how long svcctl may take to plan (or, after the answer, to apply) before the test gives up


def _read_until(fd: int, proc: subprocess.Popen[bytes], until: str | None) -> str:
    """What the terminal shows until `until` appears (None: until svcctl closes it); fails after READ_LIMIT_S."""
    out = b""
    deadline = time.monotonic() + READ_LIMIT_S
    while until is None or until.encode() not in out:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            raise AssertionError(f"svcctl showed no {until!r} within {READ_LIMIT_S} s:\n{out.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every copy of the terminal's other end is closed, svcctl has exited
            chunk = b""
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace").replace("\r\n", "\n")


def apply_on_a_terminal(env: Env, answer: str | None) -> tuple[int, str, bool]:
    """`svcctl apply .` on a pseudo-terminal, typing `answer` and Enter at the prompt (None: Ctrl-D, the end of
    input): (exit code, screen, asked).

    Retried while another (live) apply holds a lock, as tests.e2e.applying.apply does.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    variables = {**os.environ, "SVCCTL_KEY": TEST_KEY, "NO_COLOR": "1", "TERM": "dumb",
                 "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    while True:
        controller, terminal = pty.openpty()
        try:
            proc = subprocess.Popen(
                [*SVCCTL, "apply", "."], cwd=env.path, env=variables,
                stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
            )  # fmt: skip
            os.close(terminal)
            screen = _read_until(controller, proc, PROMPT)
            asked = PROMPT in screen
            if asked:
                os.write(controller, b"\x04" if answer is None else answer.encode() + b"\n")
                screen += _read_until(controller, proc, None)
            rc = proc.wait(60)
        finally:
            os.close(controller)
        if rc == 1 and held_by_another_apply(screen) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        return rc, screen, asked


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """A PostgreSQL instance on lab-1, to be created by the test's confirmed apply; destroyed afterwards."""
    env = make_env(tmp_path, unique)
    env.write(f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n")
    yield env
    env.write("instances: {}\n")
    res = apply(env, "--allow-destroy")
    assert res.returncode == 0, res.stdout + res.stderr


def test_only_yes_at_the_prompt_applies(lab: Lab, env: Env) -> None:
    instance = f"instance.{env.pg()}"
    for answer in ("", "y", "YES", "no"):
        rc, screen, asked = apply_on_a_terminal(env, answer)
        assert asked, screen
        assert f"# {instance} will be created" in screen.split(PROMPT)[0]  # the plan comes before the question
        assert rc == 1, f"answer {answer!r}:\n{screen}"
        assert screen.rstrip().endswith("Apply cancelled; nothing was changed."), f"answer {answer!r}:\n{screen}"
        assert "Traceback" not in screen
        assert not database_exists(lab, env.pg()) and not recorded(lab, instance), f"answer {answer!r}"

    # Ctrl-D instead of an answer: no answer, no apply.
    rc, screen, asked = apply_on_a_terminal(env, None)
    assert asked and rc == 1, screen
    assert screen.rstrip().endswith("Apply cancelled; nothing was changed."), screen
    assert "Traceback" not in screen and "internal error" not in screen
    assert not database_exists(lab, env.pg()) and not recorded(lab, instance)

    rc, screen, asked = apply_on_a_terminal(env, "yes")
    assert asked and rc == 0, screen
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in screen, screen
    assert database_exists(lab, env.pg()) and recorded(lab, instance)
    assert_converged(env)
