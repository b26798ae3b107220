"""A Redis restore drill's expected side: the keys per database an RDB holds (`svcctl.hostlib.backups.rdb_counts`).

The fixtures are real: `redis7-*.rdb` were written by Redis 7.0.15 (Debian 12, a lab host) with SAVE, from a
throwaway server holding every value type and encoding it writes (int-encoded and LZF strings, listpacks,
intsets, hash tables, quicklists, a stream with a consumer group, a function library, keys with a TTL, and a
second database); its INFO keyspace said db0:keys=17,expires=3 and db3:keys=2,expires=1. The bad ones are
crafted from them or by hand.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from svcctl.hostlib.backups import RdbError, _Rdb, lzf_decompress, rdb_counts, redis_rdb_path

FIXTURES = Path(__file__).parent / "rdb_fixtures"
MIXED = (FIXTURES / "redis7-mixed.rdb").read_bytes()
EMPTY = (FIXTURES / "redis7-empty.rdb").read_bytes()


def counts(data: bytes) -> dict[str, object]:
    return rdb_counts(io.BytesIO(data))


def test_a_real_rdb_counts_every_key_of_each_database_as_redis_did() -> None:
    found = counts(MIXED)
    assert found["dbs"] == {"db0": {"keys": 17, "volatile": 3}, "db3": {"keys": 2, "volatile": 1}}
    assert found["version"] == 10
    aux = found["aux"]
    assert isinstance(aux, dict)
    assert aux["redis-ver"] == "7.0.15"
    assert aux["redis-bits"] == "64"  # an int8-encoded string
    assert aux["ctime"].isdigit() and aux["aof-base"] == "0"  # int32, int8


def test_an_empty_rdb_has_no_database() -> None:
    assert counts(EMPTY)["dbs"] == {}


def test_a_real_lzf_string_decompresses_to_what_was_set() -> None:
    at = MIXED.index(b"\x00\x04long") + len(b"\x00\x04long")
    assert MIXED[at] == 0xC3  # LZF-encoded, as Redis compressed the 320-byte value
    assert _Rdb(io.BytesIO(MIXED[at:])).string() == b"abcdefgh" * 40


def test_lzf_literals_and_overlapping_back_references() -> None:
    # "abc" literal, then a back reference of 3+2=5 bytes starting 3 back (overlapping what it writes)
    assert lzf_decompress(b"\x02abc\x60\x02", 8) == b"abcabcab"
    with pytest.raises(RdbError, match="decompresses to"):
        lzf_decompress(b"\x02abc", 4)
    with pytest.raises(RdbError, match="before the string"):
        lzf_decompress(b"\x00a\x20\x05", 3)
    with pytest.raises(RdbError, match="literal runs past"):
        lzf_decompress(b"\x05ab", 6)


def test_every_length_encoding() -> None:
    r = _Rdb(io.BytesIO(b"\x05" + b"\x41\x02" + b"\x80\x00\x01\x00\x00" + b"\x81" + struct.pack(">Q", 2**40)))
    assert [r.count() for _ in range(4)] == [5, 0x102, 0x10000, 2**40]
    assert _Rdb(io.BytesIO(b"\xc1\x30\xf8")).string() == b"-2000"  # int16, little-endian, signed
    assert _Rdb(io.BytesIO(b"\xc2\xff\xff\xff\xff")).string() == b"-1"
    with pytest.raises(RdbError, match="unknown length encoding"):
        _Rdb(io.BytesIO(b"\x82")).count()
    with pytest.raises(RdbError, match="unknown string encoding"):
        _Rdb(io.BytesIO(b"\xc4")).string()


def rdb(*body: bytes, version: bytes = b"0010") -> bytes:
    return b"REDIS" + version + b"".join(body) + b"\xff" + b"\x00" * 8


def test_a_crafted_rdb_with_every_key_prefix() -> None:
    data = rdb(
        b"\xfa\x03one\xc0\x01",  # aux, int-encoded
        b"\xfe\x00\xfb\x02\x01",  # db0, 2 keys, 1 with a TTL
        b"\xfc" + b"\x00" * 8 + b"\xf9\x05" + b"\x00\x01a\x01x",  # expire ms, freq, string a=x
        b"\xf8\x07" + b"\x01\x01l\x02\x01p\x01q",  # idle, list l=[p, q]
        b"\xfe\x02\xfb\x01\x00" + b"\x03\x01z\x01\x01m\x03" + b"1.5",  # db2: an old zset, score as text
    )
    assert counts(data)["dbs"] == {"db0": {"keys": 2, "volatile": 1}, "db2": {"keys": 1, "volatile": 0}}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (b"RESP3" + MIXED[5:], "not an RDB"),
        (b"REDIS0099" + MIXED[9:], "newer than this reader"),
        (MIXED[:-20], "truncated"),
        (MIXED[:-8], "truncated"),  # no checksum
        (MIXED + b"x", "after the RDB's end"),
        (MIXED.replace(b"\xfe\x00\xfb\x11\x03", b"\xfe\x00\xfb\x12\x03", 1), "RESIZEDB says 18 keys"),
        (rdb(b"\xfe\x00\xfb\x01\x00\x06\x01k"), "type 6"),  # a pre-GA module value
        (rdb(b"\x00\x01k\x01v"), "before any SELECTDB"),
        (rdb(b"\xfb\x00\x00"), "RESIZEDB before any SELECTDB"),
        (rdb(b"\xfe\x00\xfe\x00"), "selected twice"),
        (rdb(b"\xfe\x00\x00\x01k\xc3\x28\x03\x01abc"), "truncated"),  # LZF longer than the file
    ],
)
def test_a_bad_rdb_is_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(RdbError, match=why):
        counts(data)


def test_the_rdb_path_is_the_config_files_dir_and_dbfilename() -> None:
    conf = ["port 6380\n", "dir /var/lib/redis/cache\n", "dbfilename dump.rdb\n"]
    assert redis_rdb_path(conf) == "/var/lib/redis/cache/dump.rdb"
    assert redis_rdb_path(["dir /data\n"]) == "/data/dump.rdb"  # Redis's default name
    assert redis_rdb_path(['dir "/data"\n', "dbfilename other.rdb\n"]) == "/data/other.rdb"
    for bad in (["port 1\n"], ["dir /a\n", "dir /b\n"], ["dir relative\n"], ["dir /a\n", "dbfilename ../x\n"]):
        with pytest.raises(ValueError, match="the config file"):
            redis_rdb_path(bad)
