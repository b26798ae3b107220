"""MariaDB's bind address (issue #12): svcctl widens a loopback-only server for client networks and never
narrows what a server listens on by its own configuration, and a plan restarts mariadb only when the
address changes.

The option-file reader is tested over texts (a dict stands for the node's files), the driver's rule as a
table, and the upgrade of nodes svcctl already manages through parse, desired and the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers.base import DesiredContext
from svcctl.drivers.mysql.driver import DRIVER, beyond_loopback, desired_bind, observed_bind, server_own_bind
from svcctl.drivers.mysql.observe import (
    _mysql_read_option_file,
    mysql_bind_base,
    mysql_option_values,
    mysql_server_groups,
)
from svcctl.drivers.ownership import mark_ownership
from svcctl.drivers.reported import InvalidReport, engine_report
from svcctl.model.spec import Environment, Instance, Node, Service, ServicePlan
from svcctl.plan.diff import diff
from svcctl.plan.render import render_text
from svcctl.secrets import derive_password
from svcctl.state import Kind, Resource, State

MY_CNF = "/etc/mysql/my.cnf"
CONF_D = "/etc/mysql/conf.d"
MARIADB_D = "/etc/mysql/mariadb.conf.d"
SVCCTL_CNF = f"{MARIADB_D}/60-svcctl.cnf"
DEBIAN_MY_CNF = f"""# The MariaDB configuration file (Debian's /etc/mysql/mariadb.cnf, which my.cnf links to)
[client-server]
socket = /run/mysqld/mysqld.sock
!includedir {CONF_D}/
!includedir {MARIADB_D}/
"""
DEBIAN_SERVER_CNF = """# These groups are read by MariaDB server.
[server]

[mysqld]
user                    = mysql
# Instead of skip-networking the default is now to listen only on
# localhost which is more compatible and is not less secure.
bind-address            = 127.0.0.1

[embedded]

[mariadb]

