"""Run a command on the node: never through a shell, with a timeout, optionally as another user."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


def sh(
    argv: Sequence[str],
    input: str | None = None,
    user: str | None = None,
    timeout: float = 30,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run argv in `/` and return (exit code, stdout, stderr); 127 if the program is missing, 124 on timeout.

    `user` runs it as that user through runuser (root only), so a password on stdin never becomes an argument.
    """
    words = list(argv)
    if user is not None:
        words = ["runuser", "-u", user, "--", *words]
    try:
        done = subprocess.run(
            words, input=input, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False
        )
    except FileNotFoundError as exc:
        return 127, "", str(exc)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:g}s: {words[0]}"
    return done.returncode, done.stdout, done.stderr
