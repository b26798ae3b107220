"""A restore drill (`svcctl restore --into OTHER --verify`): the dump's tables and rows against the restored ones.

The counting runs on the node (the backup program, from `svcctl.hostlib.backups`) over what pg_restore prints
and what mariadb-dump wrote; here it reads texts as they print them. The e2e drill is in test_backups.py.
"""

from __future__ import annotations

import pytest

from svcctl.errors import SvcctlError
from svcctl.hostlib.backups import copy_counts, insert_counts
from svcctl.tunnel.restore import counts, drill_report

PG_DATA_ONLY = """\
--
-- PostgreSQL database dump
--
SET statement_timeout = 0;

--
-- Data for Name: items; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.items (id, name) FROM stdin;
1\ta
2\tline\\nbreak escaped, as COPY writes it
3\t\\.not the end: only a line of exactly \\. ends it
\\.


COPY public."Mixed Case" (x) FROM stdin;
\\.


COPY public.nocols  FROM stdin;
\\.
COPY audit.log (at) FROM stdin;
2026-12-01
\\.
"""


def test_rows_per_table_are_each_copy_blocks_lines() -> None:
    assert copy_counts(PG_DATA_ONLY.splitlines(keepends=True)) == {
        "public.items": 3,
        'public."Mixed Case"': 0,
        "public.nocols": 0,
        "audit.log": 1,
    }


MYSQL_DUMP = """\
-- MariaDB dump 10.19
DROP TABLE IF EXISTS `items`;
CREATE TABLE `items` (
  `id` int(11) NOT NULL,
  `name` text DEFAULT NULL
) ENGINE=InnoDB;
INSERT INTO `items` VALUES (1,'a'),(2,'it''s (quoted), with ),( inside'),(3,'back\\\\slash \\' and \\\\'),(4,NULL);
INSERT INTO `items` VALUES (5,'second statement');
CREATE TABLE `empty` (
  `x` int(11)
);
CREATE TABLE `odd``name` (
  `y` int(11)
);
INSERT INTO `odd``name` VALUES (1),(2);
CREATE TABLE `lines` (
  `id` int(11),
  `v` text
);
INSERT INTO `lines` VALUES
(1,'one'),
(2,'a;semicolon, a ), and a \\' quote'),
(3,NULL);
INSERT INTO `lines` VALUES
(4,'after');
"""


def test_rows_per_table_are_the_insert_tuples_outside_strings() -> None:
    """Both layouts: all tuples on the INSERT's line, and one tuple a line after it (MariaDB 10.11's dump)."""
    assert insert_counts(MYSQL_DUMP.splitlines(keepends=True)) == {"items": 5, "empty": 0, "odd`name": 2, "lines": 4}


def test_the_drill_passes_when_every_table_of_the_dump_has_its_rows() -> None:
    report = drill_report("drill", "20261201T000000Z", {"public.items": 3, "audit.log": 1},
                          {"public.items": 3, "audit.log": 1, "public.extra": 7})  # fmt: skip
    assert report == (
        "Verified: 2 table(s), 4 row(s), as the dump holds them (1 table(s) in the target are not in the dump: "
        '"public.extra").'
    )


@pytest.mark.parametrize(
    ("actual", "said"),
    [
        ({"public.items": 2, "audit.log": 1}, '"public.items": 2 rows, the dump has 3'),
        ({"audit.log": 1}, '"public.items": missing'),
    ],
)
def test_the_drill_fails_naming_each_difference(actual: dict[str, int], said: str) -> None:
    with pytest.raises(SvcctlError, match="restore drill of backup 20261201T000000Z into drill failed") as failed:
        drill_report("drill", "20261201T000000Z", {"public.items": 3, "audit.log": 1}, actual)
    assert said in failed.value.message


@pytest.mark.parametrize(
    "doc",
    [{"expected": []}, {"expected": {"t": "3"}}, {"expected": {"t": True}}, {"expected": {"x" * 301: 1}}, {}],
)
def test_what_the_node_answers_is_checked_before_use(doc: dict[str, object]) -> None:
    with pytest.raises(SvcctlError, match="table counts are unreadable"):
        counts(doc, "expected")


# --- Redis: keys per database, from the RDB (tests/unit/test_rdb_counts.py) against INFO keyspace -------------


def test_a_redis_drill_passes_with_the_dumps_keys_in_each_database() -> None:
    said = drill_report("drill", "20261201T000000Z", {"db0": 17, "db3": 2}, {"db0": 17, "db3": 2}, {"db0": 3})
    assert said == "Verified: 2 database(s), 19 key(s), as the dump holds them."


def test_a_redis_drill_allows_fewer_keys_only_by_those_with_a_ttl() -> None:
    said = drill_report("drill", "20261201T000000Z", {"db0": 17}, {"db0": 15}, {"db0": 3})
    assert (
        said
        == "Verified: 1 database(s), 17 key(s), as the dump holds them (2 key(s) with a TTL expired since the backup)."
    )
    with pytest.raises(SvcctlError, match='"db0": 13 key\\(s\\), the dump has 17 key\\(s\\), 3 of them with a TTL'):
        drill_report("drill", "20261201T000000Z", {"db0": 17}, {"db0": 13}, {"db0": 3})


@pytest.mark.parametrize(
    ("actual", "said"),
    [
        ({"db0": 18}, '"db0": 18 key(s), the dump has 17 key(s)'),  # more than the dump
        ({}, '"db0": 0 key(s), the dump has 17 key(s)'),  # an empty instance lists no database
        ({"db0": 17, "db5": 1}, '"db5": 1 key(s), the dump has none'),  # the restore left other data
    ],
)
def test_a_redis_drill_names_a_wrong_key_count(actual: dict[str, int], said: str) -> None:
    with pytest.raises(SvcctlError, match="restore drill of backup 20261201T000000Z into drill failed") as failed:
        drill_report("drill", "20261201T000000Z", {"db0": 17}, actual, {})
    assert said in failed.value.message and "do not rely on this backup" in failed.value.message


def test_a_redis_drill_request_carries_the_admin_password_only_when_given() -> None:
    import json

    from svcctl.secrets import Secret
    from svcctl.tunnel.access import Located
    from svcctl.tunnel.backups import BackupEntry
    from svcctl.tunnel.restore import request

    target = Located(instance="drill", engine="redis", node="n", records={"instance.drill": {"attrs": {"port": 6381}}})
    entry = BackupEntry("20261201T000000Z", "ok", None, None, None, None, None, None)
    sent = json.loads(request(target, target, entry, check=False, verify=True, admin_password=Secret("p" * 32)))
    assert sent["admin_password"] == "p" * 32 and sent["verify"] is True
    assert "admin_password" not in json.loads(request(target, target, entry, check=True))