[mariadb-10.11]
"""
DEBIAN_GALERA_CNF = """[galera]
# Allow server to accept connections on all interfaces.
#bind-address = 0.0.0.0
"""


def debian(**extra: str) -> dict[str, str]:
    """A Debian 12 node's option files (mariadb-server's own), plus `extra` (file name in mariadb.conf.d: text)."""
    files = {
        MY_CNF: DEBIAN_MY_CNF,
        f"{CONF_D}/mysql.cnf": "[mysql]\n",
        f"{CONF_D}/mysqldump.cnf": "[mysqldump]\nquick\n",
        f"{MARIADB_D}/50-client.cnf": "[client]\ndefault-character-set = utf8mb4\n",
        f"{MARIADB_D}/50-server.cnf": DEBIAN_SERVER_CNF,
        f"{MARIADB_D}/60-galera.cnf": DEBIAN_GALERA_CNF,
    }
    files.update({f"{MARIADB_D}/{name}": text for name, text in extra.items()})
    return files


def base(files: dict[str, str], series: str = "10.11") -> str:
    """mysql_bind_base over `files`; directories list their files in reverse name order (the reader sorts)."""

    def listdir(path: str) -> list[str] | None:
        path = path.rstrip("/")
        names = [p.rsplit("/", 1)[1] for p in files if p.rsplit("/", 1)[0] == path]
        return sorted(names, reverse=True) if names else None

    return mysql_bind_base(files.get, listdir, series)


# --- the server's own option files ----------------------------------------------------------------------------


def test_debians_own_files_bind_loopback() -> None:
    assert base(debian()) == "127.0.0.1"


def test_a_later_file_in_the_directory_wins_in_name_order_whatever_order_the_directory_lists() -> None:
    assert base(debian(**{"70-open.cnf": "[mysqld]\nbind-address = 0.0.0.0\n"})) == "0.0.0.0"
    assert base(debian(**{"10-open.cnf": "[mysqld]\nbind-address = 0.0.0.0\n"})) == "127.0.0.1"


def test_mariadb_conf_d_is_read_after_conf_d() -> None:
    files = debian()
    files[f"{CONF_D}/zz-open.cnf"] = "[mysqld]\nbind-address = 0.0.0.0\n"
    assert base(files) == "127.0.0.1"  # 50-server.cnf comes later, in mariadb.conf.d
    files[f"{MARIADB_D}/50-server.cnf"] = "[mysqld]\nuser = mysql\n"
    assert base(files) == "0.0.0.0"


def test_svcctls_own_file_is_not_read() -> None:
    assert base(debian(**{"60-svcctl.cnf": "[mysqld]\nbind-address = 0.0.0.0\n"})) == "127.0.0.1"
    files = debian(**{"60-svcctl.cnf": "[mysqld]\nbind-address = 0.0.0.0\n"})
    files[f"{CONF_D}/svcctl.cnf"] = f"!include {SVCCTL_CNF}\n"  # not even through an include
    assert base(files) == "127.0.0.1"


@pytest.mark.parametrize(
    "group",
    ["mysqld", "server", "mariadb", "mariadbd", "mariadb-10.11", "mysqld-10.11", "mariadbd-10.11", "MySQLd",
     "galera", "client-server", " mysqld "],
)  # fmt: skip
def test_every_group_the_server_reads_counts(group: str) -> None:
    assert base(debian(**{"90-mine.cnf": f"[{group}]\nbind-address = 10.0.0.5\n"})) == "10.0.0.5"


@pytest.mark.parametrize(
    "group", ["client", "mysql", "mysqldump", "mariadb-10.5", "mysqld-11.8", "embedded", "mysqld_safe"]
)
def test_groups_the_server_does_not_read_are_skipped(group: str) -> None:
    assert base(debian(**{"90-mine.cnf": f"[{group}]\nbind-address = 10.0.0.5\n"})) == "127.0.0.1"


def test_version_groups_follow_the_installed_series() -> None:
    files = debian(**{"90-mine.cnf": "[mariadb-10.5]\nbind-address = 10.0.0.5\n"})
    assert base(files, "10.5") == "10.0.0.5"
    assert base(files, "10.11") == "127.0.0.1"
    assert mysql_server_groups("") == {"mysqld", "server", "mariadb", "mariadbd", "client-server", "galera"}
    # as `mariadbd --help --verbose` lists them on Debian 11, 12 and 13
    common = ["mysqld", "server", "mariadb", "mariadbd", "client-server", "galera"]
    assert mysql_server_groups("10.5") == {*common, "mysqld-10.5", "mariadb-10.5", "mariadbd-10.5"}
    assert mysql_server_groups("10.11") == {*common, "mysqld-10.11", "mariadb-10.11", "mariadbd-10.11"}
    eleven = {*common, "mysqld-11.8", "mariadb-11.8", "mariadb-11", "mariadbd-11.8", "mariadbd-11"}
    assert mysql_server_groups("11.8") == eleven
    assert base(debian(**{"90-mine.cnf": "[mariadbd-11]\nbind-address = 10.0.0.5\n"}), "11.8") == "10.0.0.5"


def test_the_last_setting_wins_within_a_file_and_across_groups() -> None:
    text = "[mysqld]\nbind-address = 10.0.0.1\n[client]\nbind-address = 10.0.0.9\n[mariadb]\nbind-address = 10.0.0.2\n"
    assert base(debian(**{"90-mine.cnf": text})) == "10.0.0.2"


def test_comments_and_quotes_are_read_as_mariadb_reads_them() -> None:
    cases = {
        "#bind-address = 0.0.0.0\n": "127.0.0.1",
        "  ; bind-address = 0.0.0.0\n": "127.0.0.1",
        "bind-address = 10.0.0.5   # the office\n": "10.0.0.5",
        "bind-address='10.0.0.6'\n": "10.0.0.6",
        'bind-address = "10.0.0.7"\n': "10.0.0.7",
        "bind-address = '10.0.0.8 # not a comment'\n": "10.0.0.8#notacomment",
        "bind-address\n": "127.0.0.1",  # no value: not a setting (MariaDB refuses to start)
        "bind-address = 10.0.0.5, ::1\n": "10.0.0.5,::1",
    }
    for line, expected in cases.items():
        assert base(debian(**{"90-mine.cnf": "[mysqld]\n" + line})) == expected, line


@pytest.mark.parametrize("name", ["bind_address", "bind-address", "loose-bind-address", "loose_bind_address"])
def test_either_spelling_and_the_loose_prefix(name: str) -> None:
    assert base(debian(**{"90-mine.cnf": f"[mysqld]\n{name} = 0.0.0.0\n"})) == "0.0.0.0"


def test_other_options_that_merely_start_alike_are_not_the_address() -> None:
    assert base(debian(**{"90-mine.cnf": "[mysqld]\nbind-address-x = 0.0.0.0\nskip-bind-address\n"})) == "127.0.0.1"


def test_include_reads_a_file_where_it_stands() -> None:
    files = debian()
    files["/srv/db/open.cnf"] = "[mysqld]\nbind-address = 0.0.0.0\n"
    files[MY_CNF] = DEBIAN_MY_CNF + "!include /srv/db/open.cnf\n"
    assert base(files) == "0.0.0.0"  # after the directories
    files[MY_CNF] = "!include /srv/db/open.cnf\n" + DEBIAN_MY_CNF
    assert base(files) == "127.0.0.1"  # before them


def test_an_included_file_keeps_its_own_groups() -> None:
    files = debian()
    files["/srv/db/other.cnf"] = "[client]\nuser = app\n"
    files[MY_CNF] = "[mysqld]\n!include /srv/db/other.cnf\nbind-address = 10.0.0.5\n" + DEBIAN_MY_CNF
    # back in my.cnf, [mysqld] still holds: its address is read, and 50-server.cnf (later) wins
    values = mysql_option_values(files.get, lambda d: None, "bind-address", mysql_server_groups("10.11"))
    assert values == ["10.0.0.5"]


def test_only_cnf_files_of_a_directory_are_read() -> None:
    files = debian(
        **{"70-open.cnf.dpkg-old": "[mysqld]\nbind-address = 0.0.0.0\n", "README": "[mysqld]\nbind-address = 1"}
    )
    assert base(files) == "127.0.0.1"


def test_missing_files_and_directories_are_skipped() -> None:
    assert base({}) == ""  # nothing sets it: MariaDB's default, every address
    assert base({MY_CNF: DEBIAN_MY_CNF}) == ""
    assert base({MY_CNF: "!include /nowhere.cnf\n!includedir /nowhere/\n[mysqld]\nbind-address = ::1\n"}) == "::1"


def test_etc_my_cnf_is_read_before_etc_mysql_my_cnf() -> None:
    files = debian()
    files["/etc/my.cnf"] = "[mysqld]\nbind-address = 0.0.0.0\n"
    assert base(files) == "127.0.0.1"
    del files[MY_CNF]
    assert base(files) == "0.0.0.0"


def test_an_option_before_any_group_and_a_broken_group_line_count_for_nothing() -> None:
    assert base({MY_CNF: "bind-address = 0.0.0.0\n[mysqld\nbind-address = 10.0.0.1\n"}) == ""


def test_includes_that_loop_end() -> None:
    files = {MY_CNF: f"!include {MY_CNF}\n[mysqld]\nbind-address = 10.0.0.5\n"}
    values = mysql_option_values(files.get, lambda d: None, "bind-address", mysql_server_groups("10.11"))
    assert values == ["10.0.0.5"] * 11  # MariaDB follows ten levels of !include, then skips the directive


def test_the_host_reader_skips_what_mariadb_skips(tmp_path: Path) -> None:
    good, open_to_all, directory = tmp_path / "a.cnf", tmp_path / "b.cnf", tmp_path / "c.cnf"
    good.write_text("[mysqld]\n")
    open_to_all.write_text("[mysqld]\nbind-address = 0.0.0.0\n")
    os.chmod(open_to_all, 0o666)
    directory.mkdir()
    assert _mysql_read_option_file(str(good)) == "[mysqld]\n"
    assert _mysql_read_option_file(str(open_to_all)) is None  # world-writable: MariaDB ignores it
    assert _mysql_read_option_file(str(directory)) is None
    assert _mysql_read_option_file(str(tmp_path / "missing.cnf")) is None


# --- the report ---------------------------------------------------------------------------------------------


def report(**fields: Any) -> dict[str, Any]:
    return {"installed": True, "package_version": "1:10.11.19-0+deb12u1", "active": False, "enabled": False, **fields}


def test_the_report_field_is_optional_and_strict() -> None:
    assert "bind_base" not in engine_report("db-1", "mysql", report())  # an older observe script's report
    assert engine_report("db-1", "mysql", report(bind_base=""))["bind_base"] == ""
    assert engine_report("db-1", "mysql", report(bind_base="10.0.0.5,::1"))["bind_base"] == "10.0.0.5,::1"
    for bad in ("10.0.0.5 ::1", "x" * 256, "{{ lookup('pipe', 'id') }}", 5, ["0.0.0.0"]):
        with pytest.raises(InvalidReport, match="bind_base"):
            engine_report("db-1", "mysql", report(bind_base=bad))


# --- the engine observed ----------------------------------------------------------------------------------------


def running(
    listening: list[str], live: str | None, bind_base: str | None, conf: dict[str, Any] | None
) -> dict[str, Any]:
    """A running server's report: what it listens on, its @@bind_address, its own files' address, svcctl's file."""
    server = {"version": "10.11.19-MariaDB-0+deb12u1", "port": 3306, "bind_address": live, "listening": listening}
    return report(active=True, enabled=True, conf=conf, bind_base=bind_base, server=server)


