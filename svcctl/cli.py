"""The `svcctl` command line: thin wrappers that turn arguments into calls and errors into exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
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


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


@app.command()
def validate(
    path: Annotated[
        Path, typer.Argument(help="Environment file or directory of *.yaml/*.yml files.", show_default=True)
    ] = Path(),
) -> None:
    """Load and check the environment's files, and place its instances; no SSH."""
    from svcctl.model.loader import load_environment
    from svcctl.model.placement import place

    env = load_environment(path)
    place(env, {})
    summary = ", ".join(
        [
            _count(len(env.nodes), "node"),
            _count(len(env.services), "service"),
            _count(len(env.plans), "plan"),
            _count(len(env.instances), "instance"),
            _count(len(env.apps), "app"),
            _count(len(env.bindings), "binding"),
        ]
    )
    typer.echo(f"{path}: valid — {summary}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the environment format, for editors and the YAML language server."""
    from svcctl.model.spec import Environment

    typer.echo(json.dumps(Environment.model_json_schema(), indent=2, ensure_ascii=False))


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
