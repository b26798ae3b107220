"""Each Debian release's observe output, recorded on the lab with examples/fleet applied, read as the planner does.

The recordings, observe_recordings/releases/<codename>.json (bullseye, bookworm, trixie), are written by

    .venv/bin/python scripts/record-release-reports.py

run as root with the lab up and its release hosts booted (the script's docstring says how it records), and
read with no host: `.venv/bin/pytest -m 'not e2e' tests/unit/test_release_recordings.py`. Record again when
an engine's observe part or a release changes, and review the diff. Each file holds one
node's whole observe document as it would be with the fleet alone on the node, under the example's names
(the run's token taken out, other environments' objects dropped), plus the key the apply derived its
passwords from and the run's token: the recorded verifiers are those of the passwords derived for the
run's names (`binding/shop/ledger-13-<token>/0`), so that is the password source the drivers are given.

For each release: the whole document passes the strict check (`reported.observation`, the planner's entry
for a node's output) unchanged; each driver's parse gives its engine at the release's version and the
fleet's instance and binding on that node, the binding's credentials current for the derived passwords and
stale for any others; the planner marks them the fleet's; the release fragment names the release and its
python3; and `versions.node_offers` gives what the release offers each engine (PostgreSQL 13 on bullseye
only, and so on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from svcctl.drivers import drivers, reported
from svcctl.drivers.base import Observed, PasswordFor
from svcctl.drivers.versions import node_offers, offered_versions, release_name
from svcctl.model.placement import EngineOffer, NodeOffers
from svcctl.plan.observe import parse_node
from svcctl.secrets import derive_password
from svcctl.state import Kind, Resource, State

RECORDINGS = Path(__file__).parent / "observe_recordings" / "releases"
ENVIRONMENT = "fleet"
NETWORK = "10.211.37.0/24"
NO_LISTS = "no apt package lists yet: what is installed and what the release ships"


class Release(NamedTuple):
    """What the lab's host of one release runs and was given by the fleet."""

    node: str
    address: str
    name: str  # as versions.release_name says it
    python: str  # major.minor
    postgres: str
    mysql: str
    redis: str
    lists: bool  # whether apt had package lists when recorded
    mysql_role: str = "readwrite"


RELEASES = {
    "bullseye": Release("lab-bullseye", "10.211.37.201", "Debian 11 bullseye", "3.9", "13", "10.5", "6", False),
    "bookworm": Release("lab-1", "10.211.37.11", "Debian 12 bookworm", "3.11", "15", "10.11", "7", True),
    "trixie": Release("lab-trixie", "10.211.37.203", "Debian 13 trixie", "3.13", "17", "11.8", "8", False, "readonly"),
}


