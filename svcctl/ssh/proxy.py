"""A ProxyCommand from the user's own ssh_config, run as OpenSSH runs it, as the socket paramiko talks over.

OpenSSH runs `$SHELL -c "exec COMMAND"` (/bin/sh without $SHELL) with the connection on its stdin and
stdout. svcctl does the same, except that the other end is one half of a socket pair, so paramiko gets
a real socket (timeouts, EOF when the command exits) rather than paramiko.ProxyCommand's pipes, whose
reads spin once the command has gone. The command only ever comes from a trusted config (the scan refuses
ProxyCommand in a YAML-named one), and the values substituted into it (%h, %n, %p, %r) were checked to
hold no shell syntax. It runs in a session of its own (a Ctrl-C meant for a tunnel's client does not cut
the connection under it), with the environment's key scrubbed from its environment.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import subprocess
import threading

from svcctl.secrets import scrubbed_environ

_STDERR_LINES = 20


class ProxyProcess:
    """A running ProxyCommand: `socket` is the connection; `said` what it wrote on stderr; `close` ends it."""

    def __init__(self, command: str) -> None:
        ours, theirs = socket.socketpair()
        shell = os.environ.get("SHELL") or "/bin/sh"
        try:
            self.process = subprocess.Popen(
                [shell, "-c", f"exec {command}"],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=subprocess.PIPE,
                env=scrubbed_environ(),
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._reader = threading.Thread(target=self._read_stderr, name="ssh-proxy-stderr", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self._stderr.append(line[:300])

    def said(self, wait: float = 1.0) -> str:
        """What the command wrote on stderr (its last lines), once it has exited or `wait` s have passed."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(wait)
        self._reader.join(wait)
        return " ".join(self._stderr)

    def close(self) -> None:
        """Close the connection and end the command (SIGTERM, then SIGKILL if it lingers)."""
        with contextlib.suppress(OSError):
            self.socket.close()
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    self.process.kill()
                self.process.wait(2)
        # stderr is left to the reader, which ends at EOF: closing it under a blocked read would wait for it
