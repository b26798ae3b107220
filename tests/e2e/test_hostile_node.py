"""A compromised node on the lab: its registry reports Jinja, escapes and newlines, and `svcctl plan` refuses it.

lab-1's real registry gets hostile records for this test's environment (written as root, under the registry's
lock, like svcctl's own helper writes it), and the finalizer takes exactly those records out again, so
records other environments write meanwhile survive. The plan must fail closed naming lab-1, in one message,
with no traceback, no raw ESC in anything it prints, and no command run here by a template payload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Lab
from tests.e2e.envs import Env, make_env

HOST = "lab-1"

EDIT = r"""
import fcntl, json, os, sys, tempfile
PATH, LOCK = "/var/lib/svcctl/registry.json", "/var/lib/svcctl/.registry.lock"
add, remove = json.loads(%(request)r)
os.makedirs(os.path.dirname(PATH), mode=0o700, exist_ok=True)
with open(LOCK, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with open(PATH) as f:
            doc = json.load(f)
    except FileNotFoundError:
        doc = {"format": 1, "objects": {}}
    print(json.dumps(doc))
    doc["objects"].update(add)
    for address in remove:
        doc["objects"].pop(address, None)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(PATH), prefix=".registry.")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, PATH)
"""


def edit_registry(lab: Lab, add: dict[str, object], remove: list[str]) -> dict[str, object]:
    """Add and remove records of lab-1's registry under its lock; the registry as it was before."""
    res = lab.ssh(HOST, "sudo -n python3 -", stdin=EDIT % {"request": json.dumps([add, remove])})
    return json.loads(res.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def hostile_env(lab: Lab, tmp_path: Path, unique: str) -> Iterator[tuple[Env, Path, list[str]]]:
    env = make_env(tmp_path, unique)
    env.write(f"instances:\n  {env.pg()}: {{plan: pg-small, placement: {{labels: {{zone: a}}}}}}\n")
    marker = Path(f"/tmp/svcctl-hostile-{unique}")
    payload = f'{{{{ lookup("pipe", "touch {marker}") }}}}'
    records: dict[str, object] = {
        f"instance.{env.pg()}": {
            "applied_at": "2026-01-01T00:00:00+00:00",
            "attrs": {"engine": "postgres", "database": "x\n\x1b[2Jowned", "owner": payload, "storage_mb": 512},
            "environment": env.name,
        },
        f"instance.h{unique}": {
            "applied_at": "2026-01-01T00:00:00+00:00",
            "attrs": {"engine": "redis", "eviction": payload, "bind": ["127.0.0.1\x1b]0;pwned\x07"]},
            "environment": env.name,
        },
        f"binding.h{unique}.{env.pg()}": {
            "attrs": {"engine": "postgres", "user": "sv_x\nhost all all all trust", "rotation": 0},
            "environment": payload,
        },
    }
    before = edit_registry(lab, records, [])
    assert isinstance(before, dict) and "objects" in before
    try:
        yield env, marker, list(records)
    finally:
        after = edit_registry(lab, {}, list(records))
        assert set(records) <= set(after["objects"])  # type: ignore[arg-type]
        restored = edit_registry(lab, {}, [])
        assert not set(records) & set(restored["objects"])  # type: ignore[arg-type]
        marker.unlink(missing_ok=True)


def test_plan_refuses_a_node_whose_registry_is_hostile(hostile_env: tuple[Env, Path, list[str]]) -> None:
    env, marker, _ = hostile_env
    for output in ("text", "json", "markdown"):
        res = env.run("plan", ".", "-o", output, "--no-color")
        printed = res.stdout + res.stderr
        assert res.returncode == 1, printed
        assert "Traceback" not in printed
        assert "\x1b" not in printed and "\x07" not in printed
        assert "could not observe lab-1:" in res.stderr  # lab-1 alone: lab-2 is observed as usual
        assert "node lab-1 reported the registry entry" in res.stderr
        assert not marker.exists()
