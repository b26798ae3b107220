"""`--target` on the lab: plan and apply only the targeted resources (and what they need), saved plans included."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Lab
from tests.e2e.applying import LOCK_WAIT_S, apply, destroy_all, held_by_another_apply
from tests.e2e.envs import Env, make_env

WARNING = "Warning: resource targeting is in effect"


@pytest.fixture
def env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[Env]:
    """This test's environment; whatever the test made (in whatever state it stopped) is destroyed afterwards."""
    made = make_env(tmp_path, unique)
    yield made
    destroy_all(made)


def body(env: Env, *, binding: bool = False) -> str:
    """Two instances on lab-1 (a PostgreSQL database and a Redis server), optionally a binding on the first."""
    text = (
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1, protect: false}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-1, protect: false}}\n"
    )
    if binding:
        text += (
            f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: json}}\n"
            f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
        )
    return text


def planned(env: Env, *args: str) -> tuple[int, list[str], str]:
    """`svcctl plan -o json --detailed-exitcode ARGS`: (exit code, the changes' addresses, stderr)."""
    res = env.run("plan", ".", "-o", "json", "--detailed-exitcode", *args)
    assert res.returncode in (0, 2), res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, sorted(c["address"] for c in doc["changes"]), res.stderr


def apply_saved(env: Env, plan_file: Path) -> Any:
    """`svcctl apply PLANFILE`, retried while another (live) apply holds a lock."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        res = env.run("apply", str(plan_file))
        if res.returncode == 1 and held_by_another_apply(res.stderr) and time.monotonic() < deadline:
            time.sleep(3)
            continue
        return res


def test_target_plans_and_applies_only_the_targets_and_a_saved_targeted_plan_only_its_own(
    lab: Lab, env: Env, tmp_path: Path
) -> None:
    pg, rd = f"instance.{env.pg()}", f"instance.{env.rd()}"
    env.write(body(env))

    # plan --target: only the target (its engine is there already, or planned with it), and the warning.
    code, changes, stderr = planned(env, "--target", pg)
    assert code == 2
    assert pg in changes and rd not in changes
    assert set(changes) <= {pg, "engine.lab-1.postgres"}
    assert WARNING in stderr
    text = env.run("plan", ".", "--no-color", "--target", pg)
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"# {pg} will be created" in text.stdout and rd not in text.stdout

    # An unknown address is an error naming it and the address it is close to; nothing is planned.
    wrong = env.run("plan", ".", "--target", pg + "x")
    assert wrong.returncode == 1
    assert f"--target {pg}x" in wrong.stderr and f"did you mean {pg}" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    # apply --target: creates only the target; the other instance is still planned afterwards.
    res = apply(env, "--target", pg)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete!" in res.stdout and WARNING in res.stderr
    code, changes, _ = planned(env)
    assert code == 2
    assert pg not in changes and rd in changes
    assert planned(env, "--target", pg)[:2] == (0, [])

    # A saved targeted plan applies exactly its targets: the binding added meanwhile stays planned, and the
    # app's manifest is not written with credentials that do not work yet.
    (env.path / "apps").mkdir()
    env.write(body(env, binding=True))
    saved = tmp_path / "rd.plan"
    res = env.run("plan", ".", "--target", rd, "--out", str(saved))
    assert res.returncode == 0, res.stdout + res.stderr
    assert rd in res.stdout and f"binding.{env.app()}" not in res.stdout
    refused = env.run("apply", str(saved), "--target", pg)
    assert refused.returncode == 1 and "--target cannot narrow the saved plan" in refused.stderr
    res = apply_saved(env, saved)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Apply complete!" in res.stdout and WARNING in res.stderr
    assert f"binding.{env.app()}.{env.pg()} not realised" in res.stdout
    assert not (env.path / "apps" / "manifest.yml").exists()
    code, changes, _ = planned(env)
    assert code == 2
    assert changes == [f"binding.{env.app()}.{env.pg()}"]
