"""svcctl's own lines in a file that is otherwise the user's: one block between marker lines.

A configuration file of a server svcctl did not set up (PostgreSQL's pg_hba.conf) holds the user's lines;
svcctl adds its own between `# BEGIN svcctl` and `# END svcctl` (the markers Ansible's blockinfile writes
for `# {mark} svcctl`) and changes only what is between them. Every line outside the block stays exactly as
it was, in its order. A new block goes before the first line that is not a comment or blank, so it comes
first where the first matching line decides (pg_hba.conf) and after the file's opening comments. A file
svcctl wrote whole before it had markers (its first line starts with the given legacy header) is svcctl's
throughout and becomes the block alone.

Pure functions over text, for the observe script, the Ansible module that writes the block and unit tests.
"""

from __future__ import annotations

BEGIN = "# BEGIN svcctl"
END = "# END svcctl"


class MarkerError(ValueError):
    """The markers do not delimit svcctl's lines (one without the other, or nested): nothing is changed."""


def _marker(line: str) -> str | None:
    stripped = line.strip()
    return stripped if stripped in (BEGIN, END) else None


def blocks(lines: list[str]) -> list[tuple[int, int]]:
    """Every (begin, end) index pair of svcctl's blocks, in order; MarkerError when the markers do not pair."""
    found: list[tuple[int, int]] = []
    begin = None
    for number, line in enumerate(lines):
        mark = _marker(line)
        if mark == BEGIN:
            if begin is not None:
                raise MarkerError(f"line {number + 1} starts a second svcctl block inside the one of line {begin + 1}")
            begin = number
        elif mark == END:
            if begin is None:
                raise MarkerError(f"line {number + 1} ends an svcctl block that no `{BEGIN}` line starts")
            found.append((begin, number))
            begin = None
    if begin is not None:
        raise MarkerError(f"line {begin + 1} starts an svcctl block that no `{END}` line ends")
    return found


def block_lines(text: str, legacy_header: str = "") -> list[str] | None:
    """The lines of svcctl's (first) block, None when the file has none; a legacy whole file is all svcctl's."""
    lines = text.splitlines()
    if legacy_header and lines and lines[0].startswith(legacy_header):
        return lines
    found = blocks(lines)
    if not found:
        return None
    begin, end = found[0]
    return lines[begin + 1 : end]


def with_block(text: str, block: list[str], legacy_header: str = "") -> str:
    """`text` with svcctl's block holding exactly `block`, everything else as it was.

    The first block keeps its place (a user may have moved it on purpose); later duplicate blocks, with
    their lines, are removed, since svcctl's lines are all in the first. No block: it is inserted before the
    first line that is neither a comment nor blank (at the end of a file of comments only).
    """
    for line in block:
        if "\n" in line or "\r" in line or _marker(line):
            raise MarkerError(f"refusing block line {line!r}: a line break or a marker inside svcctl's block")
    lines = text.splitlines()
    wrapped = [BEGIN, *block, END]
    if legacy_header and lines and lines[0].startswith(legacy_header):
        return "\n".join(wrapped) + "\n"
    found = blocks(lines)
    if found:
        out = lines[: found[0][0]] + wrapped
        previous_end = found[0][1]
        for begin, end in found[1:]:
            out += lines[previous_end + 1 : begin]
            previous_end = end
        out += lines[previous_end + 1 :]
    else:
        first_rule = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), None)
        at = len(lines) if first_rule is None else first_rule
        out = lines[:at] + wrapped + lines[at:]
    return "\n".join(out) + "\n"
