"""The playbooks' name checks anchor at the very end (`\\Z`): a trailing newline no longer passes `match`.

Jinja's `match` is Python's re.match, where `$` also matches before a final newline.  The expressions
are read from the task files as written and evaluated by a real ansible-playbook on localhost (no host).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

TASKS = Path(__file__).resolve().parents[2] / "svcctl" / "drivers" / "redis" / "ansible" / "tasks"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def _match_checks(task_file: str) -> list[str]:
    """The `is match(...)` expressions of the file's first assert task, verbatim."""
    tasks = YAML(typ="safe").load((TASKS / task_file).read_text())
    task = tasks[0]
    block = task.get("block", [task])
    that = next(t for t in block if "ansible.builtin.assert" in t)["ansible.builtin.assert"]["that"]
    return [expr for expr in that if "is match(" in expr]


CASES: list[tuple[str, dict[str, Any], bool]] = []
for good, value in ((True, ""), (False, "\n")):
    CASES += [
        ("redis.yml", {"svcctl_redis": {"instance": "cache" + value, "user": "sv_web_cache_r0"},
                       "change": {"kind": "instance"}}, good),
        ("redis.yml", {"svcctl_redis": {"instance": "cache", "user": "sv_web_cache_r0" + value},
                       "change": {"kind": "binding"}}, good),
    ]  # fmt: skip


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="needs ansible-playbook in the venv")
def test_match_checks_refuse_a_trailing_newline_and_accept_clean_names(tmp_path: Path) -> None:
    assert len(_match_checks("redis.yml")) == 2  # session.yml derives no name: the session helper checks its request
    tasks = []
    for task_file, variables, good in CASES:
        checks = " and ".join(f"({expr})" for expr in _match_checks(task_file))
        tasks.append({
            "name": f"{task_file} {json.dumps(variables)} {'passes' if good else 'is refused'}",
            "vars": variables,
            "ansible.builtin.assert": {"that": [checks if good else f"not ({checks})"], "quiet": True},
        })  # fmt: skip
    playbook = tmp_path / "anchors.yml"  # JSON is YAML: every expression reaches Jinja exactly as written
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    res = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(playbook)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ok={len(CASES)}" in res.stdout
