"""The `svcctl` command line: thin wrappers that turn arguments into calls and errors into exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from svcctl import __version__
from svcctl.errors import SvcctlError

_STARTED = time.monotonic()  # time-to-ready of `svcctl tunnel` counts from here

app = typer.Typer(
    name="svcctl",
    help="Declare database services in Git; plan, apply and tunnel to them on SSH hosts.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no escape codes in pipes or under NO_COLOR, and 0.1 s less start-up
)


def colour_default() -> bool:
    """Colour by default on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


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


class ValidateFormat(StrEnum):
    """validate output formats."""

    text = "text"
    json = "json"


@app.command()
def validate(
    path: Annotated[
        Path, typer.Argument(help="Environment file or directory of *.yaml/*.yml files.", show_default=True)
    ] = Path(),
    output: Annotated[
        ValidateFormat,
        typer.Option("--output", "-o", help="text, or json: {valid, problems: [{file, line, column, message}]}."),
    ] = ValidateFormat.text,
) -> None:
    """Load and check the environment's files, and place its instances; no SSH."""
    from svcctl.model.loader import load_environment
    from svcctl.model.placement import place

    if output is ValidateFormat.json:
        raise typer.Exit(_validate_json(path))
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


def _validate_json(path: Path) -> int:
    """`validate -o json`: every problem as {file, line, column, message} (line and column null if unknown)."""
    from svcctl.errors import InvalidEnvironment
    from svcctl.model.loader import load_environment
    from svcctl.model.placement import PlacementError, place

    problems: list[dict[str, str | int | None]] = []
    counts: dict[str, int] = {}
    try:
        env = load_environment(path)
        place(env, {})
        counts = {section: len(getattr(env, section)) for section in ("nodes", "services", "plans", "instances")}
        counts |= {"apps": len(env.apps), "bindings": len(env.bindings)}
    except InvalidEnvironment as exc:
        problems = [{"file": p.file, "line": p.line, "column": p.column, "message": p.message} for p in exc.problems]
    except PlacementError as exc:
        w = exc.where
        problems = [
            {"file": w.file if w else str(path), "line": w.line if w else None, "column": w.column if w else None}
            | {"message": exc.detail}
        ]
    except SvcctlError as exc:
        problems = [{"file": str(path), "line": None, "column": None, "message": exc.message}]
    typer.echo(json.dumps({"valid": not problems, "problems": problems, "counts": counts}, indent=2))
    return 1 if problems else 0


@app.command()
def schema() -> None:
    """Print the JSON Schema of the environment format, for editors and the YAML language server."""
    from svcctl.model.spec import Environment

    typer.echo(json.dumps(Environment.model_json_schema(), indent=2, ensure_ascii=False))


PathArg = Annotated[Path, typer.Argument(help="Environment file or directory of *.yaml/*.yml files.")]
AcceptNewHostKeys = Annotated[
    bool,
    typer.Option("--accept-new-host-keys", help="Trust and record host keys never seen before (never changed ones)."),
]


Targets = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Only this resource address (as the plan prints it, e.g. instance.orders-db) and what it depends on; "
        "repeatable. For exceptional situations: the plan may then not be everything the YAML asks for.",
        metavar="ADDRESS",
        show_default=False,
    ),
]


class OutputFormat(StrEnum):
    """Plan output formats."""

    text = "text"
    json = "json"
    markdown = "markdown"


def _progress() -> Callable[[str, str], None] | None:
    """Per-node progress lines on stderr, on a terminal only (CI logs stay clean)."""
    if not sys.stderr.isatty():
        return None

    def show(node: str, status: str) -> None:
        print(f"  {node}: {status}" if node != "*" else f"  {status}", file=sys.stderr, flush=True)

    return show


