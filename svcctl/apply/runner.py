"""Run apply.yml with ansible-runner: one run over every affected node, progress from events.

Variables (including secrets) go into a private data directory of mode 0700 that is removed afterwards,
as data Ansible never templates (`svcctl.apply.ansible_data`); ansible-playbook and its ssh processes run
without the environment's key in their environment and never forward the agent. Host keys are checked
strictly against the same known_hosts files as svcctl's own SSH layer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_runner.interface import init_runner

from svcctl.apply import project
from svcctl.apply.ansible_data import write_unsafe
from svcctl.drivers.hostprograms import (
    HOSTLIB_MODULES,
    backup_program,
    hostlib_source,
    registry_program,
    session_program,
)
from svcctl.leftovers import remove_dead
from svcctl.secrets import scrubbed_environ
from svcctl.ssh import ResolvedTarget
from svcctl.ssh.openssh import openssh_options

EventSink = Callable[[str], None]


@dataclass
class TaskFailure:
    """One failed task: where, which, and the module's message (never a secret: no_log tasks are censored)."""

    host: str
    task: str
    message: str


@dataclass
class RunResult:
    """What ansible-runner reported, per host."""

    status: str
    rc: int
    failures: list[TaskFailure] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)  # e.g. where a dump was written
    log: str = ""  # Ansible's whole output, secrets masked: kept in a file when the run fails
    log_file: Path | None = None  # where that file is, when it was kept

    @property
    def reason(self) -> str:
        """Why the run failed as a whole when no task did: the last lines of Ansible's output."""
        tail = [line for line in self.log.strip().splitlines() if line.strip()][-6:]
        return "\n".join(tail) or f"ansible-playbook ended with status {self.status} (exit code {self.rc})"

    @property
    def succeeded(self) -> bool:
        """True when every host ran every task."""
        return self.status == "successful" and not self.failures and not self.unreachable


def ssh_args(target: ResolvedTarget) -> str:
    """OpenSSH options for Ansible that reach the node exactly as svcctl's SSH layer does (`openssh_options`).

    `-F none` and every setting resolved (from `ssh -G` and the YAML) passed explicitly: plan and apply
    reach the same host with the same user, keys, certificates, ProxyCommand or jump hosts and known_hosts.
    """
    return shlex.join([*openssh_options(target), "-o", "ServerAliveInterval=15"])


