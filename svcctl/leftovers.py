"""Private directories of svcctl processes that were killed: found by the pid in their name, and removed.

Apply's run directories (which hold secrets) and the tunnel's OpenSSH control directories are named
`<prefix><pid>-<random>` in the temporary directory; a SIGKILL leaves svcctl no time to remove its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def remove_dead(prefix: str) -> None:
    """Remove `<prefix><pid>-*` directories whose process no longer runs, and only ours (same owner, not a
    symlink): another user's, or a live process's, are never touched."""
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue
