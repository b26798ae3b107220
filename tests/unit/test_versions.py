"""Versions on the nodes without a host: the release fragment's parsers (loaded from the shipped file), the
release report's schema, what a node offers each engine, and which PostgreSQL cluster a major uses."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from svcctl.drivers import observe_script, reported
from svcctl.drivers.versions import (
    DEBIAN_SHIPS,
    ClusterChoice,
    PgCluster,
    cluster_for,
    cluster_plan,
    clusters_of,
    node_offers,
    release_name,
)
from svcctl.model.placement import EngineOffer
from svcctl.state import Kind, Resource, State

SCRIPT = Path(__file__).resolve().parents[2] / "svcctl" / "drivers" / "host" / "observe_release.py"

# `LC_ALL=C apt-cache policy mariadb-server redis-server postgresql-10 ... postgresql-40` on Debian 12 with
# package lists (postgresql-9.1 is a name some package refers to: no candidate)
POLICY_WITH_LISTS = """\
mariadb-server:
  Installed: (none)
  Candidate: 1:10.11.19-0+deb12u1
  Version table:
     1:10.11.19-0+deb12u1 500
        500 http://archive.example bookworm-security/main amd64 Packages
redis-server:
  Installed: (none)
  Candidate: 5:7.0.15-1~deb12u10
  Version table:
     5:7.0.15-1~deb12u10 500
        500 http://archive.example bookworm-security/main amd64 Packages
postgresql-9.1:
  Installed: (none)
  Candidate: (none)
  Version table:
postgresql-15:
  Installed: 15.18-0+deb12u1
  Candidate: 15.20-0+deb12u1
  Version table:
     15.20-0+deb12u1 500
        500 http://archive.example bookworm-security/main amd64 Packages
 *** 15.18-0+deb12u1 500
        100 /var/lib/dpkg/status
postgresql-17:amd64:
  Installed: (none)
  Candidate: 17.2-1
"""

# the same on the lab's Debian 12 hosts: every engine installed, apt's lists emptied after the image was built
POLICY_NO_LISTS = """\
mariadb-server:
  Installed: 1:10.11.19-0+deb12u1
  Candidate: 1:10.11.19-0+deb12u1
  Version table:
 *** 1:10.11.19-0+deb12u1 100
        100 /var/lib/dpkg/status
redis-server:
  Installed: 5:7.0.15-1~deb12u10
  Candidate: 5:7.0.15-1~deb12u10
  Version table:
 *** 5:7.0.15-1~deb12u10 100
        100 /var/lib/dpkg/status
postgresql-15:
  Installed: 15.20-0+deb12u1
  Candidate: 15.20-0+deb12u1
  Version table:
 *** 15.20-0+deb12u1 100
        100 /var/lib/dpkg/status
