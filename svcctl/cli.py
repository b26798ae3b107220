"""The `svcctl` command line: thin wrappers that turn arguments into calls and errors into exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from svcctl import __version__
from svcctl.errors import SvcctlError

app = typer.Typer(
    name="svcctl",
    help="Declare database services in Git; plan, apply and tunnel to them on SSH hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"svcctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Declare database services in Git; plan, apply and tunnel to them on SSH hosts."""


def main() -> None:
    """Entry point: run the CLI, print SvcctlError as one paragraph on stderr and exit with its code."""
    try:
        app()
    except SvcctlError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