def svcctl_file(bind: str | None, networks: list[str] | None = None) -> dict[str, Any]:
    return {"bind_address": bind, "client_networks": networks or []}


def engine_of(raw: dict[str, Any]) -> Resource:
    [engine] = [r for r in DRIVER.parse("db-1", raw, lambda p: derive_password(bytes(32), p)) if r.kind is Kind.ENGINE]
    return engine


NET = "10.1.0.0/16"
OBSERVED = {
    # a server svcctl never touched, open by its own configuration: open for nobody svcctl declares
    "foreign-open": (running(["0.0.0.0"], "0.0.0.0", "0.0.0.0", None),
                     {"bind_address": "0.0.0.0", "client_networks": []}),
    # no bind-address anywhere: MariaDB's default, every address (@@bind_address is NULL)
    "foreign-default": (running(["0.0.0.0", "::"], None, "", None), {"bind_address": "*", "client_networks": []}),
    "debian-default": (running(["127.0.0.1"], "127.0.0.1", "127.0.0.1", None),
                       {"bind_address": "127.0.0.1", "client_networks": []}),
    # svcctl widened a loopback server: its file hides the server's own address, which is reported besides
    "widened": (running(["0.0.0.0"], "0.0.0.0", "127.0.0.1", svcctl_file("0.0.0.0", [NET])),
                {"bind_address": "0.0.0.0", "client_networks": [NET], "listen_base": "127.0.0.1"}),
    # the svcctl of before issue #12 narrowed a server that listened everywhere
    "narrowed-by-old-svcctl": (running(["127.0.0.1"], "127.0.0.1", "0.0.0.0", svcctl_file("127.0.0.1")),
                               {"bind_address": "127.0.0.1", "client_networks": [], "listen_base": "0.0.0.0"}),
    "old-svcctl-loopback": (running(["127.0.0.1"], "127.0.0.1", "127.0.0.1", svcctl_file("127.0.0.1")),
                            {"bind_address": "127.0.0.1", "client_networks": []}),
    # svcctl's file opened it with no network noted (edited by hand): open to all, so the diff closes it
    "svcctl-open-to-all": (running(["0.0.0.0"], "0.0.0.0", "127.0.0.1", svcctl_file("0.0.0.0")),
                           {"bind_address": "0.0.0.0", "client_networks": ["0.0.0.0/0"], "listen_base": "127.0.0.1"}),
    # stopped: what it would start with, its own files' address unless svcctl's file sets one
    "stopped-foreign-open": (report(bind_base="0.0.0.0"), {"bind_address": "0.0.0.0", "client_networks": []}),
    "stopped-widened": (report(bind_base="127.0.0.1", conf=svcctl_file("0.0.0.0", [NET])),
                        {"bind_address": "0.0.0.0", "client_networks": [NET], "listen_base": "127.0.0.1"}),
    "stopped-new-svcctl-file": (report(bind_base="127.0.0.1", conf=svcctl_file(None)),
                                {"bind_address": "127.0.0.1", "client_networks": []}),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OBSERVED))
