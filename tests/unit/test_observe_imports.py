"""What observe no longer imports or compiles on a node (#15), and that each replacement answers as the module it
replaces: shlex.split for Redis's files, glob for its config files, `ss -ltnp` for its listeners, re for three
patterns of PostgreSQL's files, and typing's annotation-only names.
"""

from __future__ import annotations

import ast
import glob
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from svcctl.drivers import observe_script
from svcctl.drivers.hostprograms import bundle
from svcctl.drivers.postgres import observe as pg
from svcctl.drivers.redis import observe as rd

NOT_IMPORTED = {"typing", "shlex", "glob", "fnmatch", "ipaddress", "base64", "hashlib", "hmac", "tempfile"}


def test_the_observe_script_imports_none_of_the_modules_it_does_without_at_its_top() -> None:
    tree = ast.parse(observe_script())
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & NOT_IMPORTED == set()
    assert "Any = IO = object" in observe_script()


def test_a_part_importing_typings_annotation_names_gets_object_and_any_other_typing_import_stays() -> None:
    stubbed = bundle([], [("a", "from typing import Any\n\nAlias = dict[str, Any]\n")])
    assert "import typing" not in stubbed and "from typing" not in stubbed and "Any = object" in stubbed
    namespace: dict[str, object] = {}
    exec(stubbed, namespace)
    assert namespace["Alias"] == dict[str, object]
    kept = bundle([], [("a", "from typing import Any, cast\n")])
    assert "from typing import Any, cast" in kept and "= object" not in kept


def _lines(seed: int, count: int) -> list[str]:
    alphabet = ["a", "b", "Z", "0", "#", "~", "*", "&", "+", "@", ">", "é", "中", " ", " ", "\t", "\r", "'", '"']
    alphabet += ["\\", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2003", "-", "="]
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(count)]


FIXED = ['logfile ""', "user sv_a on #ab ~* &* +@all", "dir '/var/lib/redis/a b'", 'x "a\\"b" \'c\\d\' e\\ f',
         '"unclosed', "trailing\\", '"in\\', "a\\\tb", '""', "''  ''", "a''b", 'k "a\\x"']  # fmt: skip


def _split(split: object, line: str) -> list[str] | str:
    try:
        return split(line)  # type: ignore[operator,no-any-return]
    except ValueError as exc:
        return f"ValueError: {exc}"


def test_redis_words_split_as_shlex_does() -> None:
    lines = FIXED + _lines(1, 20000)
    wrong = [ln for ln in lines if _split(rd._redis_shlex_split, ln) != _split(shlex.split, ln)]
    assert wrong == []
    assert any(isinstance(_split(shlex.split, ln), str) for ln in lines)  # the corpus has shlex's errors too


def test_redis_config_files_are_those_glob_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("redis-a.conf", "redis-.conf", "redis-b.conf.bak", "xredis-c.conf", "redis-d.conf", ".redis-e.conf"):
        (tmp_path / name).write_text("")
    (tmp_path / "redis-dir.conf").mkdir()
    (tmp_path / "redis-gone.conf").symlink_to(tmp_path / "nowhere")
    monkeypatch.setattr(rd, "_REDIS_CONF_DIR", str(tmp_path))
    paths, names = rd._redis_confs()
    assert paths == sorted(glob.glob(f"{tmp_path}/redis-*.conf"))
    assert names == [p[len(f"{tmp_path}/redis-") : -len(".conf")] for p in paths]
    monkeypatch.setattr(rd, "_REDIS_CONF_DIR", str(tmp_path / "missing"))
    assert rd._redis_confs() == ([], [])


def test_redis_addresses_are_printed_as_ss_prints_them() -> None:
    def proc_hex(raw: bytes) -> str:
        return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)).hex().upper()

    for text in ("127.0.0.1", "0.0.0.0", "10.2.30.255"):
        assert rd._redis_address(proc_hex(socket.inet_pton(socket.AF_INET, text))) == text
    for text in ("::1", "::", "fe80::1:2", "2001:db8::", "::ffff:127.0.0.1", "1:0:0:2:0:0:0:3"):
        raw = socket.inet_pton(socket.AF_INET6, text)
        assert rd._redis_address(proc_hex(raw)) == f"[{socket.inet_ntop(socket.AF_INET6, raw)}]"


LISTENER = """
import socket, sys, time
held = []
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as Redis's anet.c does for every IPv6 socket
    s.bind((host, 0))
    s.listen()
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(shutil.which("ss") is None or os.geteuid() != 0, reason="needs ss and root (ss -p)")
def test_redis_listeners_are_those_ss_ltnp_names_for_redis_server(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"  # a process named redis-server (its comm), listening on IPv4 and IPv6
    shutil.copy(sys.executable, fake)
    proc = subprocess.Popen(
        [fake, "-I", "-S", "-c", LISTENER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        rd.tcp_sockets.__globals__["_PROC_NET"].clear()  # read afresh, as each run of the script does
        got = rd._redis_listen()
        out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
        want = sorted({ln.split()[3] for ln in out.splitlines() if '"redis-server"' in ln and len(ln.split()) > 3})
        assert got == want and len(got) >= 2
    finally:
        proc.kill()
        proc.wait()
        rd.tcp_sockets.__globals__["_PROC_NET"].clear()


@pytest.mark.parametrize("text", ["", "plain", "a\\'b", "\\\\\\", "x\\", "\\n\\t", "a\\\nb", "\\é", "''\\''"])
def test_postgres_string_values_unescape_as_re_sub_did(text: str) -> None:
    assert pg._pg_unescape(text) == re.sub(r"\\(.)", r"\1", text)


@pytest.mark.parametrize("name", ["15", "9.6", "10.", ".1", "1.2.3", "", "a1", "١٥", "²", "15 ", "16.0", "x.y"])
def test_postgres_version_directories_are_those_the_pattern_took(name: str) -> None:
    assert pg._pg_version_name(name) == (re.fullmatch(r"\d+(\.\d+)?", name) is not None)
