"""The host programs run on every Debian release svcctl supports, with that release's own python3.

Debian 11's python3 is 3.9 and Debian 13's is 3.13: the programs built from svcctl.hostlib (observe, the
registry helper, the session helper) run there for real, and what observe prints passes the controller's
strict check of node reports. Nothing here changes an engine; the registry helper writes to a temporary
directory on the host, which the test removes.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from svcctl.drivers import observe_script, reported
from svcctl.drivers.hostprograms import registry_program, session_program
from tests.conftest import Lab

PYTHONS = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}


def hosts(lab: Lab) -> dict[str, str]:
    """One host per release: lab-1 for bookworm, lab-<release> for the others the lab booted."""
    found = {"bookworm": "lab-1", **{r: h for r, h in lab.release_hosts.items() if r != "bookworm"}}
    missing = {"bullseye", "trixie"} - set(found)
    assert not missing, f"the lab did not boot {sorted(missing)} (LAB_RELEASES): these tests need them"
    return found


def run_on(lab: Lab, host: str, program: str, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """A program as svcctl runs it on a node: `python3 -c PROGRAM ARGS` as root, its request on stdin."""
    words = " ".join(["sudo", "python3", "-c", _quoted(program), *argv])
    return lab.ssh(host, words, check=False, stdin=stdin)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.mark.parametrize("release", sorted(PYTHONS))
def test_observe_runs_with_the_release_python_and_its_report_passes_the_strict_check(lab: Lab, release: str) -> None:
    host = hosts(lab)[release]
    version = lab.ssh(host, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
    assert version == PYTHONS[release]
    res = lab.ssh(host, "sudo python3 -", stdin=observe_script(), check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = reported.decode(host, res.stdout)
    assert {e: "error" in r for e, r in doc["engines"].items()} == dict.fromkeys(doc["engines"], False)
    observed = reported.observation(host, doc)
    assert observed is not None


@pytest.mark.parametrize("release", sorted(PYTHONS))
def test_the_registry_and_session_helpers_run_there(lab: Lab, release: str) -> None:
    host = hosts(lab)[release]
    scratch = lab.ssh(host, "mktemp -d").stdout.strip()
    try:
        helper = registry_program().replace("/var/lib/svcctl/", f"{scratch}/")
        batch = {"environment": "e2e", "changes": [{"address": "engine.x.redis", "attrs": {"v": 1}, "claim": []}]}
        first = run_on(lab, host, helper, "record-many", stdin=json.dumps(batch))
        assert (first.returncode, first.stdout.strip()) == (0, "changed"), first.stderr
        again = run_on(lab, host, helper, "record-many", stdin=json.dumps(batch))
        assert again.stdout.strip() == "unchanged"
        doc = json.loads(lab.ssh(host, f"sudo cat {scratch}/registry.json").stdout)
        assert doc["objects"]["engine.x.redis"]["claims"] == {"e2e": []}
        assert run_on(lab, host, helper, "forget", "engine.x.redis").stdout.strip() == "changed"
        found = run_on(lab, host, session_program().replace("/var/lib/svcctl/", f"{scratch}/"), "find")
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout) == {"format": 1, "objects": {}}
        refused = run_on(lab, host, session_program(), "create", stdin='{"engine": "postgres"}')
        assert refused.returncode == 1 and "refusing" in refused.stderr
    finally:
        lab.ssh(host, f"sudo rm -rf {scratch}")