def test_the_engine_reports_what_it_listens_on_and_its_own_address_when_svcctl_hides_it(case: str) -> None:
    raw, expected = OBSERVED[case]
    attrs = engine_of(raw).attrs
    assert {k: attrs[k] for k in ("bind_address", "client_networks", "listen_base") if k in attrs} == expected
    assert observed_bind(raw) == {k: v for k, v in expected.items() if k != "client_networks"}


# --- what svcctl wants -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("own", "networks", "wanted"),
    [
        ("0.0.0.0", [], "0.0.0.0"),  # open already, no networks: never narrowed
        ("127.0.0.1", [NET], "0.0.0.0"),  # loopback, networks: svcctl widens
        ("10.0.0.5", [NET], "10.0.0.5"),  # a specific address reaches beyond loopback: unchanged
        ("127.0.0.1", [], "127.0.0.1"),  # loopback, no networks: as it is
        ("*", [], "*"),
        ("*", [NET], "*"),
        ("::", [NET], "::"),
        ("127.0.0.1,::1", [NET], "0.0.0.0"),
        ("localhost", [], "localhost"),
        ("db.internal", [NET], "db.internal"),  # a name: it may reach beyond loopback, so never narrowed
    ],
)
def test_desired_bind(own: str, networks: list[str], wanted: str) -> None:
    assert desired_bind(own, networks) == wanted


def test_beyond_loopback() -> None:
    assert [beyond_loopback(b) for b in ("127.0.0.1", "::1", "127.0.0.1,::1", "localhost", "127.0.0.2")] == [False] * 5
    assert [beyond_loopback(b) for b in ("0.0.0.0", "*", "", "::", "10.0.0.5", "127.0.0.1,10.0.0.5")] == [True] * 6


