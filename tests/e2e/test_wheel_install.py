"""svcctl installed from a wheel, as a user would (pip or pipx), runs the lab example's whole job.

A wheel is built from the checkout's files and installed into a fresh virtualenv in a temporary directory
outside the checkout (its dependencies from the package index); every command then runs that venv's
`svcctl`, from a directory outside the checkout, with no path back to it: apply, the converged plan and a
query through `svcctl tunnel`. Nothing here uses the editable install the other tests run.

Like tests/e2e/test_lab_example.py, it applies a copy of examples/lab whose instances and environment
carry a per-run token, so it never touches the demo's objects nor that test's, and it destroys what it made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Lab
from tests.e2e.applying import LOCK_WAIT_S, credentials, held_by_another_apply
from tests.e2e.envs import TEST_KEY

# What a fresh clone would not have: caches, virtualenvs and earlier builds (setuptools would put a stale
# build/lib into the wheel).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".demo", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis",
)  # fmt: skip


class Installed:
    """A virtualenv holding svcctl from a wheel, and how to run its commands with no trace of the checkout."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.bin = venv / "bin"
        keep = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        path = [p for p in os.environ.get("PATH", "").split(":") if p and not p.startswith(str(REPO))]
        self.env = {**keep, "PATH": ":".join([str(self.bin), *path]), "SVCCTL_KEY": TEST_KEY}
        self.env = {k: v for k, v in self.env.items() if not k.startswith(("PG", "SVCCTL_PLAYBOOKS"))}

    def python(self, code: str) -> str:
        """Run code with the venv's interpreter from outside the checkout; its stdout."""
        res = subprocess.run(
            [str(self.bin / "python"), "-c", code], capture_output=True, text=True, timeout=60, cwd=self.venv,
            env=self.env, check=True,
        )  # fmt: skip
        return res.stdout.strip()

    def svcctl(self, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """The installed `svcctl ARGS` in cwd, no terminal; an apply waits out another live apply's locks."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            res = subprocess.run(
                [str(self.bin / "svcctl"), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                env=self.env, input="",
            )  # fmt: skip
            locked = args[0] == "apply" and res.returncode == 1 and held_by_another_apply(res.stderr)
            if not locked or time.monotonic() > deadline:
                return res
            time.sleep(3)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """svcctl from a wheel of the checkout, in a new virtualenv outside it."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.is_relative_to(REPO)
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("svcctl-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True, capture_output=True, timeout=900, cwd=root,
    )  # fmt: skip
    return Installed(venv)


def renamed_copy(root: Path, token: str) -> tuple[Path, dict[str, str]]:
    """examples/lab copied to `lab<token>/` with its instances and environment renamed; (dir, old -> new)."""
    path = root / f"lab{token}"
    shutil.copytree(REPO / "examples" / "lab", path)
    names = {"orders-db": f"orders-{token}", "catalog-db": f"catalog-{token}", "sessions": f"sessions-{token}"}
    yaml = path / "svcctl.yaml"
    text = yaml.read_text()
    for old, new in names.items():
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
    text, declared = re.subn(r"(?m)^environment: *lab\b", f"environment: lab{token}", text)
    assert declared == 1, "examples/lab/svcctl.yaml no longer declares `environment: lab`"
    yaml.write_text(text)
    return path, names


def destroy(installed: Installed, path: Path, names: dict[str, str]) -> None:
    """With the installed svcctl: protect false, then drop the instances and bindings with --allow-destroy."""
    yaml = path / "svcctl.yaml"
    text = yaml.read_text()
    for new in names.values():
        text = text.replace(f"  {new}:\n    plan:", f"  {new}:\n    protect: false\n    plan:")
    yaml.write_text(text)
    res = installed.svcctl(path, "apply", ".", "--auto-approve", "--no-color")
    assert res.returncode == 0, res.stdout + res.stderr
    yaml.write_text(text.split("\ninstances:\n", 1)[0] + "\napps:\n  web: {manifest: apps/web/manifest.yml}\n")
    res = installed.svcctl(path, "apply", ".", "--auto-approve", "--allow-destroy", "--no-color")
    assert res.returncode == 0, res.stdout + res.stderr
    res = installed.svcctl(path, "plan", ".", "--detailed-exitcode", "--no-color")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_wheel_installed_in_a_fresh_venv_applies_the_lab_example_and_tunnels_to_it(
    lab: Lab, installed: Installed, tmp_path: Path, unique: str
) -> None:
    # The package, its playbooks and its host-side scripts come from the new venv, not from the checkout;
    # and only ansible-core is there, not the `ansible` package's collections.
    site = Path(installed.python("import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    assert site.is_relative_to(installed.venv)
    svcctl_file = Path(installed.python("import svcctl; print(svcctl.__file__)"))
    assert svcctl_file == site / "svcctl" / "__init__.py"
    sources = installed.python("from svcctl.apply import project; print(*(d for _, d in project.sources()))").split()
    assert [Path(s) for s in sources] == [site / "svcctl" / "playbooks"] + [
        site / "svcctl" / "drivers" / e / "ansible" for e in ("postgres", "mysql", "redis")
    ]
    assert (site / "svcctl" / "playbooks" / "apply.yml").is_file()
    engine = site / "svcctl" / "drivers" / "postgres" / "ansible"
    assert (engine / "library" / "svcctl_pg_hba.py").is_file() and (
        engine / "templates" / "postgres-svcctl.conf.j2"
    ).is_file()
    assert (site / "svcctl" / "drivers" / "postgres" / "observe.py").is_file()
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))
    assert installed.python("import importlib.util as u; print(u.find_spec('ansible_collections'))") == "None"
    assert not tmp_path.is_relative_to(REPO)

    path, names = renamed_copy(tmp_path, unique)
    orders = names["orders-db"]
    res = installed.svcctl(path, "validate", ".")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        res = installed.svcctl(path, "apply", ".", "--auto-approve", "--no-color")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Apply complete!" in res.stdout

        res = installed.svcctl(path, "plan", ".", "--detailed-exitcode", "--no-color")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "No changes." in res.stdout

        pg = credentials(path / "apps" / "web" / "manifest.yml", "postgresql", orders)
        sql = "select session_user, current_database()"
        res = installed.svcctl(path, "tunnel", orders, "--app", "web", "--", "psql", "-XAtq", "-c", sql, timeout=120)
        assert (res.returncode, res.stdout.strip()) == (0, f"{pg['username']}|{pg['name']}"), res.stderr
    finally:
        destroy(installed, path, names)
