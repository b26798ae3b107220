"""Shared fixtures: the lab (real hosts booted by lab/labctl.py), unique names per test, and Hypothesis' settings."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
import pytest
from hypothesis import settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
LAB_ROOT = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
LABCTL = [sys.executable, str(REPO / "lab" / "labctl.py")]
# The Debian releases the session boots one lab-<release> host of, besides lab-1..lab-N (Debian 12).
LAB_RELEASES = os.environ.get("LAB_RELEASES", "bullseye trixie").split()


@dataclass(frozen=True)
class Lab:
    """The running lab: where its SSH files are and which hosts it has.

    `hosts` are lab-1..lab-N (Debian 12, the hosts most tests iterate); `release_hosts` are the one-per-release
    hosts the session also booted (LAB_RELEASES), by release: {"bullseye": "lab-bullseye", ...}.
    """

    root: Path
    hosts: dict[str, str]  # name -> address
    release_hosts: dict[str, str] = field(default_factory=dict)  # release -> name

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def identity(self) -> Path:
        return self.root / "id_ed25519"

    def address_of(self, host: str) -> str:
        """A lab host's fixed address (lab-N and the release hosts alike), as the lab recorded it."""
        address: str = json.loads((self.root / "hosts.json").read_text())[host]["address"]
        return address

    def ssh(
        self, host: str, command: str, *, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a lab host with the system's OpenSSH client and the lab's config."""
        res = subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host, command],
            capture_output=True, text=True, timeout=timeout, input=stdin if stdin is not None else "",
        )  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(f"ssh {host} {command!r} failed ({res.returncode}): {res.stderr}")
        return res

    def labctl(self, *args: str) -> None:
        """Drive the lab itself (stop/start a host)."""
        subprocess.run([*LABCTL, *args], check=True, timeout=300)

    def host_state(self, host: str) -> str | None:
        """ "running" or "stopped" as `labctl status` reports the host; None when the lab has no such host.

        For fixtures that stop a host: they put it back as they found it.
        """
        res = subprocess.run([*LABCTL, "status"], capture_output=True, text=True, timeout=60)
        for line in res.stdout.splitlines():
            name, *_, state = line.split("\t")
            if name == host:
                return state
        return None


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run in CI with a golden-file update variable set: those tests would rewrite their expected
    output from the actual output and pass, so nothing could fail. Updating golden files is for a developer
    at a desk, who then reviews the diff."""
    if not os.environ.get("CI"):
        return
    updating = sorted(name for name, value in os.environ.items() if name.endswith("_UPDATE_GOLDEN") and value)
    if updating:
        raise pytest.UsageError(
            f"{', '.join(updating)} is set while CI is set: golden-file tests would rewrite their expected "
            "output and pass. Unset it in the CI configuration; update golden files locally and commit the diff."
        )


# No per-example deadline: speed is measured in benchmarks, never asserted, and on one busy core the first
# example of a test (imports, caches) can take longer than Hypothesis' 200 ms. Health checks stay on, and
# runs stay random (no derandomize): a property that fails only for some inputs should be found eventually.
# (Without a deadline, too_slow allows 30 s to generate a test's first inputs instead of 1 s.)
settings.register_profile("svcctl", deadline=None)
settings.load_profile("svcctl")  # `--hypothesis-profile NAME` still overrides it


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build Hypothesis' Unicode tables before the first test that draws text, not inside it.

    `st.text()` draws from `characters(codec="utf-8")`, whose table Hypothesis computes once by encoding
    every code point (seconds on one core) and caches under `.hypothesis/`. Built inside a test, that time
    counts as input generation and, on a fresh clone, fails the too_slow health check of whichever test
    happens to draw text first. Built here, it is paid once, outside every test; cached, it costs nothing.
    """
    if any(hypothesis.is_hypothesis_test(getattr(item, "obj", None)) for item in session.items):
        st.characters(codec="utf-8").validate()
        st.characters().validate()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is an e2e test; the lab's own tests run first, on hosts as booted.

    Later tests install engines and may leave a failed unit behind (a start refused on purpose), which
    would turn `systemctl is-system-running` from running to degraded.
    """
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: 0 if str(item.fspath).endswith("e2e/test_lab.py") else 1)


@pytest.fixture(scope="session")
def lab() -> Lab:
    """The lab, brought up if needed.  An e2e test that cannot get one fails loudly; it never skips."""
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root (the lab creates network namespaces, mounts and cgroups); "
                    "run `make test` as root or deselect them with -m 'not e2e'")  # fmt: skip
    if not shutil.which("systemd-nspawn"):
        pytest.fail("e2e tests need systemd-nspawn to boot the lab hosts; `make deps` installs it")
    count = int(os.environ.get("LAB_HOSTS", "2"))
    # LAB_RELEASES too (LAB_RELEASES="" boots none); the first build of a release's image takes minutes.
    res = subprocess.run([*LABCTL, "up", "--hosts", str(count), "--releases", *LAB_RELEASES],
                         capture_output=True, text=True, timeout=1800)  # fmt: skip
    if res.returncode != 0:
        pytest.fail(f"could not bring the lab up:\n{res.stderr[-3000:]}")
    hosts = json.loads((LAB_ROOT / "hosts.json").read_text())
    # The hosts this session asked for: a lab left bigger by a benchmark has more, some of them stopped.
    wanted = {f"lab-{i}" for i in range(1, count + 1)}
    return Lab(
        root=LAB_ROOT,
        hosts={n: h["address"] for n, h in hosts.items() if n in wanted},
        release_hosts={r: f"lab-{r}" for r in LAB_RELEASES},
    )


@pytest.fixture
def private_loopback() -> str:
    """A loopback address of this test's own (127.x.y.z), so the ports it picks are not another program's.

    Linux routes all of 127.0.0.0/8 to lo. Tunnels, servers and other tests bind 127.0.0.1 (the lab is
    shared, and so is this machine), so on a random other address the ports from 10000 up are free unless
    a program listens on the wildcard address; the fixture checks that for the first few, which tests may
    then expect as literals (10000, 10001, ...).
    """
    address = f"127.{16 + secrets.randbelow(239)}.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"
    for port in range(10000, 10004):
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError as exc:
                pytest.fail(f"cannot bind {address}:{port} ({exc.strerror}): does a program listen on *:{port}?")
    return address


@pytest.fixture
def unique() -> Iterator[str]:
    """A short random token to build names no other test (or earlier run) uses: `f"t{unique}-db"`."""
    yield secrets.token_hex(3)