@app.command()
def plan(
    path: PathArg = Path(),
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text, json or markdown.")] = (
        OutputFormat.text
    ),
    out: Annotated[Path | None, typer.Option("--out", help="Also save the plan here, for `svcctl apply FILE`.")] = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes of any kind.")
    ] = False,
    drift_exitcode: Annotated[
        bool,
        typer.Option(
            "--drift-exitcode",
            help="For a scheduled drift check: exit 0: nothing planned, 1: error, 2: drift (something changed "
            "outside svcctl, whatever else is planned), 3: no drift, only YAML changes not applied yet.",
        ),
    ] = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="Nodes observed at once.")] = 8,
    target: Targets = None,
    accept_new_host_keys: AcceptNewHostKeys = False,
    color: Annotated[
        bool, typer.Option("--color/--no-color", help="Colour the text plan. Default: on a terminal, unless NO_COLOR.")
    ] = colour_default(),
) -> None:
    """Observe the nodes over SSH, diff them against the YAML and print what apply would do. Changes nothing."""
    from svcctl.model.loader import load_environment
    from svcctl.model.paths import environment_root
    from svcctl.plan.observe import ObserveOptions
    from svcctl.plan.planfile import save_plan, saved_plan
    from svcctl.plan.planner import make_plan
    from svcctl.plan.render import render
    from svcctl.plan.targets import check_forms, warning
    from svcctl.secrets import load_key

    targets = tuple(target or ())
    check_forms(targets)
    env = load_environment(path)
    if targets:
        print(warning(targets), file=sys.stderr)
    options = ObserveOptions(accept_new_host_keys=accept_new_host_keys, max_parallel=parallel)
    planned = make_plan(env, load_key(env.name), options, _progress(), targets=targets)
    typer.echo(render(planned.plan, output.value, color=color and output is OutputFormat.text), nl=False)
    if out is not None:
        save_plan(out, saved_plan(planned, env, environment_root(path)))
        where = "" if path == Path() else f" --env {path}"
        print(f"Saved the plan to {out}; apply exactly it with: svcctl apply {out}{where}", file=sys.stderr)
    if planned.plan.errors:
        raise typer.Exit(1)
    if drift_exitcode and planned.plan.has_changes:
        raise typer.Exit(2 if planned.plan.drift else 3)
    if detailed_exitcode and planned.plan.has_changes:
        raise typer.Exit(2)


class ImportFormat(StrEnum):
    """import output formats."""

    yaml = "yaml"
    json = "json"


@app.command(
    "import",
    help=(
        "Print the nodes' unmanaged databases as instances that adopt them, ready to paste into the environment's "
        "instances (like Terraform's plan -generate-config-out). Changes nothing.\n\n"
        "Observes the environment's nodes as plan does (one SSH round trip each, the same SSH settings and host "
        "keys; no key needed). Offered: each PostgreSQL and MariaDB database no environment's registry records "
        "and the environment does not declare yet, as an instance named after it (_ as -), pinned to its node, "
        "at the version the node runs, with the smallest plan offering that version whose storage_mb holds the "
        "database's size (else the largest, with a comment saying it is over quota). Whatever cannot be "
        "offered is a comment saying why: a name that cannot be an instance's, no plan for the engine or "
        "version, a node without room, a Redis server (not supported yet), and so on.\n\n"
        'Exit 0 with entries, 0 with the comment "nothing to import" when there are none, 1 on error.'
    ),
    epilog="Examples:  svcctl import prod   |   svcctl import prod --node db-3 --out prod/adopted.yaml",
)
def import_(
    path: PathArg = Path(),
    node: Annotated[
        list[str] | None,
        typer.Option(
            "--node", help="Scan only this node (repeatable); default: every node.", metavar="NAME", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the YAML to this file (atomically) instead of stdout; never replaced.", metavar="FILE"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="With --out: replace the file if it exists.")] = False,
    output: Annotated[ImportFormat, typer.Option("--output", "-o", help="yaml, or json.")] = ImportFormat.yaml,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="Nodes observed at once.")] = 8,
    accept_new_host_keys: AcceptNewHostKeys = False,
) -> None:
    """Print the nodes' unmanaged databases as instances that adopt them; changes nothing."""
    from svcctl.model.loader import load_environment
    from svcctl.plan.import_scan import narrowed, scan, write_new
    from svcctl.plan.importing import importable, render_json, render_yaml, summary
    from svcctl.plan.observe import ObserveOptions

    env = load_environment(path)
    scanned = narrowed(env, node or ())
    options = ObserveOptions(accept_new_host_keys=accept_new_host_keys, max_parallel=parallel)
    result = importable(env, scan(scanned, options, _progress()), scanned.nodes)
    text = render_json(result) if output is ImportFormat.json else render_yaml(result)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_new(out, text, force=force)
        print(f"Wrote {out}.", file=sys.stderr)
    print(summary(result), file=sys.stderr)


