"""Errors svcctl reports to people: one paragraph, what went wrong and what to do, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class SvcctlError(Exception):
    """An error the CLI prints as `error: <message>` and exits 1 on.

    The message is a single paragraph that names the file:line or the host involved and what to do next.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in the user's files, reported compiler-style as `file:line:column: message`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class InvalidEnvironment(SvcctlError):
    """The environment's files are not valid; carries every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        count = len(self.problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{lines}\n{count} problem{'s' if count != 1 else ''} found; nothing was changed.")
