"""Loader tests: one case per folder under loader_cases/, plus paths, lookups and fuzzing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from svcctl.errors import InvalidEnvironment, SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.placement import PlacementError, place
from svcctl.model.spec import Environment, Location

CASES = Path(__file__).parent / "loader_cases"


CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASE_NAMES)
def test_loader_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case folder holds YAML input and expected.txt: exactly what `svcctl validate` reports, or nothing.

    Load problems are `file:line:column: message` lines; an environment that loads but cannot be placed
    gives the placement error's lines (which start with the instance's file:line:column).
    """
    folder = CASES / case
    expected = (folder / "expected.txt").read_text().splitlines()
    monkeypatch.chdir(folder)
    try:
        env = load_environment(Path("."))
        place(env, {})
    except InvalidEnvironment as exc:
        assert [str(p) for p in exc.problems] == expected
        assert exc.message.endswith(
            f"{len(expected)} problem{'s' if len(expected) != 1 else ''} found; nothing was changed."
        )
    except PlacementError as exc:
        assert exc.message.splitlines() == expected
    else:
        assert expected == [], "loaded and placed fine, but problems were expected"


def test_cases_cover_at_least_40_mistakes() -> None:
    """The issue asks for 40 distinct mistakes as data; each folder but the valid-* ones is one mistake."""
    mistakes = [name for name in CASE_NAMES if not name.startswith("valid-")]
    assert len(mistakes) >= 40
    for name in CASE_NAMES:
        expected = (CASES / name / "expected.txt").read_text()
        assert (expected == "") == name.startswith("valid-"), f"{name}: only valid-* cases expect no problems"
        assert expected == "" or expected.endswith("\n"), f"{name}: expected.txt must end with a newline"


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VALID = """\
nodes:
  db-1:
    host: db-1
    identity_file: keys/id_ed25519
    ssh_config: ~/ssh/config
    known_hosts: /etc/ssh/known
    engines: [postgres, redis]
services:
  pg: {engine: postgres, versions: ["9.6", "15", "10"]}
  redis: {engine: redis, versions: ["7"]}
plans:
  pg-small: {service: pg, storage_mb: 512}
  cache-64: {service: redis, memory_mb: 64}
instances:
  orders-db: {plan: pg-small}
  old-db: {plan: pg-small, version: "9.6"}
  sessions: {plan: cache-64}
apps:
  web: {manifest: apps/web.yml}
bindings:
  - {app: web, instance: orders-db}
  - app: web
    instance: sessions
    role: readonly
environment: prod
"""


def test_paths_resolve_relative_to_the_declaring_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _write(tmp_path / "env", "svcctl.yaml", VALID)
    env = load_environment(tmp_path / "env")
    node = env.nodes["db-1"]
    assert node.identity_file == str(tmp_path / "env" / "keys" / "id_ed25519")
    assert node.ssh_config == str(tmp_path / "home" / "ssh" / "config")
    assert node.known_hosts == "/etc/ssh/known"
    assert env.apps["web"].manifest == str(tmp_path / "env" / "apps" / "web.yml")


def test_lookups_follow_plan_and_service(tmp_path: Path) -> None:
    env = load_environment(_write(tmp_path, "env.yml", VALID))
    assert env.engine_of("sessions") == "redis"
    assert env.plan_of("orders-db").storage_mb == 512
    assert env.service_of("orders-db").versions == ["9.6", "15", "10"]
    assert env.version_of("orders-db") == "15"  # numeric, not string order ("9.6" > "15" as text)
    assert env.version_of("old-db") == "9.6"
    assert [b.name for b in env.bindings_of_instance("sessions")] == ["web-sessions"]
    assert env.bindings_of_instance("old-db") == []


def test_locations_are_kept_out_of_the_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = load_environment(_write(tmp_path, "env.yml", VALID))
    assert env.location("node.db-1") == Location("env.yml", 2, 3)
    assert env.location("instance.old-db") == Location("env.yml", 16, 3)
    assert env.location("instance.old-db.version") == Location("env.yml", 16, 37)
    assert env.location("binding.web.sessions") == Location("env.yml", 22, 5)
    assert env.location("binding.web.sessions.role") == Location("env.yml", 24, 11)
    assert env.location("app.nope") is None
    assert "_locations" not in env.model_dump()


def test_files_outside_the_cwd_are_shown_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "env", "bad.yaml", "nodes: 3\nenvironment: prod\n")
    monkeypatch.chdir(CASES)
    with pytest.raises(InvalidEnvironment) as caught:
        load_environment(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:1:8: nodes must be a mapping from names to entries, found the value 3"
    ]


def test_missing_path_and_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SvcctlError, match=r"^nope: no such file or directory\.$"):
        load_environment(Path("nope"))
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", "notes.txt", "nodes: {}\n")
    with pytest.raises(SvcctlError, match=r"^empty: no \*\.yaml or \*\.yml files in this directory\.$"):
        load_environment(Path("empty"))