class StatusFormat(StrEnum):
    """status output formats."""

    text = "text"
    json = "json"


@app.command(
    help=(
        "Show the health of the environment's nodes and instances, for people and monitoring jobs. Changes "
        "nothing.\n\n"
        "Observes the nodes as plan does (one SSH round trip each, the same SSH settings and host keys), but a "
        "node that cannot be observed is shown as unreachable rather than stopping the command. Per node: "
        "reachable, release, engines (version, running). Per instance: node, engine and version, state (up: "
        "its engine's unit active and its database or server present; down, missing, or unknown), size against "
        "its plan's storage_mb, connections in use against its plan's connections, each binding's credentials "
        "(current, stale, missing) and the last backup.\n\n"
        "Exit 0: healthy; 3: degraded (a node unreachable, an instance down, missing or over quota, a "
        "binding's credentials stale or missing, the last backup failed or overdue); 1: error (the YAML, the "
        "key). JSON: docs/status-json.md."
    ),
    epilog="Examples:  svcctl status prod   |   svcctl status prod -o json | jq '.problems[]'",
)
def status(
    path: PathArg = Path(),
    output: Annotated[StatusFormat, typer.Option("--output", "-o", help="text, or json.")] = StatusFormat.text,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="Nodes observed at once.")] = 8,
    accept_new_host_keys: AcceptNewHostKeys = False,
) -> None:
    """Show the health of the environment's nodes and instances; exit 3 when degraded."""
    from datetime import UTC, datetime

    from svcctl.model.loader import load_environment
    from svcctl.plan.observe import ObserveOptions
    from svcctl.plan.planner import password_source
    from svcctl.plan.status import build_status
    from svcctl.plan.status_render import render as render_status
    from svcctl.plan.status_scan import scan
    from svcctl.secrets import load_key

    env = load_environment(path)
    options = ObserveOptions(accept_new_host_keys=accept_new_host_keys, max_parallel=parallel)
    scanned = scan(env, password_source(load_key(env.name)), options, _progress())
    result = build_status(env, scanned.state, scanned.releases, scanned.failures, datetime.now(UTC))
    typer.echo(render_status(result, output.value), nl=False)
    raise typer.Exit(result.exit_code)


@app.command()
def apply(
    path: Annotated[
        Path, typer.Argument(help="Environment file or directory, or a plan saved with `svcctl plan --out`.")
    ] = Path(),
    env_path: Annotated[
        Path | None,
        typer.Option(
            "--env", help="With a saved plan: its environment's file or directory (default: the current directory)."
        ),
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve", help="Do not ask for confirmation (needed without a terminal; a saved plan never asks)."
        ),
    ] = False,
    allow_destroy: Annotated[
        bool,
        typer.Option("--allow-destroy", help="Allow destroying instances declared `protect: false` (dumped first)."),
    ] = False,
    break_lock: Annotated[
        bool, typer.Option("--break-lock", help="Remove a stale apply lock left by an apply that died.")
    ] = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="Nodes worked on at once.")] = 8,
    target: Targets = None,
    accept_new_host_keys: AcceptNewHostKeys = False,
    color: Annotated[
        bool, typer.Option("--color/--no-color", help="Colour the plan. Default: on a terminal, unless NO_COLOR.")
    ] = colour_default(),
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every task's output as Ansible runs it (secrets masked).")
    ] = False,
) -> None:
    """Plan, ask for confirmation, then make the nodes match the YAML; verifies nothing is left to do.

    Given a plan saved with `svcctl plan --out`, carry out exactly its changes without asking (it was reviewed),
    refusing it if the YAML or the hosts changed since it was made, and only its --target addresses if it was
    made with some. --target without a plan file plans with those targets, then applies.
    """
    from svcctl.apply.execute import ApplyOptions
    from svcctl.apply.execute import apply as run

    opts = ApplyOptions(
        auto_approve=auto_approve,
        allow_destroy=allow_destroy,
        break_lock=break_lock,
        parallel=parallel,
        accept_new_host_keys=accept_new_host_keys,
        color=color,
        verbose=verbose,
        environment=env_path,
        targets=tuple(target or ()),
    )

    def say(text: str) -> None:
        typer.echo(text)

    def confirm(question: str) -> bool:
        try:
            return input(question).strip() == "yes"
        except EOFError:  # Ctrl-D: no answer is not a yes
            print(file=sys.stderr)
            return False

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    raise typer.Exit(run(path, opts, say, confirm, progress))


