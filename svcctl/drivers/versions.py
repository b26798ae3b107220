"""Versions on the nodes: what each node's package sources offer each engine, and, for PostgreSQL, which
cluster (and port) an instance of a major uses.

The release fragment (host/observe_release.py) reports raw facts: os-release, python3's version, whether
apt has package lists, and each engine package's installed and candidate version. This module turns them,
checked (`svcctl.drivers.reported`), into the plain data placement reads (`svcctl.model.placement.NodeOffers`):

- PostgreSQL: every `postgresql-<major>` package with a candidate is an offered major;
- MariaDB: the major.minor of mariadb-server's candidate; Redis: the major of redis-server's candidate.

A node whose apt has no package lists yet (an image cleaned after its build) knows only what is installed;
apply runs `apt-get update` before installing, so such a node also offers what its Debian release ships
(`DEBIAN_SHIPS`). A node of another release without lists has no offer data for the engines it lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from svcctl.drivers.mysql.driver import major_minor
from svcctl.drivers.redis.driver import major_of
from svcctl.model.placement import EngineOffer, NodeOffers
from svcctl.state import State

DEBIAN_SHIPS: dict[str, dict[str, str]] = {
    "bullseye": {"postgres": "13", "mysql": "10.5", "redis": "6"},
    "bookworm": {"postgres": "15", "mysql": "10.11", "redis": "7"},
    "trixie": {"postgres": "17", "mysql": "11.8", "redis": "8"},
}
"""What each Debian release's own archive ships, by codename: PostgreSQL major, MariaDB series, Redis major."""

_NAMES = {"debian": "Debian", "ubuntu": "Ubuntu"}
_PG_PREFIX = "postgresql-"


def release_name(release: Mapping[str, Any] | None) -> str:
    """`Debian 12 bookworm` from the checked os-release fields; `unknown release` without them."""
    os_release = (release or {}).get("os") or {}
    words = [_NAMES.get(str(os_release.get("id")), os_release.get("id"))]
    words += [os_release.get("version_id"), os_release.get("version_codename")]
    shown = " ".join(str(w) for w in words if w)
    return shown or "unknown release"


def offered_versions(packages: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """Engine -> the versions apt's candidates offer (PostgreSQL: one major per `postgresql-<major>`)."""
    out: dict[str, set[str]] = {"postgres": set(), "mysql": set(), "redis": set()}
    for package, offer in packages.items():
        candidate = offer.get("candidate")
        if not candidate:
            continue
        if package.startswith(_PG_PREFIX):
            out["postgres"].add(package[len(_PG_PREFIX) :])
        elif package == "mariadb-server":
            out["mysql"].add(major_minor(candidate))
        elif package == "redis-server":
            series = major_of(candidate)
            if series:
                out["redis"].add(series)
    return out


def node_offers(node: str, release: Mapping[str, Any] | None, observed: State) -> NodeOffers | None:
    """What `node` offers each engine, from its checked release report and the observed engines; None
    when the report has no release (nothing to filter by)."""
    if not release or "error" in release:
        return None
    name = release_name(release)
    packages = release.get("packages")
    os_release = release.get("os") or {}
    shipped = DEBIAN_SHIPS.get(str(os_release.get("version_codename"))) if os_release.get("id") == "debian" else None
    offered = offered_versions(packages) if packages is not None else None
    lists = bool(release.get("lists"))
    engines: dict[str, EngineOffer] = {}
    for engine in ("postgres", "mysql", "redis"):
        engine_resource = observed.get(f"engine.{node}.{engine}")
        version = (engine_resource.attrs.get("version") if engine_resource is not None else None) or None
        running = str(version) if version is not None else None
        versions: set[str] | None = set(offered[engine]) if offered is not None else None
        if versions is not None and not lists:
            if shipped is not None:
                versions.add(shipped[engine])
            elif not versions and running is None:
                versions = None  # no lists, an unknown release and nothing installed: not known
        engines[engine] = EngineOffer(offered=frozenset(versions) if versions is not None else None, running=running)
    note = "" if lists or packages is None else "no apt package lists yet: what is installed and what the release ships"
    return NodeOffers(release=name, engines=engines, note=note)


def all_offers(releases: Mapping[str, Mapping[str, Any] | None], observed: State) -> dict[str, NodeOffers]:
    """`node_offers` of every observed node that reported its release."""
    out: dict[str, NodeOffers] = {}
    for node, release in sorted(releases.items()):
        offers = node_offers(node, release, observed)
        if offers is not None:
            out[node] = offers
    return out


# --- several PostgreSQL majors on one node (designed; apply makes one cluster per node today) ---------------

PG_FIRST_PORT = 5432


@dataclass(frozen=True)
class PgCluster:
    """A Debian cluster `/etc/postgresql/<version>/<name>` and its port, as observe reports it."""

    version: str
    name: str
    port: int


@dataclass(frozen=True)
class ClusterChoice:
    """Where an instance of one major lives: the cluster `<major>/main`, on `port`; `exists` is False when
    apply would have to create it (`pg_createcluster <major> main --port <port>`)."""

    version: str
    name: str
    port: int
    exists: bool


def clusters_of(report: Mapping[str, Any]) -> list[PgCluster]:
    """The clusters in a checked postgres report."""
    return [PgCluster(str(c["version"]), str(c["name"]), int(c["port"])) for c in report.get("clusters", [])]


def cluster_for(major: str, clusters: Iterable[PgCluster]) -> ClusterChoice:
    """The cluster an instance of PostgreSQL `major` uses: `<major>/main` where it exists, else a new
    `<major>/main` on the lowest port from 5432 that no cluster of the node uses (as pg_createcluster picks).

    So the first major of a node gets 5432 and each further major the next free port; an instance keeps
    its cluster's port, so a binding's port is known at plan time.
    """
    known = list(clusters)
    for cluster in known:
        if cluster.version == major and cluster.name == "main":
            return ClusterChoice(major, "main", cluster.port, exists=True)
    used = {c.port for c in known}
    port = PG_FIRST_PORT
    while port in used:
        port += 1
    return ClusterChoice(major, "main", port, exists=False)


def cluster_plan(majors: Iterable[str], clusters: Iterable[PgCluster]) -> dict[str, ClusterChoice]:
    """`cluster_for` each wanted major, lowest major first, each new cluster taking its port before the next
    is chosen (two new majors never get one port)."""
    known = list(clusters)
    out: dict[str, ClusterChoice] = {}
    for major in sorted(set(majors), key=lambda v: tuple(int(p) for p in v.split("."))):
        choice = cluster_for(major, known)
        out[major] = choice
        if not choice.exists:
            known.append(PgCluster(choice.version, choice.name, choice.port))
    return out
