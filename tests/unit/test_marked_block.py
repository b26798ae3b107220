"""svcctl's block in a file that is otherwise the user's (`svcctl.hostlib.marked`): the user's lines never move.

pg_hba.conf is the case: a server svcctl did not set up has rules of its own, read first match first.
"""

from __future__ import annotations

import pytest

from svcctl.hostlib.marked import BEGIN, END, MarkerError, block_lines, blocks, with_block

LEGACY = "# Managed by svcctl ("
OURS = ["local\tall\tpostgres\tpeer\tmap=svcctl", "host\tall\t+svcctl_clients\t127.0.0.1/32\tscram-sha-256"]
DEBIAN = """# PostgreSQL Client Authentication Configuration File
# ===================================================
#
# (comments of the packaged file)

# Database administrative login by Unix domain socket
local   all             postgres                                peer

# TYPE  DATABASE        USER            ADDRESS                 METHOD
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
"""


def user_lines(text: str) -> list[str]:
    """The file's lines outside svcctl's blocks, in order."""
    lines = text.splitlines()
    inside: set[int] = set()
    for begin, end in blocks(lines):
        inside.update(range(begin, end + 1))
    return [line for i, line in enumerate(lines) if i not in inside]


def test_a_new_block_goes_after_the_opening_comments_before_the_first_rule() -> None:
    out = with_block(DEBIAN, OURS)
    lines = out.splitlines()
    first_rule = lines.index("local   all             postgres                                peer")
    assert lines[first_rule - len(OURS) - 2 : first_rule] == [BEGIN, *OURS, END]
    assert lines[: first_rule - len(OURS) - 2] == DEBIAN.splitlines()[:6]
    assert user_lines(out) == DEBIAN.splitlines()
    assert block_lines(out) == OURS


def test_user_lines_before_after_and_between_blocks_stay_in_their_order() -> None:
    text = "\n".join(["host a u 10.0.0.0/8 md5", BEGIN, "old", END, "host b u 10.1.0.0/16 md5",
                      BEGIN, "duplicate", END, "host c u 10.2.0.0/16 md5"]) + "\n"  # fmt: skip
    out = with_block(text, OURS)
    assert out.splitlines() == ["host a u 10.0.0.0/8 md5", BEGIN, *OURS, END, "host b u 10.1.0.0/16 md5",
                                "host c u 10.2.0.0/16 md5"]  # fmt: skip
    assert with_block(out, OURS) == out  # idempotent


def test_a_block_edited_by_hand_is_svcctls_again_and_only_its_lines_change() -> None:
    written = with_block(DEBIAN, OURS)
    edited = written.replace(OURS[1], "host all all 0.0.0.0/0 trust")
    assert block_lines(edited) == [OURS[0], "host all all 0.0.0.0/0 trust"]
    assert with_block(edited, OURS) == written


def test_a_block_the_user_moved_keeps_its_new_place() -> None:
    moved = "host x y 10.0.0.0/8 md5\n" + "\n".join([BEGIN, *OURS, END]) + "\n"
    assert with_block(moved, [*OURS, "host all +svcctl_clients 10.9.0.0/16 scram-sha-256"]).startswith("host x y")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"a\n{BEGIN}\nb\n", r"line 2 starts an svcctl block that no `# END svcctl` line ends"),
        (f"a\n{END}\n", r"line 2 ends an svcctl block that no `# BEGIN svcctl` line starts"),
        (f"{BEGIN}\n{BEGIN}\n{END}\n", r"line 2 starts a second svcctl block inside the one of line 1"),
    ],
)
def test_markers_that_do_not_pair_change_nothing_and_say_where(text: str, why: str) -> None:
    with pytest.raises(MarkerError, match=why):
        with_block(text, OURS)
    with pytest.raises(MarkerError, match=why):
        block_lines(text)


def test_marker_lines_are_recognised_with_surrounding_blanks_only() -> None:
    text = f"  {BEGIN}  \nours\n{END}\t\n# BEGIN svcctl-like comment of the user\n"
    assert block_lines(text) == ["ours"]
    assert user_lines(with_block(text, OURS)) == ["# BEGIN svcctl-like comment of the user"]


def test_a_legacy_whole_file_becomes_the_block_alone() -> None:
    legacy = "# Managed by svcctl (engine.lab-1.postgres); svcctl writes this whole file\nlocal all postgres peer\n"
    assert block_lines(legacy, LEGACY) == legacy.splitlines()
    assert with_block(legacy, OURS, LEGACY) == "\n".join([BEGIN, *OURS, END]) + "\n"
    assert block_lines(DEBIAN, LEGACY) is None  # the packaged file is the user's


def test_files_without_rules_or_without_anything_get_the_block_at_the_end() -> None:
    assert with_block("", OURS) == "\n".join([BEGIN, *OURS, END]) + "\n"
    assert with_block("# only\n# comments\n", OURS).splitlines()[:3] == ["# only", "# comments", BEGIN]


@pytest.mark.parametrize("line", ["two\nlines", "cr\r", END, f"  {BEGIN}"])
def test_a_block_line_that_would_break_the_markers_is_refused(line: str) -> None:
    with pytest.raises(MarkerError, match="refusing block line"):
        with_block(DEBIAN, [line])
