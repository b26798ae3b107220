"""The user's own ssh_config as OpenSSH reads it, against the lab: a node reachable only through an Included
file's ProxyCommand (`ssh -W` through lab-1) is planned, applied and tunnelled to; what svcctl cannot honour
is a clear error.

HOME points at a directory of the test's own (svcctl's `~/.ssh/config` is `$HOME/.ssh/config`); /root/.ssh
is never touched. The node's alias resolves nowhere but in the Included file, and the ProxyCommand logs each
connection it carries, so the test sees that plan, apply (Ansible's ssh) and the tunnel all went through it.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from svcctl.ssh import SshTarget, connect, resolve
from tests.conftest import Lab
from tests.e2e.applying import apply
from tests.e2e.envs import Env, make_env

PROXY = (  # logs the alias and who ran it (its parent: ssh, or svcctl's python), then `ssh -W` through lab-1
    'sh -c \'echo "$0 $(cat /proc/$PPID/comm)" >> {log}; '
    'exec ssh -F {lab_config} -o ControlMaster=no -o ControlPath=none -W "$1" lab-1\' %n %h:%p'
)


@dataclass
class Behind:
    """An environment whose node lab-2 is declared as `alias`, known only to an Included file of $HOME's config."""

    env: Env
    home: Path
    alias: str
    log: Path

    def run(self, *args: str, timeout: float = 600) -> object:
        return self.env.run(*args, timeout=timeout, extra_env={"HOME": str(self.home)})

    def through_proxy(self) -> list[tuple[str, str]]:
        """(alias, who ran it: `ssh` for OpenSSH, else svcctl's python) for each connection the ProxyCommand
        carried, in order."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [(alias, "ssh" if parent == "ssh" else "svcctl") for alias, parent in (line.split() for line in lines)]


def user_config(lab: Lab, tmp_path: Path, alias: str, extra: str = "") -> tuple[Path, Path]:
    """$HOME with `.ssh/config` Including `conf.d/*.conf`, where one file declares `alias` behind lab-1."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    included = tmp_path / "conf.d"
    included.mkdir()
    log = tmp_path / "proxy.log"
    (included / "behind.conf").write_text(
        f"Host {alias}\n"
        "  HostName lab-2\n"  # as lab-1 knows it; the alias itself resolves nowhere
        "  User deploy\n"
        f"  IdentityFile {lab.identity}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {lab.known_hosts}\n"
        f"  ProxyCommand {PROXY.format(log=log, lab_config=lab.ssh_config)}\n"
        f"{extra}"
    )
    # An absolute Include: OpenSSH reads a relative one from the passwd entry's ~/.ssh, not $HOME's.
    (home / ".ssh" / "config").write_text(f"# the user's own\nInclude {included}/*.conf\n")
    return home, log


@pytest.fixture
def behind(lab: Lab, tmp_path: Path) -> Iterator[Behind]:
    token = secrets.token_hex(3)
    alias = f"hidden-{token}"
    home, log = user_config(lab, tmp_path, alias)
    env = make_env(tmp_path, token)
    try:
        yield Behind(env, home, alias, log)
    finally:
        remove(lab, env)


def environment(host: str, instances: str, ssh_config: Path | None = None) -> str:
    """One node, lab-2, declared as `host` (through the user's own config, or the `ssh_config` named)."""
    config = f"    ssh_config: {ssh_config}\n" if ssh_config else ""
    return (
        "nodes:\n"
        "  lab-2:\n"
        f"    host: {host}\n{config}"
        "    engines: [postgres]\n"
        "    capacity: {memory_mb: 4096, storage_mb: 40960}\n"
        "services:\n"
        '  postgres: {engine: postgres, versions: ["15"]}\n'
        "plans:\n"
        "  pg-small: {service: postgres, storage_mb: 512, connections: 20}\n"
        f"instances:{instances}\n"
    )


def remove(lab: Lab, env: Env) -> None:
    """Destroy the instance, if lab-2 records it, through the lab's own config (not what is tested) and lab-2
    alone (other tests' work on lab-1 cannot fail it). It is declared and applied once more first: lab-2's
    PostgreSQL is shared, and when another test has stopped it, svcctl refuses to forget an instance it cannot
    see; apply starts it again."""
    address = f'"instance.{env.pg()}"'
    registry = lab.ssh("lab-2", f"sudo -n grep -c '{address}' /var/lib/svcctl/registry.json", check=False)
    if registry.stdout.strip() in ("", "0"):
        return
    declared = f"\n  {env.pg()}: {{plan: pg-small, node: lab-2, protect: false}}"
    for instances, args in ((declared, ()), (" {}", ("--allow-destroy",))):
        env.write_raw(environment("lab-2", instances, lab.ssh_config))
        res = apply(env, *args)
        assert res.returncode == 0, res.stdout + res.stderr


def assert_clean_failure(res: object, *needles: str) -> str:
    out, err, rc = res.stdout, res.stderr, res.returncode  # type: ignore[attr-defined]
    assert rc == 1, out + err
    assert "Traceback" not in err and 'File "' not in err, err
    for needle in needles:
        assert needle in err, err
    return str(err)