@app.command(
    help=(
        "Show what a change to the YAML declares, with no SSH and no key: entries added, removed or edited "
        "(each field old -> new), quota changes, rotations, and the risky ones flagged (protection turned off, "
        "an instance removed, a node pin or engine changed, a node removed or re-addressed, the environment "
        "renamed, a binding removed, a client network opened).\n\n"
        "BASE and HEAD are directories, or git revisions of the repository holding --env PATH (HEAD default: "
        "the working tree). Exit 0: nothing declared differently, 2: changes, 1: error (as plan "
        "--detailed-exitcode)."
    ),
    epilog="Examples:  svcctl diff origin/main HEAD --env environments/prod -o markdown   |   svcctl diff old/ new/",
)
def diff(
    base: Annotated[str, typer.Argument(help="A directory, or a git revision.", show_default=False, metavar="BASE")],
    head: Annotated[
        str | None,
        typer.Argument(
            help="A directory, or a git revision (default: the working tree).", show_default=False, metavar="HEAD"
        ),
    ] = None,
    env_path: Annotated[
        Path,
        typer.Option("--env", help="The environment's file or directory in the repository (for revisions)."),
    ] = Path(),
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="text, markdown or json.")] = (
        OutputFormat.text
    ),
    color: Annotated[
        bool, typer.Option("--color/--no-color", help="Colour the text. Default: on a terminal, unless NO_COLOR.")
    ] = colour_default(),
) -> None:
    """Show what a change to the YAML declares, with no SSH and no key; exit 2 when something changed."""
    from svcctl.plan.declared_render import render as render_declared
    from svcctl.plan.revisions import declared_diff

    result, before, after = declared_diff(base, head, env_path)
    colour = color and output is OutputFormat.text
    typer.echo(render_declared(result, output.value, before.label, after.label, color=colour), nl=False)
    if result.has_changes:
        raise typer.Exit(2)


class TunnelVia(StrEnum):
    """How `svcctl tunnel` forwards (svcctl.tunnel.forward.VIAS)."""

    auto = "auto"
    openssh = "openssh"
    paramiko = "paramiko"


