"""Build throwaway environments on the lab with unique names, and run the svcctl CLI on them."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SVCCTL = [sys.executable, "-m", "svcctl"]
# One key per test session: every derived password in these tests comes from it.
TEST_KEY = base64.b64encode(os.urandom(32)).decode()

NODES = """\
nodes:
  lab-1:
    host: lab-1
    ssh_config: /var/lib/svcctl-lab/ssh_config
    labels: {{zone: a}}
    engines: [postgres, redis]
    capacity: {{memory_mb: 4096, storage_mb: 40960}}
  lab-2:
    host: lab-2
    ssh_config: /var/lib/svcctl-lab/ssh_config{lab2_extra}
    labels: {{zone: b}}
    engines: [mysql, postgres, redis]
    capacity: {{memory_mb: 4096, storage_mb: 40960}}
services:
  postgres: {{engine: postgres, versions: ["15"]}}
  mysql: {{engine: mysql, versions: ["10.11"]}}
  redis: {{engine: redis, versions: ["7"]}}
plans:
  pg-small: {{service: postgres, storage_mb: 512, connections: 20}}
  mysql-small: {{service: mysql, storage_mb: 512, connections: 20}}
  cache-16: {{service: redis, memory_mb: 16, eviction: allkeys-lru, connections: 50}}
"""


@dataclass
class Env:
    """A throwaway environment directory whose names include a per-test token."""

    path: Path
    token: str

    @property
    def name(self) -> str:
        return self.path.name

    def pg(self) -> str:
        return f"pg{self.token}"

    def my(self) -> str:
        return f"my{self.token}"

    def rd(self) -> str:
        return f"rd{self.token}"

    def app(self) -> str:
        return f"app{self.token}"

    def write(self, body: str, *, lab2_extra: str = "") -> None:
        """(Re)write svcctl.yaml: the shared nodes/catalogue plus `body` (instances, apps, bindings), named."""
        self.write_raw(NODES.format(lab2_extra=lab2_extra) + body)

    def write_raw(self, text: str) -> None:
        """(Re)write svcctl.yaml as given, for tests that declare their own nodes; `environment: <name>` (the
        directory's name, which the registry records) is appended unless the text declares a name itself.
        Appended last, so that every line a test counts stays where it was."""
        if not re.search(r"(?m)^environment:", text):
            text += ("" if text.endswith("\n") or not text else "\n") + f"environment: {self.name}\n"
        (self.path / "svcctl.yaml").write_text(text)

    def run(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 600,
        stdin: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the svcctl CLI (no terminal) in this environment's directory."""
        env = {**os.environ, "SVCCTL_KEY": TEST_KEY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.update(extra_env or {})
        res = subprocess.run(
            [*SVCCTL, *args], capture_output=True, text=True, timeout=timeout, cwd=self.path, env=env,
            input=stdin if stdin is not None else "",
        )  # fmt: skip
        if check and res.returncode != 0:
            raise AssertionError(f"svcctl {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res


def make_env(tmp_path: Path, token: str) -> Env:
    """A new environment directory named after the token (the registry keys ownership by that name)."""
    path = tmp_path / f"env{token}"
    path.mkdir()
    return Env(path=path, token=token)