def _case(release: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{release}.json").read_text())  # type: ignore[no-any-return]


def _password_for(case: dict[str, Any], *, key: str | None = None, run_names: bool = True) -> PasswordFor:
    """The passwords the recording's apply derived: from its key, for the run's instance names (`<name>-<token>`).

    With `run_names=False`, the passwords of the stable names instead, which no apply of the recording set.
    """
    secret = (key or case["key"]).encode()

    def password_for(purpose: str) -> Any:
        parts = purpose.split("/")  # binding/<app>/<instance>/<rotation>, instance/<instance>/admin
        where = 2 if parts[0] == "binding" else 1
        if run_names:
            parts[where] = f"{parts[where]}-{case['token']}"
        return derive_password(secret, "/".join(parts))

    return password_for


def _observed(case: dict[str, Any]) -> Observed:
    node = case["node"]
    return reported.observation(node, reported.decode(node, json.dumps(case["report"])))


def _parsed(case: dict[str, Any], password_for: PasswordFor) -> list[Resource]:
    observed = _observed(case)
    return [
        r for engine, d in drivers().items() for r in d.parse(observed.node, observed.engines[engine], password_for)
    ]


def _names(release: str) -> dict[str, str]:
    """engine -> the fleet's instance of that engine on the release's node (the example's name)."""
    r = RELEASES[release]
    return {
        "postgres": f"ledger-{r.postgres}",
        "mysql": f"stock-{r.mysql.replace('.', '')}",
        "redis": f"cache-{r.redis}",
    }


def _expected(release: str) -> dict[str, dict[str, Any]]:
    """Address -> attributes of everything the drivers must find on the release's node (engines: the part
    every engine has; instances without size_mb, which is what the node's disk says)."""
    r = RELEASES[release]
    pg, my, rd = (_names(release)[e] for e in ("postgres", "mysql", "redis"))
    pg_id, my_id, rd_id = (n.replace("-", "_") for n in (pg, my, rd))
    local = ["127.0.0.1", "::1"] if r.redis == "6" else ["127.0.0.1", "-::1"]  # Redis 6 has no `-`
    return {
        f"engine.{r.node}.postgres": {"installed": True, "version": r.postgres, "running": True, "enabled": True},
        f"instance.{pg}": {"engine": "postgres", "major_version": r.postgres, "database": pg_id,
                           "owner": f"{pg_id}_owner", "connections": 20, "storage_mb": 256},
        f"binding.shop.{pg}": {"engine": "postgres", "role": "readwrite", "rotation": 0, "user": f"sv_shop_{pg_id}_r0",
                               "credentials": "current", "connections": 20},
        f"engine.{r.node}.mysql": {"installed": True, "version": r.mysql, "running": True, "enabled": True},
        f"instance.{my}": {"engine": "mysql", "major_version": r.mysql, "database": my_id, "connections": 20,
                           "storage_mb": 256},
        f"binding.shop.{my}": {"engine": "mysql", "role": r.mysql_role, "rotation": 0, "user": f"sv_shop_{my_id}_r0",
                               "credentials": "current", "connections": 20,
                               "hosts": ["10.211.37.0/255.255.255.0", "127.0.0.1", "localhost"]},
        f"engine.{r.node}.redis": {"installed": True, "version": r.redis},
        f"instance.{rd}": {"engine": "redis", "major_version": r.redis, "port": 6380, "memory_mb": 16,
                           "eviction": "allkeys-lru", "connections": 20, "bind": [*local, r.address],
                           "running": True, "enabled": True},
        f"binding.shop.{rd}": {"engine": "redis", "role": "readwrite", "rotation": 0, "user": f"sv_shop_{rd_id}_r0",
                               "credentials": "current"},
    }  # fmt: skip


ENGINE_ATTRS = ("installed", "version", "running", "enabled")


def _comparable(resources: list[Resource]) -> dict[str, dict[str, Any]]:
    """What _expected speaks of: engines' common attributes, instances without their size."""
    out: dict[str, dict[str, Any]] = {}
    for r in resources:
        attrs = dict(r.attrs)
        if r.kind is Kind.ENGINE:
            attrs = {k: attrs[k] for k in ENGINE_ATTRS if k in attrs}
        attrs.pop("size_mb", None)
        out[r.address] = attrs
    return out


def test_there_is_one_recording_per_release_of_its_node() -> None:
    assert sorted(p.name for p in RECORDINGS.iterdir()) == ["bookworm.json", "bullseye.json", "trixie.json"]
    for release, expected in RELEASES.items():
        case = _case(release)
        assert (case["release"], case["node"]) == (release, expected.node)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_the_whole_report_passes_the_strict_check_unchanged(release: str) -> None:
    case = _case(release)
    observed = _observed(case)
    assert dict(observed.engines) == case["report"]["engines"]
    assert dict(observed.registry) == case["report"]["registry"]
    assert sorted(observed.engines) == ["mysql", "postgres", "redis", "release"]
    assert [e for e, data in observed.engines.items() if "error" in data] == []


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_each_driver_finds_its_engine_at_the_release_version_and_the_fleets_objects(release: str) -> None:
    case = _case(release)
    parsed = _parsed(case, _password_for(case))
    assert _comparable(parsed) == _expected(release)
    sizes = {r.engine: r.attrs["size_mb"] for r in parsed if r.kind is Kind.INSTANCE and r.engine != "redis"}
    assert sorted(sizes) == ["mysql", "postgres"]
    assert all(isinstance(size, int) and size >= 0 for size in sizes.values())


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_credentials_are_current_only_for_the_passwords_the_apply_derived(release: str) -> None:
    case = _case(release)
    for password_for in (
        _password_for(case, key="another-key-of-thirty-two-bytes!"),
        _password_for(case, run_names=False),
    ):
        credentials = {
            r.address: r.attrs["credentials"] for r in _parsed(case, password_for) if "credentials" in r.attrs
        }
        assert credentials == dict.fromkeys((a for a in _expected(release) if a.startswith("binding.")), "stale")


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_the_planner_marks_the_fleets_objects_its_own_and_another_environments_not(release: str) -> None:
    case = _case(release)
    observed = _observed(case)
    ours = {r.address: (r.managed, r.owner) for r in parse_node(observed, ENVIRONMENT, _password_for(case))}
    assert ours == dict.fromkeys(_expected(release), (True, None))
    theirs = {r.address: (r.managed, r.owner) for r in parse_node(observed, "other", _password_for(case))}
    assert theirs == {a: (True, None) if a.startswith("engine.") else (False, ENVIRONMENT) for a in _expected(release)}


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_the_release_fragment_names_the_release_and_its_python(release: str) -> None:
    expected = RELEASES[release]
    fragment = _observed(_case(release)).engines[reported.RELEASE]
    version_id = expected.name.split()[1]
    assert fragment["os"] == {"id": "debian", "version_id": version_id, "version_codename": release}
    assert release_name(fragment) == expected.name
    assert fragment["python"].rsplit(".", 1)[0] == expected.python
    assert fragment["lists"] is expected.lists
    assert sorted(fragment["packages"]) == ["mariadb-server", f"postgresql-{expected.postgres}", "redis-server"]


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_the_release_offers_its_own_versions(release: str) -> None:
    case = _case(release)
    expected = RELEASES[release]
    observed = _observed(case)
    state = State.of(_parsed(case, _password_for(case)))
    versions = {"postgres": expected.postgres, "mysql": expected.mysql, "redis": expected.redis}
    assert node_offers(expected.node, observed.engines[reported.RELEASE], state) == NodeOffers(
        release=expected.name,
        engines={e: EngineOffer(offered=frozenset({v}), running=v) for e, v in versions.items()},
        note="" if expected.lists else NO_LISTS,
    )


def test_each_version_is_offered_on_its_own_release_only() -> None:
    offered: dict[str, dict[str, list[str]]] = {}
    for release in sorted(RELEASES):
        packages = _observed(_case(release)).engines[reported.RELEASE]["packages"]
        for engine, versions in offered_versions(packages).items():
            for version in versions:
                offered.setdefault(engine, {}).setdefault(version, []).append(release)
    assert offered == {
        "postgres": {"13": ["bullseye"], "15": ["bookworm"], "17": ["trixie"]},
        "mysql": {"10.5": ["bullseye"], "10.11": ["bookworm"], "11.8": ["trixie"]},
        "redis": {"6": ["bullseye"], "7": ["bookworm"], "8": ["trixie"]},
    }


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_no_password_run_name_or_verifier_gets_out(release: str) -> None:
    case = _case(release)
    text = (RECORDINGS / f"{release}.json").read_text()
    purposes = [f"binding/shop/{name}/0" for name in _names(release).values()]
    purposes += [f"instance/{name}/admin" for name in _names(release).values()]
    for password_for in (_password_for(case), _password_for(case, run_names=False)):
        assert [p for p in purposes if password_for(p).reveal() in text] == []
    assert case["token"] not in json.dumps(case["report"])
    parsed = json.dumps([r.model_dump(mode="json") for r in _parsed(case, _password_for(case))])
    assert "SCRAM-SHA-256" not in parsed and "verifier" not in parsed
    engines = case["report"]["engines"]
    hashes = [u["authentication_string"] for u in engines["mysql"]["users"] if u["authentication_string"]]
    hashes += [h for i in engines["redis"]["instances"].values() for u in i["users"] for h in u["hashes"]]
    assert len(hashes) == 4  # the MariaDB user's three hosts and the Redis user
    assert [h for h in hashes if h in parsed] == []