@app.command(
    help=(
        "Open an SSH tunnel to an instance and print how to connect; with a command after `--`, run it through "
        "and exit with its exit code.\n\n"
        "The node is the one holding the instance, reached with the same SSH settings, jump hosts and strict "
        "host keys as plan and apply. Without --app, a temporary user (readonly unless --write; it expires) is "
        "created on the node and removed when the tunnel closes, Ctrl-C included. Clients get the password "
        "through the environment or a 0600 option file, never through process arguments. Without a command the "
        "tunnel stays open until Ctrl-C."
    ),
    epilog=(
        "Examples:  svcctl tunnel orders-db   |   svcctl tunnel orders-db --app web -- psql -c 'select 1'   |   "
        "svcctl tunnel catalog-db -- mysqldump catalog_db > dump.sql   |   svcctl tunnel cache -- redis-cli info"
    ),
)
def tunnel(
    instance: Annotated[str, typer.Argument(help="The instance to reach.", show_default=False, metavar="INSTANCE")],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After `--`: a client to run through the tunnel (psql, pg_dump, mariadb, mysqldump, redis-cli, "
            "or anything reading PG*/SVCCTL_* variables); its exit code is svcctl's.",
            show_default=False,
            metavar="-- COMMAND [ARGS]",
        ),
    ] = None,
    env_path: Annotated[
        Path, typer.Option("--env", help="Environment file or directory (default: the current directory).")
    ] = Path(),
    app_name: Annotated[
        str | None,
        typer.Option("--app", help="Log in as this app's binding; default: a temporary user, removed on close."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Local port (default: the first free one from 10000).")
    ] = None,
    bind: Annotated[str, typer.Option("--bind", help="Local address to listen on.")] = "127.0.0.1",
    write: Annotated[
        bool, typer.Option("--write", help="Make the temporary user readwrite (default: readonly).")
    ] = False,
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Print the password with the connection details.")
    ] = False,
    via: Annotated[
        TunnelVia,
        typer.Option(
            "--via",
            help="How to forward: auto (the OpenSSH client, `ssh`, with svcctl's settings and pinned host keys; "
            "paramiko in-process if there is no `ssh` on PATH), openssh, or paramiko.",
        ),
    ] = TunnelVia.auto,
) -> None:
    """Open an SSH tunnel to an instance and print how to connect; with a command after `--`, run it through."""
    from svcctl.tunnel.command import TunnelOptions, tunnel_main

    opts = TunnelOptions(
        instance=instance,
        env_path=env_path,
        app=app_name,
        port=port,
        bind=bind,
        write=write,
        show_password=show_password,
        command=tuple(command or ()),
        via=via.value,
    )
    raise typer.Exit(tunnel_main(opts, _STARTED))


@app.command(
    epilog="Examples:  svcctl backup orders-db   |   svcctl backup orders-db --env environments/prod",
)
def backup(
    instance: Annotated[str, typer.Argument(help="The instance to back up.", show_default=False, metavar="INSTANCE")],
    env_path: Annotated[
        Path, typer.Option("--env", help="Environment file or directory (default: the current directory).")
    ] = Path(),
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the dump.")] = 3600,
) -> None:
    """Take a backup of an instance now, through its own backup service (as its timer does); exit 1 if it fails."""
    from svcctl.plan.escape import for_terminal
    from svcctl.tunnel.backups import human_size, take_backup

    located, entry = take_backup(env_path, instance, timeout)
    if entry.result != "ok":
        print(f"Backup {entry.id} of {instance} on {located.node} failed: {for_terminal(entry.error or '')}")
        raise typer.Exit(1)
    print(f"Backup {entry.id} of {instance} on {located.node}: ok, {human_size(entry.size)}, sha256 {entry.sha256}")


