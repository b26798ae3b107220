"""The postgres snippet's own reading of Debian clusters (what pg_lsclusters reads), run here on files we write.

The snippet is stdlib-only Python, so its helpers run locally: the frame's header and the postgres snippet
are executed into a namespace without the footer (which would observe this machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.hostprograms import engine_part, script_source


@pytest.fixture(scope="module")
def snippet() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "observe_snippet"}
    exec(script_source("observe_header.py") + "\n" + engine_part("postgres", "observe")[1], namespace)
    return namespace


def test_conf_syntax_includes_and_precedence_follow_postgresql_common(snippet: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("listen_addresses = '*'\nport 5433\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("Port = 5434   # the last one wins\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("port = 1\n")
    (tmp_path / "conf.d" / "notes.txt").write_text("port = 2\n")
    (tmp_path / "extra.conf").write_text("password_encryption = scram-sha-256\n")
    (tmp_path / "postgresql.conf").write_text(
        "# comment\n\n"
        "data_directory = '/var/lib/postgresql/15/main'\n"
        "hba_file = '/etc/postgresql/15/main/pg_hba.conf'  # trailing comment\n"
        "cluster_name = 'it''s \\'quoted\\''\n"
        "port = 5432\n"
        "shared_buffers = 128MB\n"
        "include_dir 'conf.d'\n"
        "include_if_exists = 'missing.conf'\n"
        "include 'extra.conf'\n"
    )
    conf = snippet["_pg_read_conf"](str(tmp_path / "postgresql.conf"))
    assert conf == {
        "data_directory": "/var/lib/postgresql/15/main",
        "hba_file": "/etc/postgresql/15/main/pg_hba.conf",
        "cluster_name": "it's 'quoted'",
        "port": "5434",
        "shared_buffers": "128MB",
        "listen_addresses": "*",
        "password_encryption": "scram-sha-256",
    }


def test_a_line_pg_lsclusters_refuses_is_an_error_not_a_guess(snippet: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "postgresql.conf").write_text("port = 5432 5433\n")
    with pytest.raises(RuntimeError, match="invalid line"):
        snippet["_pg_read_conf"](str(tmp_path / "postgresql.conf"))


def test_a_missing_file_reads_as_empty(snippet: dict[str, Any], tmp_path: Path) -> None:
    assert snippet["_pg_read_conf"](str(tmp_path / "nope.conf")) == {}


@pytest.mark.parametrize(
    ("text", "mode"), [(None, "auto"), ("# c\n\nmanual\n", "manual"), ("disabled # x\n", "disabled")]
)
def test_start_conf(snippet: dict[str, Any], tmp_path: Path, text: str | None, mode: str) -> None:
    if text is not None:
        (tmp_path / "start.conf").write_text(text)
    assert snippet["_pg_start_conf"](str(tmp_path)) == mode


def test_running_from_a_stale_pid_file_is_false(snippet: dict[str, Any], tmp_path: Path) -> None:
    pidfile = tmp_path / "15-main.pid"
    assert snippet["_pg_running"]({"external_pid_file": str(pidfile)}, 5432) is False
    pidfile.write_text("1\n")  # PID 1 is not postgres
    assert snippet["_pg_running"]({"external_pid_file": str(pidfile)}, 5432) is False


def test_running_without_a_pid_file_probes_the_socket(snippet: dict[str, Any], tmp_path: Path) -> None:
    conf = {"unix_socket_directories": f"{tmp_path}, /elsewhere"}
    assert snippet["_pg_running"](conf, 5432) is False
