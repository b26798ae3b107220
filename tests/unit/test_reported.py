"""What a hostile node reports never gets past the controller's schema: each case is that node's error.

The cases (tests/unit/hostile_reports/*.json) patch a document made of real recordings: the observe
output of a node running all three engines, plus a registry as svcctl writes it. Each goes through the
same path as `svcctl plan` (fetch, decode, schema, drivers, ownership) with only the SSH session faked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import reported
from svcctl.drivers.mysql.driver import parse_comment as mysql_comment
from svcctl.drivers.postgres.driver import DRIVER as POSTGRES
from svcctl.drivers.postgres.driver import SCRAM_MAX_ITERATIONS, observed_client_networks
from svcctl.drivers.postgres.driver import parse_comment as postgres_comment
from svcctl.errors import SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.types import text_problem
from svcctl.plan import observe as observe_module
from svcctl.plan.observe import NodesUnobservable, observe, parse_node
from svcctl.secrets import Secret, derive_password
from svcctl.ssh import CommandResult, SshSession
from svcctl.state import Kind

REPO = Path(__file__).resolve().parents[2]
RECORDINGS = Path(__file__).parent / "observe_recordings"
CASES_DIR = Path(__file__).parent / "hostile_reports"
CASES = sorted(p for p in CASES_DIR.glob("*.json") if not p.name.startswith("_"))
ENV = load_environment(REPO / "examples" / "lab" / "svcctl.yaml")
HOSTILE = "lab-1"


def _recording(name: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())  # type: ignore[no-any-return]


def _password_for(purpose: str) -> Secret:
    return derive_password(b"svcctl-postgres-recordings-key!!", purpose)


def base_document() -> dict[str, Any]:
    """A node with all three engines, as the observe script prints it (from the recordings)."""
    registry = json.loads((CASES_DIR / "_base_registry.json").read_text())["objects"]
    return {
        "registry": registry,
        "engines": {
            "postgres": _recording("postgres/managed_and_foreign")["raw"],
            "mysql": _recording("mysql/running_bindings")["raw"],
            "redis": _recording("redis/rotation_drift_and_foreign_objects")["raw"],
        },
    }


def _quiet_document() -> dict[str, Any]:
    return {"registry": {}, "engines": {e: _recording(f"{e}/not_installed")["raw"] for e in reported.ENGINES}}


def _patched(doc: dict[str, Any], patch: list[list[Any]]) -> dict[str, Any]:
    """Apply [op, /json/pointer, value] steps: set, append (to a list) or rename (a key)."""
    doc = copy.deepcopy(doc)
    for op, pointer, value in patch:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op == "set":
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
        elif op == "append":
            target[last].append(value)
        elif op == "rename":
            target[value] = target.pop(last)
        else:
            raise AssertionError(f"unknown patch op {op}")
    return doc


class FakeSession:
    """Stands in for an SSH session: `run` returns what the node 'printed'."""

    def __init__(self, name: str, result: CommandResult) -> None:
        self.name = name
        self.result = result

    def run(self, argv: list[str], **_: Any) -> CommandResult:
        return self.result


def _observe_printed(monkeypatch: pytest.MonkeyPatch, printed: Mapping[str, CommandResult]) -> Any:
    """`observe` the lab example's two nodes, each 'printing' what `printed` says (the rest of the path is real)."""

    def run_on_nodes(targets: Any, fn: Callable[[Any], Any], **_: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for target in targets:
            try:
                out[target.name] = fn(FakeSession(target.name, printed[target.name]))
            except SvcctlError as exc:  # as the real run_on_nodes: errors are per-node results
                out[target.name] = exc
        return out

    monkeypatch.setattr(observe_module, "run_on_nodes", run_on_nodes)
    return observe(ENV, "hostile", _password_for)


def _printed(doc: Any) -> CommandResult:
    return CommandResult(0, json.dumps(doc), "")


def _refused(monkeypatch: pytest.MonkeyPatch, hostile: CommandResult) -> str:
    """The plan's error when lab-1 prints `hostile` and lab-2 is fine: it names lab-1 only."""
    with pytest.raises(NodesUnobservable) as caught:
        _observe_printed(monkeypatch, {HOSTILE: hostile, "lab-2": _printed(_quiet_document())})
    assert sorted(caught.value.failures) == [HOSTILE]
    message = caught.value.message
    _assert_inert(message)
    return message


def _assert_inert(message: str) -> None:
    """No character in the message could act on a terminal (svcctl's own line breaks aside)."""
    assert "\x1b" not in message
    assert "Traceback" not in message
    bad = [c for c in message if c != "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"}]
    assert bad == []


def test_the_base_document_is_accepted_unchanged() -> None:
    doc = base_document()
    checked = reported.observation(HOSTILE, doc)
    assert checked.registry == doc["registry"]
    assert checked.engines == doc["engines"]


ENGINE_RECORDINGS = sorted(p for engine in reported.ENGINES for p in (RECORDINGS / engine).glob("*.json"))
"""One engine's snippet output each (releases/ holds whole documents: tests/unit/test_release_recordings.py)."""


