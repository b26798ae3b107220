"""A compromised node on the lab: its registry reports Jinja, escapes and newlines, and `svcctl plan` refuses it.

lab-1's real registry gets hostile records for this test's environment (written as root, under the registry's
lock, like svcctl's own helper writes it), and the finalizer takes exactly those records out again, so
records other environments write meanwhile survive. The plan must fail closed naming lab-1, in one message,
with no traceback, no raw ESC in anything it prints, and no command run here by a template payload.
"""

from __future__ import annotations

import json
import shlex
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


def test_apply_refuses_the_same_node_and_changes_nothing(lab: Lab, hostile_env: tuple[Env, Path, list[str]]) -> None:
    env, marker, _ = hostile_env
    res = env.run("apply", ".", "--auto-approve")
    printed = res.stdout + res.stderr
    assert res.returncode == 1, printed
    assert "node lab-1 reported the registry entry" in res.stderr
    assert "Traceback" not in printed and "\x1b" not in printed
    assert not marker.exists()
    assert "svcctl-apply" not in lab.ssh(HOST, "sudo -n cat /var/lib/svcctl/apply.lock 2>/dev/null; true").stdout


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("attrs", "says"),
    [
        ({"engine": "postgres", "deep": nested(200)}, "nests more than 32 deep"),
        ({"engine": "postgres", "huge": "x" * (17 * 1024 * 1024)}, "sent more than 16 MiB of output"),
    ],
    ids=["nested-json", "oversized-output"],
)
def test_plan_refuses_deep_or_oversized_reports(
    lab: Lab, tmp_path: Path, unique: str, attrs: dict[str, object], says: str
) -> None:
    env = make_env(tmp_path, unique)
    env.write(f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n")
    address = f"instance.h{unique}"
    edit_registry(lab, {address: {"attrs": attrs, "environment": env.name}}, [])
    try:
        res = env.run("plan", ".", "-o", "json", timeout=300)
    finally:
        restored = edit_registry(lab, {}, [address])
    assert address in restored["objects"]  # type: ignore[operator]
    assert res.returncode == 1, res.stdout + res.stderr
    assert "could not observe lab-1:" in res.stderr and says in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""  # no plan document on partial information


def psql(lab: Lab, sql: str) -> str:
    return lab.ssh(HOST, f"sudo -n runuser -u postgres -- psql -XAtc {shlex.quote(sql)}").stdout.strip()


def test_a_huge_scram_iteration_count_is_stale_without_being_computed(lab: Lab, tmp_path: Path, unique: str) -> None:
    """A role whose verifier asks for 999,999,999 PBKDF2 rounds (about 5 minutes here) would stall every plan.

    The plan must finish within its timeout, far below those minutes, and call the verifier stale.
    """
    env = make_env(tmp_path, unique)
    env.write(
        f"instances:\n  {env.pg()}: {{plan: pg-small, node: lab-1}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        f"bindings:\n  - {{app: {env.app()}, instance: {env.pg()}}}\n"
    )
    user = f"sv_{env.app()}_{env.pg()}_r0"
    key = "A" * 43 + "="
    verifier = f"SCRAM-SHA-256$999999999:c2FsdHNhbHRzYWx0${key}:{key}"
    was_running = lab.ssh(HOST, "systemctl is-active postgresql@15-main", check=False).stdout.strip() == "active"
    if not was_running:
        lab.ssh(HOST, "sudo -n systemctl start postgresql@15-main")
    # written into the catalogue directly: CREATE ROLE ... PASSWORD would itself spend those minutes
    psql(lab, f"CREATE ROLE {user} LOGIN; UPDATE pg_authid SET rolpassword = '{verifier}' WHERE rolname = '{user}'")
    try:
        res = env.run("plan", ".", "-o", "json", timeout=120)
    finally:
        psql(lab, f"DROP ROLE {user}")
        if not was_running:
            lab.ssh(HOST, "sudo -n systemctl stop postgresql@15-main")
    # The plan finished: the role was observed and its verifier judged (without the PBKDF2 rounds), and as
    # svcctl did not record it, it blocks the declared binding instead of being taken over.
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert "Traceback" not in res.stderr
    blocked = f"binding.{env.app()}.{env.pg()} exists on lab-1 but svcctl did not create it"
    assert [e for e in doc["errors"] if e.startswith(blocked)], doc["errors"]