def test_plan_apply_and_tunnel_reach_a_node_only_an_included_proxycommand_knows(behind: Behind) -> None:
    env, pg = behind.env, behind.env.pg()
    env.write_raw(environment(behind.alias, f"\n  {pg}: {{plan: pg-small, node: lab-2, protect: false}}"))

    plan = behind.run("plan", ".", "--no-color")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # type: ignore[attr-defined]
    assert f"instance.{pg}" in plan.stdout  # type: ignore[attr-defined]
    assert set(behind.through_proxy()) == {(behind.alias, "svcctl")}
    planned = len(behind.through_proxy())

    applied = apply(env, extra_env={"HOME": str(behind.home)})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    # svcctl's own sessions and Ansible's ssh (apply), both through the same ProxyCommand
    assert set(behind.through_proxy()[planned:]) == {(behind.alias, "svcctl"), (behind.alias, "ssh")}
    converged = behind.run("plan", ".", "--no-color", "--detailed-exitcode")
    assert converged.returncode == 0, converged.stdout + converged.stderr  # type: ignore[attr-defined]

    before = len(behind.through_proxy())
    res = behind.run("tunnel", pg, "--", "psql", "-XAtc", "select current_database(), 6 * 7", timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr  # type: ignore[attr-defined]
    assert res.stdout.strip() == f"{pg}|42"  # type: ignore[attr-defined]
    # the node is the instance's only one: the registry read, the session user and the forward all go over the
    # tunnel's OpenSSH master (the default forwarder), one connection through the ProxyCommand, none directly
    assert behind.through_proxy()[before:] == [(behind.alias, "ssh")]
    before = len(behind.through_proxy())
    res = behind.run("tunnel", pg, "--via", "paramiko", "--", "psql", "-XAtc", "select 6 * 7", timeout=180)
    assert res.returncode == 0 and res.stdout.strip() == "42", res.stdout + res.stderr  # type: ignore[attr-defined]
    assert set(behind.through_proxy()[before:]) == {(behind.alias, "svcctl")}  # svcctl's own session, alone


def test_a_directive_svcctl_cannot_honour_fails_the_plan_naming_it(lab: Lab, tmp_path: Path, unique: str) -> None:
    alias = f"hidden-{unique}"
    home, log = user_config(lab, tmp_path, alias, extra="  ProxyUseFdpass yes\n")
    env = make_env(tmp_path, unique)
    env.write_raw(environment(alias, " {}"))
    res = env.run("plan", ".", "--no-color", extra_env={"HOME": str(home)})
    assert_clean_failure(
        res,
        f"node lab-2: the ssh_config {home}/.ssh/config sets ProxyUseFdpass yes for host {alias}, "
        "which svcctl cannot honour",
        "or exclude this host from that Host/Match block",
    )
    assert res.stdout == ""
    assert not log.exists()  # refused before anything ran


def test_a_host_pinned_only_by_a_cert_authority_is_refused_not_accepted(lab: Lab, tmp_path: Path, unique: str) -> None:
    alias = f"hidden-{unique}"
    authority = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(authority)], check=True)
    pins = tmp_path / "ca_known_hosts"
    pins.write_text(f"@cert-authority lab-2,{alias} {(tmp_path / 'ca.pub').read_text().strip()}\n")
    home, _ = user_config(lab, tmp_path, alias, extra="  StrictHostKeyChecking accept-new\n")
    config = tmp_path / "conf.d" / "behind.conf"
    config.write_text(config.read_text().replace(str(lab.known_hosts), str(pins)))
    env = make_env(tmp_path, unique)
    env.write_raw(environment(alias, " {}"))
    res = env.run("plan", ".", "--no-color", extra_env={"HOME": str(home)})
    assert_clean_failure(
        res,
        f"node lab-2: known_hosts trusts {alias} (lab-2:22) only through @cert-authority ({pins}:1)",
        "paramiko) cannot verify host certificates",
    )
    assert pins.read_text().count("\n") == 1  # accept-new recorded nothing


def test_a_session_goes_through_an_included_proxycommand_and_closing_it_ends_the_command(
    lab: Lab, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alias = f"hidden-{unique}"
    home, log = user_config(lab, tmp_path, alias)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with connect(SshTarget("lab-2", alias)) as session:
        # lab-2 sees the connection come from lab-1's address: the ProxyCommand's `ssh -W`, not this machine
        assert (
            session.run(["sh", "-c", 'echo "${SSH_CONNECTION%% *}"; hostname']).stdout
            == f"{lab.hosts['lab-1']}\nlab-2\n"
        )
        (proxy,) = session.proxies
        assert proxy.process.poll() is None
    assert proxy.process.poll() is not None  # closed with the session
    assert [line.split()[0] for line in log.read_text().splitlines()] == [alias]


def test_a_proxyjump_of_the_users_own_config_goes_through_each_hop_with_its_own_settings(
    lab: Lab, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    alias = f"beyond-{unique}"
    # lab-1 and lab-2 as the lab declares them, Included; the alias jumps through lab-1 to lab-2 by name
    (home / ".ssh" / "config").write_text(
        f"Include {lab.ssh_config}\n"  # first: an Include inside a Host block applies to that block's hosts only
        f"Host {alias}\n  HostName lab-2\n  ProxyJump lab-1\n"
        f"  User deploy\n  IdentityFile {lab.identity}\n  UserKnownHostsFile {lab.known_hosts}\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    resolved = resolve(SshTarget("lab-2", alias))
    assert resolved.jump is not None and resolved.jump.hostname == lab.hosts["lab-1"]
    with connect(resolved) as session:
        assert (
            session.run(["sh", "-c", 'echo "${SSH_CONNECTION%% *}"; hostname']).stdout
            == f"{lab.hosts['lab-1']}\nlab-2\n"
        )
        assert len(session.hops) == 1