@pytest.mark.parametrize("path", ENGINE_RECORDINGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recording_passes_the_schema_unchanged(path: Path) -> None:
    case = json.loads(path.read_text())
    assert reported.engine_report("n", path.parent.name, case["raw"]) == case["raw"]


def test_a_clean_node_observes(monkeypatch: pytest.MonkeyPatch) -> None:
    state = _observe_printed(monkeypatch, {HOSTILE: _printed(base_document()), "lab-2": _printed(_quiet_document())})
    assert state.get("instance.rec-orders") is not None


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_a_hostile_report_is_that_nodes_error(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    case = json.loads(path.read_text())
    hostile = _patched(base_document(), case["patch"])
    message = _refused(monkeypatch, _printed(hostile))
    assert f"node {HOSTILE} reported" in message
    for fragment in case["error"]:
        assert fragment in message, f"{fragment!r} missing in:\n{message}"


def test_unknown_fields_are_dropped_before_any_driver_sees_them() -> None:
    doc = base_document()
    doc["engines"]["postgres"]["clusters"][0]["roles"][0]["surprise"] = "\x1b[2J"
    doc["engines"]["teapot"] = {"brew": "{{ x }}"}
    doc["registry"]["instance.rec-orders"]["note"] = "{{ x }}"
    checked = reported.observation(HOSTILE, doc)
    assert "surprise" not in checked.engines["postgres"]["clusters"][0]["roles"][0]
    assert "teapot" not in checked.engines
    assert "note" not in checked.registry["instance.rec-orders"]


# --- sizes and depths -----------------------------------------------------------------------------------


def test_json_nested_ten_thousand_deep_is_refused_not_a_recursion_error(monkeypatch: pytest.MonkeyPatch) -> None:
    text = '{"registry": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + ', "engines": {}}'
    message = _refused(monkeypatch, CommandResult(0, text, ""))
    assert "nests deeper" in message


def test_json_a_little_too_deep_for_the_schema_is_refused() -> None:
    depth = reported.MAX_DEPTH + 1
    text = '{"engines": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    with pytest.raises(reported.InvalidReport, match="nests more than 32 deep"):
        reported.decode(HOSTILE, text)
    reported.decode(HOSTILE, '{"engines": ' + "[" * (depth - 2) + "]" * (depth - 2) + "}")


def test_depth_is_measured_without_recursion() -> None:
    deep: list[Any] = []
    for _ in range(100_000):  # far deeper than Python's recursion limit
        deep = [deep]
    assert reported.depth_exceeds(deep)
    assert not reported.depth_exceeds({"a": [{"b": []}]}, limit=4)
    assert reported.depth_exceeds({"a": [{"b": []}]}, limit=3)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"engines": {"redis": NaN}}', "NaN"),
        ('{"engines": ' + "9" * 5000 + "}", "digits"),
        ("[1, 2]", "not an object"),
        ("not json \x1b[2J", "not JSON"),
    ],
    ids=["nan", "huge-integer", "not-an-object", "garbage"],
)
def test_output_that_is_not_a_json_object_is_refused(monkeypatch: pytest.MonkeyPatch, text: str, why: str) -> None:
    assert why in _refused(monkeypatch, CommandResult(0, text, ""))


def test_a_failing_script_and_an_engine_error_are_shown_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = _refused(monkeypatch, CommandResult(1, "", "boom\x1b]0;owned\x07\nRuntimeError: {{ x }}\n"))
    assert "\\x1b]0;owned" in failed
    doc = base_document()
    doc["engines"]["redis"] = {"error": "RuntimeError: \x1b[2J" + "x" * 3000}
    broken = _refused(monkeypatch, _printed(doc))
    assert "observing redis failed on the node" in broken
    assert "\\x1b[2J" in broken
    assert len(broken) < 1500


def test_an_engine_error_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(reported.InvalidReport, match="longer than 4096"):
        reported.engine_report(HOSTILE, "redis", {"error": "x" * 5000})


class FakeChannel:
    """A channel that has output ready forever (a node that never stops talking)."""

    def __init__(self) -> None:
        self.received = 0
        self.closed = False
        self.eof_received = False

    def recv_ready(self) -> bool:
        return True

    def recv(self, n: int) -> bytes:
        self.received += n
        return b"x" * n

    def recv_stderr_ready(self) -> bool:
        return False


def test_reading_stops_at_the_output_limit() -> None:
    channel = FakeChannel()
    with pytest.raises(SshSession.OutputTooLarge):
        SshSession._collect(channel, deadline=float("inf"), max_output=1_000_000)  # type: ignore[arg-type]
    assert 1_000_000 < channel.received <= 1_000_000 + 65536


def test_the_default_limit_stops_a_node_sending_twenty_mib() -> None:
    channel = FakeChannel()
    with pytest.raises(SshSession.OutputTooLarge):
        SshSession._collect(channel, deadline=float("inf"))  # type: ignore[arg-type]
    assert SshSession.MAX_OUTPUT == 16 * 1024 * 1024
    assert channel.received < 20 * 1024 * 1024


