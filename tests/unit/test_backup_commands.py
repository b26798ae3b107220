"""svcctl backups: the node's list checked field by field, the choice of a backup, and the pull's checksum."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from svcctl.errors import SvcctlError
from svcctl.tunnel.backups import BackupEntry, BadChecksum, checked_digest, choose, copy_into, parse_list

DATA = b"PGDMP fake dump\x00\x01" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def ok(ident: str, ext: str = "dump", **extra: Any) -> dict[str, Any]:
    return {"id": ident, "result": "ok", "file": f"{ident}.{ext}", "size": len(DATA), "sha256": SHA,
            "started_at": "2026-12-01T03:00:00+00:00", "finished_at": "2026-12-01T03:00:02+00:00", **extra}  # fmt: skip


def listed(*items: dict[str, Any], engine: str = "postgres") -> list[BackupEntry]:
    return parse_list("lab-1", "orders-db", engine, json.dumps({"backups": list(items), "configured": True}))


def test_the_list_is_sorted_and_keeps_failures_with_their_error() -> None:
    entries = listed(ok("20261201T030000Z"), {"id": "20261130T030000Z", "result": "failed", "error": "pg_dump: x"})
    assert [(e.id, e.result) for e in entries] == [("20261130T030000Z", "failed"), ("20261201T030000Z", "ok")]
    assert entries[0].error == "pg_dump: x" and entries[1].sha256 == SHA and entries[1].size == len(DATA)


@pytest.mark.parametrize(
    "item",
    [
        ok("../../etc/passwd"),
        ok("20261201T030000Z", file="../../etc/shadow"),
        ok("20261201T030000Z", ext="sql"),  # not a postgres dump's name
        ok("20261201T030000Z", sha256="abc"),
        ok("20261201T030000Z", size=-1),
        ok("20261201T030000Z", size="12"),
        ok("20261201T030000Z", started_at="yesterday\n"),
        {"id": "20261201T030000Z", "result": "ok"},  # ok without a file or checksum
        {"id": "20261201T030000Z", "result": "maybe"},
    ],
)
def test_a_list_entry_svcctl_would_not_write_is_refused_naming_the_node(item: dict[str, Any]) -> None:
    with pytest.raises(SvcctlError, match="node lab-1: the list of backups of instance orders-db is unusable"):
        listed(item)


@pytest.mark.parametrize("text", ["", "[]", '{"backups": {}}', '{"backups": [1]}'])
def test_output_that_is_no_list_is_refused(text: str) -> None:
    with pytest.raises(SvcctlError, match="unusable"):
        parse_list("lab-1", "orders-db", "postgres", text)


def test_choose_latest_good_an_id_and_refuse_a_failed_or_unknown_one() -> None:
    entries = listed(ok("20261201T030000Z"), ok("20261202T030000Z"), {"id": "20261203T030000Z", "result": "failed"})
    assert choose(entries, "latest", "orders-db").id == "20261202T030000Z"
    assert choose(entries, "20261201T030000Z", "orders-db").id == "20261201T030000Z"
    with pytest.raises(SvcctlError, match="failed"):
        choose(entries, "20261203T030000Z", "orders-db")
    with pytest.raises(SvcctlError, match="has no backup"):
        choose(entries, "20990101T000000Z", "orders-db")
    with pytest.raises(SvcctlError, match="no successful backup yet"):
        choose([], "latest", "orders-db")


def test_the_checksum_file_must_agree_with_the_result() -> None:
    entry = listed(ok("20261201T030000Z"))[0]
    assert checked_digest(entry, f"{SHA}  20261201T030000Z.dump\n") == SHA
    for bad in (f"{'0' * 64}  20261201T030000Z.dump\n", f"{SHA}  other.dump\n", "", f"{SHA}\n"):
        with pytest.raises(BadChecksum):
            checked_digest(entry, bad)


def sender(data: bytes, rc: int = 0) -> Callable[[Callable[[bytes], None]], tuple[int, str]]:
    def fetch(sink: Callable[[bytes], None]) -> tuple[int, str]:
        for i in range(0, len(data), 4096):
            sink(data[i : i + 4096])
        return rc, "" if rc == 0 else "cat: No such file"

    return fetch


def test_a_copy_is_kept_only_when_its_sha256_matches(tmp_path: Path) -> None:
    entry = listed(ok("20261201T030000Z"))[0]
    path = copy_into(tmp_path, entry, SHA, False, sender(DATA), "node lab-1")
    assert path.read_bytes() == DATA and oct(path.stat().st_mode & 0o777) == "0o600"
    # a damaged copy: refused, nothing left behind, the good file untouched even with --force
    with pytest.raises(BadChecksum, match="the copy was deleted"):
        copy_into(tmp_path, entry, SHA, True, sender(DATA[:-1] + b"X"), "node lab-1")
    assert path.read_bytes() == DATA and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_copy_never_overwrites_without_force_and_a_failed_read_keeps_nothing(tmp_path: Path) -> None:
    entry = listed(ok("20261201T030000Z"))[0]
    (tmp_path / entry.file).write_bytes(b"mine")  # type: ignore[operator]
    with pytest.raises(SvcctlError, match="nothing was overwritten"):
        copy_into(tmp_path, entry, SHA, False, sender(DATA), "node lab-1")
    assert (tmp_path / entry.file).read_bytes() == b"mine"  # type: ignore[operator]
    assert copy_into(tmp_path, entry, SHA, True, sender(DATA), "node lab-1").read_bytes() == DATA
    with pytest.raises(SvcctlError, match="cannot read it"):
        copy_into(tmp_path / ".." / tmp_path.name, entry, SHA, True, sender(b"", rc=1), "node lab-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.file]