@app.command(
    epilog=(
        "Examples:  svcctl backups orders-db   |   svcctl backups orders-db -o json   |   "
        "svcctl backups pull orders-db ./dumps   |   svcctl backups pull orders-db ./dumps --id 20261201T030000Z"
    ),
)
def backups(
    words: Annotated[
        list[str],
        typer.Argument(help="INSTANCE, or pull INSTANCE DIR.", show_default=False, metavar="[pull] INSTANCE [DIR]"),
    ],
    env_path: Annotated[
        Path, typer.Option("--env", help="Environment file or directory (default: the current directory).")
    ] = Path(),
    output: Annotated[str, typer.Option("-o", "--output", help="text or json (listing only).")] = "text",
    backup_id: Annotated[
        str, typer.Option("--id", help="pull: the backup's id, or latest (the newest good one).")
    ] = "latest",
    force: Annotated[bool, typer.Option("--force", help="pull: replace a file of the same name in DIR.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="pull: seconds the copy may take.")] = 3600,
) -> None:
    """List an instance's backups (time, size, checksum, result), or pull one here, checksum verified."""
    from svcctl.tunnel.backups import entry_json, list_backups, pull_backup, render_list

    if words[:1] == ["pull"]:
        if len(words) != 3:
            raise SvcctlError("usage: svcctl backups pull INSTANCE DIR [--id ID|latest] [--force] [--env PATH]")
        path = pull_backup(env_path, words[1], Path(words[2]), backup_id, force, timeout)
        print(f"Copied backup of {words[1]} to {path} (sha256 verified).")
        return
    if len(words) != 1 or force or backup_id != "latest":
        raise SvcctlError("usage: svcctl backups INSTANCE [-o text|json] [--env PATH] (--id and --force are for pull)")
    if output not in ("text", "json"):
        raise SvcctlError(f"-o {output!r}: use text or json")
    located, entries = list_backups(env_path, words[0])
    if output == "json":
        doc = {"instance": located.instance, "node": located.node, "engine": located.engine,
               "backups": [entry_json(e) for e in entries]}  # fmt: skip
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(render_list(located, entries)))


@app.command(
    epilog=(
        "Examples:  svcctl restore orders-db   |   svcctl restore orders-db --from 20261201T030000Z --force   |   "
        "svcctl restore orders-db --into orders-copy"
    ),
)
def restore(
    instance: Annotated[str, typer.Argument(help="The instance whose backup to restore.", metavar="INSTANCE")],
    env_path: Annotated[
        Path, typer.Option("--env", help="Environment file or directory (default: the current directory).")
    ] = Path(),
    source: Annotated[str, typer.Option("--from", help="The backup's id, or latest (the newest good one).")] = "latest",
    into: Annotated[
        str | None, typer.Option("--into", help="Restore into this instance (same engine, same node) instead.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the data the target holds.")] = False,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="With --force, do not ask (needed without a terminal).")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="A restore drill: afterwards every table of the dump must be in the target with the dump's rows "
            "(a Redis target must answer with data); the restore's time is reported.",
        ),
    ] = False,
) -> None:
    """Restore one of an instance's backups into it (or --into another); over existing data needs --force."""
    from svcctl.tunnel.restore import RestoreOptions, run_restore

    def confirm(question: str) -> bool:
        try:
            return input(question).strip() == "yes"
        except EOFError:  # Ctrl-D: no answer is not a yes
            print(file=sys.stderr)
            return False

    opts = RestoreOptions(instance=instance, env_path=env_path, source=source, into=into, force=force,
                          auto_approve=auto_approve, interactive=sys.stdin.isatty(), verify=verify)  # fmt: skip
    raise typer.Exit(run_restore(opts, typer.echo, confirm))


key_app = typer.Typer(help="Manage the environment's key (passwords are derived from it; keep it out of Git).")
app.add_typer(key_app, name="key")


@key_app.command("init")
def key_init(
    path: PathArg = Path(),
    file: Annotated[Path | None, typer.Option("--file", help="Write the key here instead of the default.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key (changes every password).")] = False,
) -> None:
    """Create a random key for the environment at PATH, readable only by you."""
    from svcctl.model.loader import load_environment
    from svcctl.secrets import create_key

    name = load_environment(path).name
    written = create_key(name, file, force=force)
    typer.echo(
        f"Created the key of environment {name!r} at {written} (mode 0600). Share it with your team and CI "
        "through a secret store, never through Git."
    )


def main() -> None:
    """Entry point: run the CLI, print SvcctlError as one paragraph on stderr and exit with its code."""
    from typer._click.exceptions import ClickException

    try:
        code = app(prog_name="svcctl", standalone_mode=False)
    except ClickException as exc:  # a usage error exits 1, like every error: 2 means "changes pending"
        exc.show()
        sys.exit(1)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(1)
    except SvcctlError as exc:
        from svcctl.plan.escape import for_terminal  # messages quote names a node or a YAML chose

        print(f"error: {for_terminal(exc.message, newlines=True)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # the last resort: a bug must still not greet the user with a traceback
        if os.environ.get("SVCCTL_DEBUG"):
            raise
        from svcctl.plan.escape import for_terminal

        print(
            f"error: internal error in svcctl ({type(exc).__name__}: {for_terminal(str(exc))}). This is a bug in "
            "svcctl; please report it with the output of the same command run with SVCCTL_DEBUG=1. If it "
            "happened during apply, `svcctl plan` shows what was and was not done.",
            file=sys.stderr,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