def test_run_reports_the_limit_naming_the_node_and_closes_the_channel() -> None:
    channel = FakeChannel()
    closed: list[bool] = []

    class Transport:
        def open_session(self, timeout: float) -> Any:
            channel.settimeout = lambda t: None  # type: ignore[attr-defined]
            channel.exec_command = lambda c: None  # type: ignore[attr-defined]
            channel.sendall = lambda b: None  # type: ignore[attr-defined]
            channel.shutdown_write = lambda: None  # type: ignore[attr-defined]
            channel.close = lambda: closed.append(True)  # type: ignore[attr-defined]
            return channel

    class Target:
        name = "lab-1"

    session = SshSession(target=Target(), transport=Transport())  # type: ignore[arg-type]
    with pytest.raises(SvcctlError) as caught:
        session.run(["python3", "-"], max_output=2 * 1024 * 1024)
    assert caught.value.message.startswith("node lab-1 sent more than 2 MiB of output for python3 -;")
    assert "compromised" in caught.value.message
    assert closed == [True]


# --- verifier parameters ----------------------------------------------------------------------------------


def _pbkdf2_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the iteration count of every PBKDF2 the controller computes (none answered from its memory)."""
    from svcctl import secrets

    secrets._scram_matches.cache_clear()
    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
        calls.append(iterations)
        return real(name, password, salt, iterations, dklen)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counting)
    return calls


@pytest.mark.parametrize("iterations", [SCRAM_MAX_ITERATIONS + 1, 999_999_999, 10**12 - 1])
def test_a_huge_scram_iteration_count_is_stale_without_computing_it(
    monkeypatch: pytest.MonkeyPatch, iterations: int
) -> None:
    case = _recording("postgres/managed_and_foreign")
    raw = copy.deepcopy(case["raw"])
    role = next(r for r in raw["clusters"][0]["roles"] if r["name"] == "sv_web_rec_orders_r1")
    role["verifier"] = role["verifier"].replace("SCRAM-SHA-256$4096:", f"SCRAM-SHA-256${iterations}:")
    raw = reported.engine_report(case["node"], "postgres", raw)  # a well-formed verifier: the schema lets it by
    calls = _pbkdf2_calls(monkeypatch)
    parsed = {r.address: r for r in POSTGRES.parse(case["node"], raw, _password_for)}
    assert parsed["binding.web.rec-orders"].attrs["credentials"] == "stale"
    assert calls == [4096, 4096, 4096]  # the other three sv_ roles, at PostgreSQL's default count
    assert parsed["binding.web.rec-orders~r0"].attrs["credentials"] == "current"


def test_a_scram_count_at_the_cap_is_still_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _recording("postgres/managed_and_foreign")
    raw = copy.deepcopy(case["raw"])
    for role in raw["clusters"][0]["roles"]:
        if role["verifier"]:
            role["verifier"] = role["verifier"].replace("$4096:", f"${SCRAM_MAX_ITERATIONS}:")
    calls = _pbkdf2_calls(monkeypatch)
    POSTGRES.parse(case["node"], raw, _password_for)
    assert calls == [SCRAM_MAX_ITERATIONS] * 4


# --- parsers that used to raise on odd input ----------------------------------------------------------------


@pytest.mark.parametrize("parse", [postgres_comment, mysql_comment], ids=["postgres", "mysql"])
def test_comments_with_absurd_numbers_are_ignored_not_raised(parse: Callable[[str], Mapping[str, Any]]) -> None:
    assert parse("svcctl storage_mb=" + "9" * 5000) == {}
    assert parse("svcctl storage_mb=\u0663\u0664") == {}  # Arabic-Indic digits: isdigit() but not ASCII
    assert parse("svcctl storage_mb=512") == {"storage_mb": 512}


def test_an_hba_line_with_a_scope_id_is_no_client_network() -> None:
    cluster = {
        "settings": {"listen_addresses": "*"},
        "hba": [["host", "all", "all", "fe80::%eth0/64", "scram-sha-256"], ["host", "all", "all", "10.0.0.0/8", "md5"]],
    }
    cluster["hba_block"], cluster["hba_legacy"] = cluster["hba"], True  # svcctl's whole file, before markers
    assert observed_client_networks(cluster) == ["10.0.0.0/8"]


def test_observed_resources_hold_only_checked_values() -> None:
    """Every string that leaves the drivers passed the schema: nothing with a control character or marker."""
    checked = reported.observation(HOSTILE, base_document())
    for res in parse_node(checked, "hostile", _password_for):
        strings = [res.name, *(v for v in res.attrs.values() if isinstance(v, str))]
        strings += [s for v in res.attrs.values() if isinstance(v, list) for s in v if isinstance(s, str)]
        for value in strings:
            assert text_problem(value) is None, (res.address, value)
        assert res.kind in set(Kind)
