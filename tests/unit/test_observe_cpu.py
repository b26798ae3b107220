"""What keeps a node's CPU per observe down (#15), run here: the kept compiled code, observe's cache of dpkg's and
apt's answers, and one client process for two rounds of questions.

Each keeps what observe reports unchanged; these tests prove the mechanisms (a kept answer is used only while
what it was read from is unchanged, and only from root's own files), the lab proves the documents
(benchmarks/observe.py compares them whole, before and after, on a node with every engine).
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.hostprograms import cached_program, engine_part, script_source

PROGRAM = "print('ran', 'main' if __name__ == '__main__' else __name__)\n"


@pytest.fixture
def header(tmp_path: Path) -> dict[str, Any]:
    """observe's header as a namespace, its cache in a temporary directory (never this machine's)."""
    namespace: dict[str, Any] = {"__name__": "observe_header"}
    exec(script_source("observe_header.py"), namespace)
    namespace["CACHE_DIR"] = str(tmp_path / "cache")
    return namespace


def _run(program: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-"], input=program, capture_output=True, text=True, cwd=cwd, check=False
    )


# --- the kept compiled code ------------------------------------------------------------------------------------


def test_the_loader_runs_the_program_as_main_and_keeps_its_code_owner_only(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _run(cached_program(PROGRAM, "observe", str(cache)), tmp_path)
    assert (first.returncode, first.stdout, first.stderr) == (0, "ran main\n", "")
    (kept,) = cache.iterdir()
    assert kept.name == f"observe.{sys.implementation.cache_tag}.code"
    assert kept.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    assert marshal.loads(kept.read_bytes())[0] == PROGRAM
    again = _run(cached_program(PROGRAM, "observe", str(cache)), tmp_path)
    assert again.stdout == "ran main\n"


def _plant(cache: Path, source: str, runs: str, mode: int = 0o600) -> Path:
    """A kept entry claiming `source` whose code is that of `runs`."""
    cache.mkdir(mode=0o700, exist_ok=True)
    path = cache / f"observe.{sys.implementation.cache_tag}.code"
    path.write_bytes(marshal.dumps((source, compile(runs, "<stdin>", "exec"))))
    path.chmod(mode)
    return path


def test_a_kept_code_is_used_only_for_the_same_source(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _plant(cache, PROGRAM, "print('kept')\n")
    assert _run(cached_program(PROGRAM, "observe", str(cache)), tmp_path).stdout == "kept\n"  # it is used
    changed = PROGRAM + "# another version\n"
    assert _run(cached_program(changed, "observe", str(cache)), tmp_path).stdout == "ran main\n"
    assert marshal.loads((cache / f"observe.{sys.implementation.cache_tag}.code").read_bytes())[0] == changed


@pytest.mark.parametrize("how", ["file others may write", "directory others may write", "file is a link", "garbage"])
def test_a_kept_code_that_is_not_the_users_own_alone_is_not_trusted(tmp_path: Path, how: str) -> None:
    cache = tmp_path / "cache"
    path = _plant(cache, PROGRAM, "print('planted')\n", mode=0o622 if how == "file others may write" else 0o600)
    if how == "directory others may write":
        cache.chmod(0o777)
    elif how == "file is a link":
        elsewhere = tmp_path / "elsewhere"
        path.rename(elsewhere)
        path.symlink_to(elsewhere)
    elif how == "garbage":
        path.write_bytes(b"\x00not marshal")
    res = _run(cached_program(PROGRAM, "observe", str(cache)), tmp_path)
    assert (res.returncode, res.stdout) == (0, "ran main\n")


def test_without_a_place_to_keep_code_the_program_still_runs(tmp_path: Path) -> None:
    res = _run(cached_program(PROGRAM, "observe", str(tmp_path / "missing" / "cache")), tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, "ran main\n", "")
    assert not (tmp_path / "missing").exists()


def test_the_loader_is_python_3_9() -> None:
    import ast

    ast.parse(cached_program(PROGRAM, "observe"), feature_version=(3, 9))


# --- observe's cache -----------------------------------------------------------------------------------------


def test_a_kept_answer_is_read_back_for_its_key_only(header: dict[str, Any]) -> None:
    header["cache_write"]("x.json", ["k", 1], {"a": "1"})
    assert header["cache_read"]("x.json", ["k", 1]) == {"a": "1"}
    assert header["cache_read"]("x.json", ["k", 2]) is None
    path = Path(header["CACHE_DIR"]) / "x.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("how", ["file others may read", "directory others may write", "file is a link", "garbage"])
def test_a_kept_answer_that_is_not_roots_own_alone_is_a_miss(header: dict[str, Any], how: str) -> None:
    header["cache_write"]("x.json", ["k"], {"a": "1"})
    path = Path(header["CACHE_DIR"]) / "x.json"
    if how == "file others may read":
        path.chmod(0o644)
    elif how == "directory others may write":
        path.parent.chmod(0o733)
    elif how == "file is a link":
        target = path.parent / "target.json"
        path.rename(target)
        path.symlink_to(target)
    else:
        path.write_text('{"key": ["k"], "value": ')
    assert header["cache_read"]("x.json", ["k"]) is None


def test_cached_asks_once_per_key_keeps_no_failure_and_checks_what_it_reads(header: dict[str, Any]) -> None:
    calls: list[int] = []

    def compute() -> dict[str, str] | None:
        calls.append(1)
        return {"p": "1"} if len(calls) != 2 else None

    def valid(value: Any) -> bool:
        return isinstance(value, dict)

    cached = header["cached"]
    assert cached("y.json", ["a"], compute, valid) == {"p": "1"} and len(calls) == 1
    assert cached("y.json", ["a"], compute, valid) == {"p": "1"} and len(calls) == 1  # kept
    assert cached("y.json", ["b"], compute, valid) is None and len(calls) == 2  # another key: asked; None: not kept
    assert cached("y.json", ["a"], compute, valid) == {"p": "1"} and len(calls) == 2
    assert cached("y.json", ["a"], compute, lambda v: False) == {"p": "1"} and len(calls) == 3  # fails the check


def test_file_stamps_change_with_any_file_they_cover(tmp_path: Path, header: dict[str, Any]) -> None:
    stamps = header["file_stamps"]
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a_Packages").write_text("one")
    (tmp_path / "status").write_text("s")
    key = stamps([str(tmp_path / "status"), str(tmp_path / "none")], [str(tmp_path / "lists")])
    assert key == stamps([str(tmp_path / "status"), str(tmp_path / "none")], [str(tmp_path / "lists")])
    assert [str(tmp_path / "none"), None] in key
    for change in (
        lambda: (tmp_path / "lists" / "b_Packages").write_text("two"),  # a list added
        lambda: (tmp_path / "lists" / "a_Packages").write_text("ONE"),  # one rewritten in place, same size
        lambda: os.replace(tmp_path / "new", tmp_path / "status"),  # the status file replaced
    ):
        (tmp_path / "new").write_text("s")
        before = stamps([str(tmp_path / "status")], [str(tmp_path / "lists")])
        os.utime(tmp_path / "new", ns=(1, 1))
        change()
        assert stamps([str(tmp_path / "status")], [str(tmp_path / "lists")]) != before


def test_installed_packages_asks_dpkg_again_only_when_its_database_changes(
    header: dict[str, Any], tmp_path: Path
) -> None:
    db = tmp_path / "dpkg"
    (db / "updates").mkdir(parents=True)
    (db / "status").write_text("Package: x\n")
    header["DPKG_DB"] = str(db)
    calls: list[list[str]] = []

    def sh(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, "redis-server\tinstall ok installed\t5:7.0\nold\tdeinstall ok config-files\t1\n", ""

    header["sh"] = sh
    for expected_calls in (1, 1):
        header["_DPKG"] = None  # a new run of the script
        assert header["installed_packages"]() == {"redis-server": "5:7.0"}
        assert len(calls) == expected_calls
    (db / "updates" / "0001").write_text("Package: y\n")  # dpkg's journal: an install under way
    header["_DPKG"] = None
    assert header["installed_packages"]() == {"redis-server": "5:7.0"} and len(calls) == 2


def test_a_failed_dpkg_query_is_no_packages_and_not_kept(header: dict[str, Any], tmp_path: Path) -> None:
    header["DPKG_DB"] = str(tmp_path)
    header["sh"] = lambda argv: (2, "", "dpkg-query: error")
    assert header["installed_packages"]() == {}
    assert not Path(header["CACHE_DIR"]).exists()


def test_the_release_fragment_keeps_apts_answer_until_a_list_changes(header: dict[str, Any], tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "observe_release"}
    exec(script_source("observe_release.py"), namespace)
    namespace.update({name: header[name] for name in ("cached", "dpkg_stamps", "file_stamps")})  # the test's cache
    lists = tmp_path / "lists"
    lists.mkdir()
    namespace["_RELEASE_APT_TREES"] = (str(lists),)
    header["DPKG_DB"] = str(tmp_path / "dpkg")
    calls: list[list[str]] = []

    def sh(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, "redis-server:\n  Installed: (none)\n  Candidate: 5:7.0\n", ""

    namespace["sh"] = sh
    want = {"redis-server": {"installed": None, "candidate": "5:7.0"}}
    assert namespace["_release_packages"]() == want and namespace["_release_packages"]() == want
    assert len(calls) == 1
    (lists / "x_Packages").write_text("new")
    assert namespace["_release_packages"]() == want and len(calls) == 2


# --- one client for two rounds ---------------------------------------------------------------------------------

ECHO = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"


def test_converse_answers_the_first_round_before_the_second_is_sent(header: dict[str, Any]) -> None:
    seen: list[str] = []

    def then(text: str) -> str:
        seen.append(text)
        return "second\n"

    rc, first, second, err = header["converse"]([sys.executable, "-c", ECHO], "one\nmark\n", "MARK", then)
    assert (rc, first, second, err, seen) == (0, "ONE\n", "SECOND\n", "", ["ONE\n"])


def test_converse_when_the_client_stops_before_the_marker(header: dict[str, Any]) -> None:
    def then(text: str) -> str:
        raise AssertionError("not asked")

    argv = [sys.executable, "-c", "import sys; print('partial'); sys.exit('refused')"]
    rc, first, second, err = header["converse"](argv, "one\n", "MARK", then)
    assert (rc, first, second, err) == (1, "partial\n", "", "refused\n")


def test_converse_timeout_and_missing_program(header: dict[str, Any]) -> None:
    stuck = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert header["converse"](stuck, "", "MARK", str, timeout=0.5)[0] == 124
    assert header["converse"](["/nonexistent/client"], "", "MARK", str)[0] == 127


def test_a_failure_while_reading_the_first_answer_stops_the_client(header: dict[str, Any]) -> None:
    def then(text: str) -> str:
        raise ValueError("bad answer")

    with pytest.raises(ValueError, match="bad answer"):
        header["converse"]([sys.executable, "-c", ECHO], "mark\n", "MARK", then, timeout=10)


# --- the engines' two rounds -----------------------------------------------------------------------------------


def test_mysql_asks_grants_for_svcctls_users_of_the_first_answer_in_its_order() -> None:
    namespace: dict[str, Any] = {"__name__": "observe_snippet"}
    exec(script_source("observe_header.py") + "\n" + engine_part("mysql", "observe")[1], namespace)
    rows = [["server", "10.11", "3306", "*"], ["user", "sv_b", "%", "p", "*X", "5"], ["user", "root", "localhost"]]
    rows.append(["user", "sv_a'x", "10.%", "p", "*Y", "0"])
    assert namespace["_mysql_grants_sql"](rows) == (
        "SELECT 'user', 0; SHOW GRANTS FOR 'sv_b'@'%';SELECT 'user', 1; SHOW GRANTS FOR 'sv_a\\'x'@'10.%';\n"
    )
    assert namespace["_mysql_grants_sql"](rows[:1]) == ""


def test_postgres_grants_read_from_the_first_psql_then_again_for_a_database_gone_meanwhile() -> None:
    namespace: dict[str, Any] = {"__name__": "observe_snippet"}
    exec(script_source("observe_header.py") + "\n" + engine_part("postgres", "observe")[1], namespace)
    asked: list[str] = []

    def sh(argv: list[str], input: str, user: str, timeout: float) -> tuple[int, str, str]:
        asked.append(input)
        return 0, '@@svcctl 0\n{"public_acl": null}\n', ""

    namespace["sh"] = sh
    first = (3, '@@svcctl 0\n{"public_acl": ["a"]}\n@@svcctl 1\n', 'psql: error: FATAL:  database "b" does not exist')
    found = namespace["_pg_all_grants"](["a", "b", "c"], 5432, "psql", first=first)
    assert found == {"a": {"public_acl": ["a"]}, "b": {"vanished": True}, "c": {"public_acl": None}}
    assert len(asked) == 1 and "dbname=''c''" in asked[0] and "dbname=''a''" not in asked[0]