"""


def _fragment(sh: Any = None) -> dict[str, Any]:
    """The shipped fragment's globals, `sh` (the host library's) stubbed."""
    namespace: dict[str, Any] = {}
    exec(compile(SCRIPT.read_text(), str(SCRIPT), "exec"), namespace)
    namespace["sh"] = sh  # looked up when called
    namespace["cached"] = lambda name, key, compute, valid: compute()  # never this machine's observe cache
    return namespace


def test_the_fragment_stays_python_3_9_and_is_assembled() -> None:
    source = SCRIPT.read_text()
    ast.parse(source, feature_version=(3, 9))
    assert "datetime.UTC" not in source and not re.search(r"zip\([^)]*strict=", source)
    assert "def observe_release():" in observe_script()


def test_policy_output_is_parsed_into_installed_and_candidate() -> None:
    parse = _fragment()["_release_parse_policy"]
    assert parse(POLICY_WITH_LISTS) == {
        "mariadb-server": {"installed": None, "candidate": "1:10.11.19-0+deb12u1"},
        "redis-server": {"installed": None, "candidate": "5:7.0.15-1~deb12u10"},
        "postgresql-9.1": {"installed": None, "candidate": None},
        "postgresql-15": {"installed": "15.18-0+deb12u1", "candidate": "15.20-0+deb12u1"},
    }  # another architecture's stanza (postgresql-17:amd64) is not this node's offer


def test_observe_release_asks_apt_once_in_the_c_locale() -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def sh(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        calls.append((argv, env))
        return 0, POLICY_NO_LISTS, ""

    report = _fragment(sh)["observe_release"]()
    assert len(calls) == 1
    assert calls[0][0][:2] == ["apt-cache", "policy"] and calls[0][1]["LC_ALL"] == "C"
    assert set(report) == {"os", "python", "lists", "packages"}
    assert re.fullmatch(r"3\.[0-9]+\.[0-9]+", report["python"])
    assert reported.release_report("n", report)["packages"]["postgresql-15"]["installed"] == "15.20-0+deb12u1"


def test_no_apt_cache_means_no_package_data() -> None:
    report = _fragment(lambda argv, env, timeout: (127, "", "No such file"))["observe_release"]()
    assert report["packages"] is None


def test_os_release_is_read_with_quotes_removed(tmp_path: Path) -> None:
    fragment = _fragment()
    os_release = tmp_path / "os-release"
    os_release.write_text(
        'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\n'
    )
    fragment["_RELEASE_FILES"] = (str(tmp_path / "missing"), str(os_release))
    assert fragment["_release_os"]() == {"id": "debian", "version_id": "13", "version_codename": "trixie"}
    fragment["_RELEASE_FILES"] = (str(tmp_path / "missing"),)
    assert fragment["_release_os"]() == {"id": None, "version_id": None, "version_codename": None}


# --- what a node offers ---------------------------------------------------------------------------------------


def _release(codename: str, number: str, policy: str, *, lists: bool) -> dict[str, Any]:
    raw = {
        "os": {"id": "debian", "version_id": number, "version_codename": codename},
        "python": "3.11.2",
        "lists": lists,
        "packages": _fragment()["_release_parse_policy"](policy),
    }
    return reported.release_report("lab-1", raw)


def _engines(node: str, **versions: str) -> State:
    return State.of(
        Resource(kind=Kind.ENGINE, name=f"{node}.{e}", node=node, engine=e, attrs={"installed": True, "version": v})
        for e, v in versions.items()
    )


def test_offers_from_package_lists() -> None:
    offers = node_offers("lab-1", _release("bookworm", "12", POLICY_WITH_LISTS, lists=True), _engines("lab-1"))
    assert offers is not None
    assert offers.release == "Debian 12 bookworm"
    assert offers.engines == {
        "postgres": EngineOffer(offered=frozenset({"15"})),
        "mysql": EngineOffer(offered=frozenset({"10.11"})),
        "redis": EngineOffer(offered=frozenset({"7"})),
    }


def test_without_lists_a_debian_node_offers_what_is_installed_and_what_its_release_ships() -> None:
    installed = _engines("lab-1", postgres="15", mysql="10.11", redis="7")
    offers = node_offers("lab-1", _release("bookworm", "12", POLICY_NO_LISTS, lists=False), installed)
    assert offers is not None and "no apt package lists" in offers.note
    assert offers.engines["postgres"] == EngineOffer(offered=frozenset({"15"}), running="15")
    assert offers.engines["redis"] == EngineOffer(offered=frozenset({"7"}), running="7")
    bare = node_offers("lab-t", _release("trixie", "13", "", lists=False), State())
    assert bare is not None
    assert {e: o.offered for e, o in bare.engines.items()} == {
        "postgres": frozenset({"17"}),
        "mysql": frozenset({"11.8"}),
        "redis": frozenset({"8"}),
    }


def test_an_unknown_release_without_lists_has_no_offer_data() -> None:
    raw = reported.release_report("n", {"os": {"id": "arch"}, "python": "3.12.1", "lists": False, "packages": {}})
    offers = node_offers("n", raw, State())
    assert offers is not None and offers.release == "arch"
    assert all(o.offered is None for o in offers.engines.values())


def test_a_node_without_a_release_report_has_no_offers() -> None:
    assert node_offers("n", None, State()) is None
    assert release_name(None) == "unknown release"


def test_the_table_of_debian_releases() -> None:
    assert DEBIAN_SHIPS["bullseye"] == {"postgres": "13", "mysql": "10.5", "redis": "6"}
    assert DEBIAN_SHIPS["bookworm"] == {"postgres": "15", "mysql": "10.11", "redis": "7"}
    assert DEBIAN_SHIPS["trixie"] == {"postgres": "17", "mysql": "11.8", "redis": "8"}


# --- the release report's schema ---------------------------------------------------------------------------------


GOOD: dict[str, Any] = {
    "os": {"id": "debian", "version_id": "12", "version_codename": "bookworm"},
    "python": "3.11.2",
    "lists": False,
    "packages": {"postgresql-15": {"installed": "15.20-0+deb12u1", "candidate": "15.20-0+deb12u1"}},
}


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"os": {"id": "Debian GNU/Linux"}}, "os.id"),
        ({"os": {"version_codename": "trixie\n"}}, "os.version_codename"),
        ({"python": 3.11}, "python"),
        ({"lists": 1}, "lists"),
        ({"packages": {"mariadb-server": {"candidate": "1:10a.11-1"}}}, "no series svcctl can compare"),
        ({"packages": {f"postgresql-{n}": {} for n in range(65)}}, "packages"),
    ],
    ids=["id-with-spaces", "codename-newline", "python-a-number", "lists-a-number", "no-series", "too-many"],
)
def test_a_malformed_release_report_is_refused(patch: dict[str, Any], fragment: str) -> None:
    with pytest.raises(reported.InvalidReport) as caught:
        reported.release_report("lab-1", {**GOOD, **patch})
    assert "node lab-1 reported release data" in caught.value.message
    assert fragment in caught.value.message


def test_a_document_without_a_release_still_observes() -> None:
    checked = reported.observation("lab-1", {"registry": {}, "engines": {}})
    assert reported.RELEASE not in checked.engines
    checked = reported.observation("lab-1", {"registry": {}, "engines": {"release": GOOD}})
    assert checked.engines[reported.RELEASE]["os"]["version_codename"] == "bookworm"


# --- several PostgreSQL majors on one node: which cluster and port ---------------------------------------------


def test_the_first_major_gets_5432_and_the_next_the_next_free_port() -> None:
    assert cluster_for("15", []) == ClusterChoice("15", "main", 5432, exists=False)
    main15 = PgCluster("15", "main", 5432)
    assert cluster_for("15", [main15]) == ClusterChoice("15", "main", 5432, exists=True)
    assert cluster_for("17", [main15]) == ClusterChoice("17", "main", 5433, exists=False)
    # a gap is reused, as pg_createcluster does; an existing cluster keeps whatever port it has
    assert cluster_for("17", [main15, PgCluster("16", "main", 5434)]).port == 5433
    assert cluster_for("16", [main15, PgCluster("16", "main", 5434)]) == ClusterChoice("16", "main", 5434, True)


def test_another_clusters_name_does_not_count_as_main_but_takes_its_port() -> None:
    assert cluster_for("15", [PgCluster("15", "reporting", 5432)]) == ClusterChoice("15", "main", 5433, False)


def test_new_majors_are_given_ports_lowest_major_first_without_sharing_one() -> None:
    plan = cluster_plan(["17", "13", "15", "17"], [PgCluster("15", "main", 5432)])
    assert plan == {
        "13": ClusterChoice("13", "main", 5433, exists=False),
        "15": ClusterChoice("15", "main", 5432, exists=True),
        "17": ClusterChoice("17", "main", 5434, exists=False),
    }


def test_clusters_come_from_the_postgres_report() -> None:
    report = {
        "clusters": [{"version": "15", "name": "main", "port": 5432}, {"version": "17", "name": "main", "port": 5433}]
    }
    assert clusters_of(report) == [PgCluster("15", "main", 5432), PgCluster("17", "main", 5433)]


# --- through observe, as `svcctl plan` does it (only SSH faked) ------------------------------------------------


def test_observe_keeps_each_nodes_checked_release_and_a_release_error_fails_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from svcctl.plan import observe as observe_module
    from svcctl.plan.observe import NodesUnobservable, observe_nodes
    from tests.unit.test_reported import ENV, FakeSession, _password_for, _printed, _quiet_document

    documents: dict[str, Any] = {}

    def run_on_nodes(targets: Any, fn: Any, **_: Any) -> dict[str, Any]:
        return {t.name: fn(FakeSession(t.name, _printed(documents[t.name]))) for t in targets}

    monkeypatch.setattr(observe_module, "run_on_nodes", run_on_nodes)
    documents["lab-1"] = {**_quiet_document()}
    documents["lab-1"]["engines"] = {**documents["lab-1"]["engines"], "release": GOOD}
    documents["lab-2"] = _quiet_document()
    seen = observe_nodes(ENV, "hostile", _password_for)
    assert seen.releases["lab-1"] is not None and seen.releases["lab-1"]["os"]["id"] == "debian"
    assert seen.releases["lab-2"] is None
    documents["lab-2"] = {**_quiet_document()}
    documents["lab-2"]["engines"] = {**documents["lab-2"]["engines"], "release": {"error": "OSError: boom"}}
    with pytest.raises(NodesUnobservable) as caught:
        observe_nodes(ENV, "hostile", _password_for)
    assert sorted(caught.value.failures) == ["lab-2"]
    assert "observing the release failed on the node" in caught.value.message


def test_debian_13s_mariadb_version_text_passes_the_schema() -> None:
    from tests.unit.test_reported import base_document

    raw = base_document()["engines"]["mysql"]
    raw["server"]["version"] = "11.8.9-MariaDB-0+deb13u1 from Debian"
    assert reported.engine_report("lab-trixie", "mysql", raw)["server"]["version"] == raw["server"]["version"]


def test_observing_again_asks_only_the_nodes_named_and_keeps_the_others_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from svcctl.plan import observe as observe_module
    from svcctl.plan.observe import Reuse, observe_nodes
    from tests.unit.test_reported import ENV, FakeSession, _password_for, _printed, _quiet_document

    asked: list[str] = []
    documents = {"lab-1": {**_quiet_document()}, "lab-2": _quiet_document()}
    documents["lab-1"]["engines"] = {**documents["lab-1"]["engines"], "release": GOOD}

    def run_on_nodes(targets: Any, fn: Any, **_: Any) -> dict[str, Any]:
        asked.extend(t.name for t in targets)
        return {t.name: fn(FakeSession(t.name, _printed(documents[t.name]))) for t in targets}

    monkeypatch.setattr(observe_module, "run_on_nodes", run_on_nodes)
    first = observe_nodes(ENV, "hostile", _password_for)
    assert sorted(asked) == ["lab-1", "lab-2"] and sorted(first.by_node) == ["lab-1", "lab-2"]
    asked.clear()
    documents["lab-1"] = {"broken": True}  # lab-1 is not asked again: its earlier report stands
    again = observe_nodes(ENV, "hostile", _password_for, reuse=Reuse(first, frozenset({"lab-2"})))
    assert asked == ["lab-2"]
    assert again.by_node["lab-1"] == first.by_node["lab-1"] and again.releases["lab-1"] == first.releases["lab-1"]
    assert {r.address for r in again.state} == {r.address for r in first.state}