def test_directory_load_is_not_recursive(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", VALID)
    _write(tmp_path / "sub", "b.yaml", "nodes: [broken]\nenvironment: other\n")
    assert len(load_environment(tmp_path).instances) == 3


def test_an_alias_bomb_is_refused_at_its_anchors_without_being_expanded(tmp_path: Path) -> None:
    """Each anchor is reported once, where it is: the loader visits each composed node once, never per alias.

    A loader that followed the aliases would report &l0 10**4 times in this five-level bomb (and would never
    finish a thirty-level one): the count, not a stopwatch, is what shows that nothing was expanded.
    """
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 5):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    path = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    with pytest.raises(InvalidEnvironment) as caught:
        load_environment(path)
    assert [(p.line, p.column, p.message.split(" is not supported")[0]) for p in caught.value.problems] == [
        (level + 1, 5, f"anchor &l{level}") for level in range(5)
    ]


def test_the_name_is_the_declared_one_however_the_path_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Directory, file, relative or absolute, a symlink or a copy elsewhere: the environment is `prod` each time."""
    env_dir = tmp_path / "checkouts" / "a" / "envs" / "staging-copy"
    _write(env_dir, "svcctl.yaml", VALID)
    (tmp_path / "link").symlink_to(env_dir)
    copy = tmp_path / "elsewhere" / "svcctl"
    _write(copy, "main.yml", VALID)
    monkeypatch.chdir(env_dir.parent)
    paths = [env_dir, env_dir / "svcctl.yaml", Path("staging-copy"), Path("staging-copy/svcctl.yaml"),
             tmp_path / "link", copy / "main.yml", copy]  # fmt: skip
    assert {load_environment(path).name for path in paths} == {"prod"}
    monkeypatch.chdir(env_dir)
    env = load_environment(Path())
    assert (env.name, env.environment) == ("prod", "prod")
    assert env.location("environment") == Location("svcctl.yaml", 25, 14)


def test_the_name_may_be_declared_in_any_one_of_the_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", VALID.replace("environment: prod\n", ""))
    _write(tmp_path, "z.yaml", "# the name, once for all files\nenvironment: prod-eu.1_b\n")
    assert load_environment(tmp_path).name == "prod-eu.1_b"


def test_an_environment_without_a_name_has_none_to_give() -> None:
    with pytest.raises(SvcctlError, match=r'add a top-level "environment: NAME"'):
        _ = Environment().name


def test_a_file_that_cannot_be_read_may_hold_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken file is reported as broken, not also as an environment with no name: it may declare one."""
    _write(tmp_path, "a.yaml", VALID.replace("environment: prod\n", ""))
    _write(tmp_path, "b.yaml", "environment: [prod\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidEnvironment) as caught:
        load_environment(Path())
    assert [p.file for p in caught.value.problems] == ["b.yaml"]


def test_deep_nesting_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = _write(tmp_path, "deep.yaml", "nodes: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InvalidEnvironment):
        load_environment(path)


# -- fuzzing: whatever the input, an Environment or InvalidEnvironment, nothing else ----------------------


def _load_bytes(data: bytes) -> Environment | InvalidEnvironment:
    """Load `data` as svcctl.yaml: the Environment, or the InvalidEnvironment raised (checked: located problems).

    Any other exception propagates and fails the test; the caller can tell which of the two outcomes it got.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "svcctl.yaml"
        path.write_bytes(data)
        try:
            env = load_environment(path)
        except InvalidEnvironment as exc:
            assert exc.problems
            for problem in exc.problems:
                assert problem.line >= 0 and problem.column >= 0 and problem.message
            return exc
    assert isinstance(env, Environment)
    return env


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    _load_bytes(data)


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("nodes:services- []{}&*!|>#'\"\t\n  ,?x1.~")), max_size=200))
def test_random_yaml_punctuation_never_crashes(text: str) -> None:
    _load_bytes(text.encode())


_KEYS = [
    "environment", "nodes", "services", "plans", "instances", "apps", "bindings", "host", "user", "port", "engines",
    "labels", "capacity", "memory_mb", "storage_mb", "client_networks", "engine", "versions", "service",
    "connections", "eviction", "plan", "version", "node", "placement", "protect", "manifest", "format",
    "name", "app", "instance", "role", "rotation", "db-1", "pg", "pg-small", "orders-db", "web",
]  # fmt: skip
_SCALARS = st.one_of(
    st.sampled_from(["postgres", "mysql", "redis", "15", "10.11", "db-1", "pg", "pg-small", "web", "a"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.text(max_size=8),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(_KEYS[:9]), _DOCUMENTS, max_size=6))
def test_random_documents_never_crash(document: dict[str, object]) -> None:
    yaml = YAML()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "doc.yaml"
        with path.open("w") as stream:
            yaml.dump(document, stream)
        _load_bytes(path.read_bytes())


def test_fuzz_helper_really_loads_valid_input() -> None:
    """Guard the fuzz tests: the helper loads a valid document as such, and reports an invalid one as such."""
    loaded = _load_bytes(VALID.encode())
    assert isinstance(loaded, Environment), loaded
    assert sorted(loaded.instances) == ["old-db", "orders-db", "sessions"]
    refused = _load_bytes(b"nodes: [broken]\nenvironment: prod\n")
    assert isinstance(refused, InvalidEnvironment)
    assert [(Path(p.file).name, p.line) for p in refused.problems] == [("svcctl.yaml", 1)]
