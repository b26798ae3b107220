"""`svcctl apply` whose playbook succeeds but leaves the work undone: exit 1, "not converged", what is left.

Apply verifies its own work by observing the nodes again. The stand-in playbook here is a copy of the
project's playbooks/ whose apply.yml is a real play over real SSH that asks each node its name and changes
nothing, so ansible-playbook succeeds and the hosts stay exactly as planned from.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.applying import apply, database_exists, recorded
from tests.e2e.envs import REPO, Env, make_env

NO_OP = """\
- name: svcctl apply, a stand-in that connects and changes nothing
  hosts: all
  gather_facts: false
  tasks:
    - name: Ask the node its name
      ansible.builtin.command: hostname
      register: svcctl_name
      changed_when: false
    - name: Report
      ansible.builtin.debug:
        msg: "svcctl: no-op run on {{ svcctl_name.stdout }}, {{ svcctl_changes | length }} change(s) left undone"
"""


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """A PostgreSQL instance on lab-1 and a binding, never applied; destroyed afterwards if anything made it."""
    env = make_env(tmp_path, unique)
    (env.path / "apps").mkdir()
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/app.env, format: dotenv}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )
    yield env
    env.write("instances: {}\n")
    res = apply(env, "--allow-destroy")  # the real playbooks: a no-op plan unless the stand-in was bypassed
    assert res.returncode == 0, res.stdout + res.stderr


def no_op_playbooks(tmp_path: Path) -> Path:
    """A copy of the project's playbooks/ (library, tasks, files) with apply.yml replaced by the no-op play."""
    copy = tmp_path / "playbooks"
    shutil.copytree(REPO / "playbooks", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "apply.yml").write_text(NO_OP)
    return copy


def test_an_apply_that_leaves_work_undone_exits_1_listing_what_is_still_planned(
    lab: Lab, tmp_path: Path, env: Env
) -> None:
    instance, binding = f"instance.{env.pg()}", f"binding.{env.app()}.{env.pg()}"
    res = apply(env, extra_env={"SVCCTL_PLAYBOOKS": str(no_op_playbooks(tmp_path))})

    assert res.returncode == 1, res.stdout + res.stderr
    assert "lab-1: no-op run on lab-1, 2 change(s) left undone" in res.stdout  # the stand-in really ran there
    assert "Apply complete!" not in res.stdout
    before, marker, left = res.stdout.partition("Apply ran, but the nodes have not converged; still planned:\n")
    assert marker, res.stdout + res.stderr
    assert f"# {instance} will be created" in before  # the plan shown for confirmation ...
    assert f"# {instance} will be created" in left  # ... and, observed again afterwards, still to do
    assert f"# {binding} will be created" in left
    assert "2 to add, 0 to change, 0 to destroy" in left
    assert "Traceback" not in res.stdout + res.stderr

    assert not database_exists(lab, env.pg())
    assert not recorded(lab, instance)
    # the app gets no credentials for a user that does not exist
    assert f"Manifest of app {env.app()} left as it was: {binding}, {instance} not realised." in before
    assert not (env.path / "apps" / "app.env").exists()
