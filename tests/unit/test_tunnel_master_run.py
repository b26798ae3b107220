"""Commands through the OpenSSH master: stdin fed, both outputs read to their ends, a flood cut off."""

from __future__ import annotations

import subprocess
import time

import pytest

from svcctl.tunnel.master import _collect, _TooMuch


def started(script: str) -> subprocess.Popen[bytes]:
    pipe = subprocess.PIPE
    return subprocess.Popen(["sh", "-c", script], stdin=pipe, stdout=pipe, stderr=pipe)


def test_stdin_goes_in_and_both_outputs_come_back() -> None:
    proc = started("cat; echo said >&2")
    request = b"x" * 300_000  # more than a pipe holds: written as the command reads
    out, err = _collect(proc, request, time.monotonic() + 30, 1 << 20)
    assert proc.wait() == 0 and out == request and err == b"said\n"


def test_a_node_that_sends_more_than_the_limit_is_cut_off() -> None:
    proc = started("head -c 5000000 /dev/zero")
    with pytest.raises(_TooMuch):
        _collect(proc, b"", time.monotonic() + 30, 1 << 20)
    proc.kill()
    proc.wait()


def test_a_command_that_outlives_its_deadline_times_out() -> None:
    proc = started("sleep 5")
    with pytest.raises(TimeoutError):
        _collect(proc, b"", time.monotonic() + 0.2, 1 << 20)
    proc.kill()
    proc.wait()