def inventory(targets: Mapping[str, ResolvedTarget], hostvars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An inventory of the nodes that have changes, each with its SSH settings and its variables."""
    hosts: dict[str, Any] = {}
    for node, vars_ in hostvars.items():
        t = targets[node]
        hosts[node] = {
            "ansible_host": t.hostname,
            "ansible_port": t.port,
            "ansible_user": t.user,
            "ansible_ssh_common_args": ssh_args(t),
            **vars_,
        }
    return {"all": {"hosts": hosts}}


PRIVATE_PREFIX = "svcctl-apply-"
"""Private data directories are `svcctl-apply-<pid>-<random>` in the temporary directory."""


def remove_leftovers() -> None:
    """Remove private data directories (they hold secrets) of applies that were killed before cleaning up."""
    remove_dead(PRIVATE_PREFIX)


def write_host_programs(private: Path) -> Path:
    """The host programs the playbooks copy to the nodes, and the host library as Ansible's module_utils
    (`ansible.module_utils.svcctl_hostlib`), all built from `svcctl.hostlib` into the run's private directory."""
    programs = private / "programs"
    library = programs / "module_utils" / "svcctl_hostlib"
    library.mkdir(parents=True, exist_ok=True)
    (programs / "svcctl-registry.py").write_text(registry_program())
    (programs / "svcctl-session.py").write_text(session_program())
    (programs / "svcctl-backup.py").write_text(backup_program())
    for module in ("__init__", *HOSTLIB_MODULES):
        (library / f"{module}.py").write_text(hostlib_source(module))
    return programs


def run_apply(
    targets: Mapping[str, ResolvedTarget],
    hostvars: Mapping[str, Mapping[str, Any]],
    extravars: Mapping[str, Any],
    progress: EventSink | None = None,
    forks: int = 8,
    verbose: bool = False,
) -> RunResult:
    """Run apply.yml over the given nodes in one ansible-runner run; never raises for task failures.

    With `verbose`, every task's output goes to `progress` as Ansible prints it (no_log tasks censored, and
    every secret of the run masked). A failed run keeps the whole output, masked, in a 0600 file (`log_file`).
    """
    result = RunResult(status="unknown", rc=-1)
    current_task: dict[str, str] = {}
    mask = masker(_secret_values(hostvars))

    def on_event(event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        host = str(data.get("host", ""))
        task = str(data.get("task", ""))
        if verbose and progress and event.get("stdout"):
            progress(mask(str(event["stdout"])))
        if kind == "playbook_on_task_start":
            current_task["name"] = task
        elif kind == "runner_on_ok":
            res = data.get("res", {}) or {}
            result.ok[host] = result.ok.get(host, 0) + 1
            if res.get("changed"):
                result.changed[host] = result.changed.get(host, 0) + 1
                if progress:
                    progress(f"  {host}: {task}: changed")
            if progress:  # an objects module's run is no_log (its result hidden): its summary task names each
                for change in _objects_changed(res):
                    progress(f"  {host}: {change}: changed")
            result.reports += [f"{host}: {r}" for r in _reports(res)]
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            res = data.get("res", {}) or {}
            message = str(res.get("msg") or res.get("stderr") or res.get("stdout") or "").strip()
            if not message:
                message = f"failed with no message (rc {res.get('rc', '?')}); the run log has the task's output"
            if res.get("censored"):
                message = "(output hidden: the task handles a secret) " + message
            result.failures.append(TaskFailure(host=host, task=task, message=clip(mask(message))))
            if progress:
                progress(f"  {host}: {task}: FAILED")
        elif kind == "runner_on_unreachable":
            res = data.get("res", {}) or {}
            result.unreachable[host] = clip(mask(str(res.get("msg", "unreachable"))))
            if progress:
                progress(f"  {host}: unreachable")
        return True

    remove_leftovers()
    old_umask = os.umask(0o077)
    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-"))
    try:
        private.chmod(0o700)
        venv_bin = str(Path(sys.executable).parent)  # ansible-playbook of this install (pipx puts only svcctl on PATH)
        envvars = {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        }
        # Written by us, not by ansible-runner (which would write JSON that Ansible templates, and put
        # extravars on ansible-playbook's command line).
        hosts_file = write_unsafe(private / "inventory" / "hosts.yml", inventory(targets, hostvars))
        programs = write_host_programs(private)
        envvars["ANSIBLE_MODULE_UTILS"] = str(programs / "module_utils")
        write_unsafe(private / "env" / "extravars", {**extravars, "svcctl_programs": str(programs)})
        runner = init_runner(
            private_data_dir=str(private),
            project_dir=str(project.assemble(private / "project")),
            playbook="apply.yml",
            inventory=str(hosts_file),
            envvars=envvars,
            forks=forks,
            quiet=True,
            event_handler=on_event,
            suppress_env_files=False,
        )
        runner.config.env = scrubbed_environ(runner.config.env)
        runner.run()
        result.status = str(runner.status)
        result.rc = int(runner.rc if runner.rc is not None else -1)
        result.log = mask(_read_stdout(Path(runner.config.artifact_dir)))
        if not result.succeeded:
            result.log_file = keep_log(result.log)
    finally:
        os.umask(old_umask)
        _remove(private)
    return result


MESSAGE_LIMIT = 500
"""About how many characters of a task's or a host's message a RunResult keeps (the log keeps them all)."""


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` cut to about `limit` characters, keeping the start of its first line and its last lines.

    ssh and Ansible put the verdict last ("Host key verification failed.") after a banner that alone fills
    the limit, so the end is what must survive; Windows line ends (ssh's stderr has them) become newlines.
    """
    text = text.replace("\r\n", "\n").strip()
    if len(text) <= limit:
        return text
    head = text.splitlines()[0][: limit // 4]
    tail = text[len(text) - (limit - len(head)) :]
    if "\n" in tail[:-1]:
        tail = tail[tail.index("\n") + 1 :]  # whole lines only
    return f"{head} [...]\n{tail}"


def _secret_values(hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every secret handed to the playbook (the values under each node's `svcctl_secrets`)."""
    out: list[str] = []
    for vars_ in hostvars.values():
        for secrets in (vars_.get("svcctl_secrets") or {}).values():
            out += [v for v in secrets.values() if isinstance(v, str) and v]
    return out


def masker(secrets: list[str]) -> Callable[[str], str]:
    """A function replacing each of `secrets` by *** in a text (longest first, so no part of one survives)."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def mask(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "***")
        return text

    return mask


def _read_stdout(artifacts: Path) -> str:
    """Ansible's output as ansible-runner captured it (artifacts/<ident>/stdout), or nothing."""
    try:
        return (artifacts / "stdout").read_text(errors="replace")
    except OSError:
        return ""


def log_dir() -> Path:
    """Where failed runs' logs are kept: $XDG_STATE_HOME/svcctl/logs (default ~/.local/state/svcctl/logs)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "svcctl" / "logs"


def keep_log(text: str) -> Path | None:
    """Write a failed run's (masked) output to a new 0600 file in `log_dir()`; None if that is impossible."""
    directory = log_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"apply-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    except OSError:
        return None
    return path


def _objects_changed(res: Any) -> list[str]:
    """`<action> <address>` of each object an objects module changed, from the task that shows its results
    (`What <engine> did`: a list of {address, action, changed, did}); nothing for any other task."""
    msg = res.get("msg") if isinstance(res, dict) else None
    if not isinstance(msg, list):
        return []
    return [
        f"{m['action']} {m['address']}"
        for m in msg
        if isinstance(m, dict) and m.get("changed") is True and isinstance(m.get("address"), str)
        and isinstance(m.get("action"), str)
    ]  # fmt: skip


def _reports(res: Any) -> list[str]:
    """What a task tells the operator: the `svcctl: ...` messages of debug tasks (one, or a list)."""
    msg = res.get("msg") if isinstance(res, dict) else None
    messages = msg if isinstance(msg, list) else [msg]
    return [m[len("svcctl: ") :] for m in messages if isinstance(m, str) and m.startswith("svcctl: ")]


def _remove(private: Path) -> None:
    """Remove a run's private directory (it holds secrets) and stop what still uses it.

    After a cancelled run, ansible-playbook's workers may still be dying and writing into it; after any run,
    its ssh control masters (ControlPersist) wait there for a reuse that cannot come, as their sockets go
    with the directory.  Both name the directory in their command line or environment.
    """
    for _ in range(50):
        _kill_users_of(private)
        shutil.rmtree(private, ignore_errors=True)
        if not private.exists():
            return
        time.sleep(0.1)


def _kill_users_of(private: Path) -> None:
    """SIGKILL every other process of ours whose command line or environment names `private` (Linux /proc)."""
    marker = str(private).encode()
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != os.getpid()]
    except OSError:  # no /proc (macOS): the loop in _remove retries the removal instead
        return
    for entry in entries:
        try:
            if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:  # gone meanwhile, or not ours
            continue
