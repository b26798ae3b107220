"""The CLI's last word: an error's message reaches the terminal with its control characters made visible."""

from __future__ import annotations

import pytest

from svcctl import cli
from svcctl.errors import SvcctlError


def _fail_with(exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    def app(**_: object) -> None:
        raise exc

    monkeypatch.setattr(cli, "app", app)


def test_an_error_message_reaches_the_terminal_escaped_with_its_lines_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_with(SvcctlError("node lab-1: user \x1b[2J\u202eevil\r is bad\nsecond line"), monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: node lab-1: user \\x1b[2J\\u202eevil\\r is bad\nsecond line\n"


def test_an_internal_error_is_escaped_too(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SVCCTL_DEBUG", raising=False)
    _fail_with(KeyError("\x1b]0;title\x07"), monkeypatch)
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b]0;title\\x07" in err and "internal error" in err
