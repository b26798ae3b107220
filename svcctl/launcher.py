"""The `svcctl` executable: answers `--version` before anything heavy is imported, else runs the CLI.

Scripts and CI ask `svcctl --version` often; typer and pydantic cost most of a command's start-up, and
this one needs neither.
"""

from __future__ import annotations

import os
import sys

from svcctl import __version__


def main() -> None:
    """Entry point of the `svcctl` command and of `python -m svcctl`."""
    if sys.argv[1:] == ["--version"]:
        print(f"svcctl {__version__}")
        return
    # svcctl's models are internal and use no pydantic plugin; without this, the first model scans the entry
    # points of every installed distribution (30 ms of each command here). A value the user set is kept.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from svcctl.cli import main as run

    run()