def test_a_node_without_the_engine_yet_gets_debians_default() -> None:
    assert server_own_bind(None) == "127.0.0.1"
    assert server_own_bind(engine_of(OBSERVED["widened"][0])) == "127.0.0.1"
    assert server_own_bind(engine_of(OBSERVED["foreign-open"][0])) == "0.0.0.0"


# --- plans: brownfield servers and the upgrade of nodes svcctl already manages ---------------------------------


def env(networks: list[str]) -> Environment:
    return Environment(
        environment="e",
        nodes={"db-1": Node(host="h1", engines=["mysql"], client_networks=networks)},
        services={"mysql": Service(engine="mysql", versions=["10.11"])},
        plans={"m": ServicePlan(service="mysql")},
        instances={"shop-db": Instance(plan="m", node="db-1")},
    )


def engine_plan(raw: dict[str, Any], networks: list[str]) -> tuple[dict[str, Any], str]:
    """The engine's change (field -> (old, new)) when the node reports `raw` and declares `networks`, with the
    environment's claim already recorded; and the plan as text."""
    registry = {"engine.db-1.mysql": {"attrs": {}, "environment": "e", "claims": {"e": networks}}}
    live = DRIVER.parse("db-1", raw, lambda p: derive_password(bytes(32), p))
    observed = State.of(mark_ownership("db-1", live, registry, "e"))
    ctx = DesiredContext(env=env(networks), placement={"shop-db": "db-1"}, observed=observed)
    desired = State.of(DRIVER.desired(ctx))
    plan = diff(desired, observed)
    changes = [c for c in plan.changes if c.address == "engine.db-1.mysql"]
    fields = {a.field: (a.old, a.new) for c in changes for a in c.attrs}
    return fields, render_text(plan)


@pytest.mark.parametrize(
    ("case", "networks"),
    [
        ("old-svcctl-loopback", []),  # its file says 127.0.0.1, as Debian's own does: nothing to do
        ("widened", [NET]),  # its file says 0.0.0.0 for the node's networks: nothing to do
        ("debian-default", []),
        ("foreign-open", []),  # open by its own configuration, no networks declared: left open
        ("foreign-default", []),
        ("stopped-widened", [NET]),
    ],
)
def test_the_address_does_not_change_where_it_need_not(case: str, networks: list[str]) -> None:
    fields, _ = engine_plan(OBSERVED[case][0], networks)
    assert "bind_address" not in fields
    assert "client_networks" not in fields


def test_a_server_open_by_its_own_configuration_gains_the_networks_without_a_restart() -> None:
    fields, _ = engine_plan(OBSERVED["foreign-open"][0], [NET])
    assert fields == {"client_networks": ([], [NET])}  # the file notes them; bind_address stays 0.0.0.0


def test_widening_a_loopback_server_is_planned_as_its_address_changing() -> None:
    fields, text = engine_plan(OBSERVED["debian-default"][0], [NET])
    assert fields == {"bind_address": ("127.0.0.1", "0.0.0.0"), "client_networks": ([], [NET])}
    assert '~ bind_address    = "127.0.0.1" -> "0.0.0.0"' in text


def test_closing_what_svcctl_widened_goes_back_to_the_servers_own_address() -> None:
    fields, _ = engine_plan(OBSERVED["widened"][0], [])
    assert fields == {"bind_address": ("0.0.0.0", "127.0.0.1"), "client_networks": ([NET], [])}


def test_what_the_old_svcctl_narrowed_is_given_back() -> None:
    fields, text = engine_plan(OBSERVED["narrowed-by-old-svcctl"][0], [])
    assert fields == {"bind_address": ("127.0.0.1", "0.0.0.0")}
    assert '~ bind_address = "127.0.0.1" -> "0.0.0.0"' in text


def test_a_server_svcctls_file_opened_to_all_is_closed() -> None:
    fields, _ = engine_plan(OBSERVED["svcctl-open-to-all"][0], [])
    assert fields == {"bind_address": ("0.0.0.0", "127.0.0.1"), "client_networks": (["0.0.0.0/0"], [])}


def test_a_fresh_install_plans_debians_address_or_widens_it() -> None:
    not_installed = {"installed": False, "active": False, "enabled": False, "conf": None, "server": None}
    for networks, wanted in (([], "127.0.0.1"), ([NET], "0.0.0.0")):
        fields, _ = engine_plan(not_installed, networks)
        assert fields["bind_address"] == (None, wanted)
