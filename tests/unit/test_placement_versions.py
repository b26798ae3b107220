"""Placement by version: nodes offer what their package sources offer (from observe); validate has no offers."""

from __future__ import annotations

from typing import Any

import pytest

from svcctl.model.placement import EngineOffer, NodeOffers, PlacementError, place
from svcctl.model.spec import Environment


def env_of(
    nodes: dict[str, Any], instances: dict[str, Any], pg_versions: tuple[str, ...] = ("13", "15", "17")
) -> Environment:
    return Environment.model_validate(
        {
            "nodes": nodes,
            "services": {
                "pg": {"engine": "postgres", "versions": list(pg_versions)},
                "my": {"engine": "mysql", "versions": ["10.5", "10.11", "11.8"]},
            },
            "plans": {
                "pg-small": {"service": "pg", "storage_mb": 512},
                "my-small": {"service": "my", "storage_mb": 512},
            },
            "instances": instances,
        }
    )


def node(storage: int = 4096, **labels: str) -> dict[str, Any]:
    return {"host": "h", "engines": ["postgres", "mysql"], "labels": labels, "capacity": {"storage_mb": storage}}


def debian(codename: str, pg: tuple[str, ...], mysql: str, *, pg_running: str | None = None) -> NodeOffers:
    number = {"bullseye": "11", "bookworm": "12", "trixie": "13"}[codename]
    return NodeOffers(
        release=f"Debian {number} {codename}",
        engines={
            "postgres": EngineOffer(offered=frozenset(pg), running=pg_running),
            "mysql": EngineOffer(offered=frozenset({mysql})),
        },
    )


BULLSEYE = debian("bullseye", ("13",), "10.5")
BOOKWORM = debian("bookworm", ("15",), "10.11")
TRIXIE = debian("trixie", ("17",), "11.8")
NODES = {"lab-1": node(), "lab-2": node(), "lab-3": node(storage=99999)}
OFFERS = {"lab-1": BOOKWORM, "lab-2": BOOKWORM, "lab-3": TRIXIE}


def test_the_offer_filter_comes_before_capacity() -> None:
    # lab-3 has by far the most room, but offers 17 only
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "15"}})
    assert place(env, {}, OFFERS) == {"orders-db": "lab-1"}
    assert place(env, {}) == {"orders-db": "lab-3"}  # validate: no offers, no filter


def test_the_default_version_is_the_services_highest() -> None:
    env = env_of({"lab-1": node(storage=99999), "lab-3": node()}, {"orders-db": {"plan": "pg-small"}})
    assert place(env, {}, {"lab-1": BOOKWORM, "lab-3": TRIXIE}) == {"orders-db": "lab-3"}
    env = env_of({"lab-1": node(storage=99999), "lab-3": node()}, {"orders-db": {"plan": "pg-small"}}, ("13", "15"))
    assert place(env, {}, {"lab-1": BOOKWORM, "lab-3": TRIXIE}) == {"orders-db": "lab-1"}


def test_offer_then_labels_then_capacity() -> None:
    nodes = {"lab-1": node(zone="a"), "lab-2": node(storage=9999, zone="b"), "lab-3": node(storage=99999, zone="b")}
    env = env_of(nodes, {"orders-db": {"plan": "pg-small", "version": "15", "placement": {"labels": {"zone": "b"}}}})
    assert place(env, {}, OFFERS) == {"orders-db": "lab-2"}


def test_a_node_without_offer_data_is_not_filtered() -> None:
    env = env_of({"lab-3": node(), "lab-9": node(storage=1000)}, {"orders-db": {"plan": "pg-small", "version": "15"}})
    assert place(env, {}, {"lab-3": TRIXIE}) == {"orders-db": "lab-9"}
    unknown = NodeOffers(release="unknown release", engines={"postgres": EngineOffer(offered=None)})
    assert place(env, {}, {"lab-3": unknown}) == {"orders-db": "lab-3"}


def test_a_pinned_node_that_does_not_offer_the_version_is_a_plan_error() -> None:
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "15", "node": "lab-3"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {}, OFFERS)
    assert caught.value.message == (
        "instance orders-db is pinned to node lab-3, which cannot take it: lab-3 (Debian 13 trixie) offers "
        "PostgreSQL 17; orders-db wants 15. Nodes that offer PostgreSQL 15: lab-1, lab-2. Pin it to a node "
        "that offers 15, remove node: to let svcctl choose, or set its version: to one lab-3 offers."
    )
    assert place(env, {}) == {"orders-db": "lab-3"}  # validate stays SSH-free and says nothing of versions


def test_a_pinned_error_says_when_no_node_offers_the_version() -> None:
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "13", "node": "lab-1"}})
    with pytest.raises(PlacementError, match=r"offers PostgreSQL 15; orders-db wants 13\. No declared node "):
        place(env, {}, OFFERS)
    with pytest.raises(PlacementError, match=r"Nodes that offer PostgreSQL 13: lab-2\. "):
        place(env, {}, {**OFFERS, "lab-2": BULLSEYE})


def test_an_existing_instance_whose_node_does_not_offer_its_version_is_a_plan_error() -> None:
    # orders-db exists on lab-1 (bookworm, PostgreSQL 15 running); the YAML now asks for 17 (the default)
    running = {**OFFERS, "lab-1": debian("bookworm", ("15",), "10.11", pg_running="15")}
    env = env_of(NODES, {"orders-db": {"plan": "pg-small"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {"orders-db": "lab-1"}, running)
    assert caught.value.message == (
        "instance orders-db exists on node lab-1, which cannot give it the version it asks for: lab-1 (Debian "
        "12 bookworm) offers PostgreSQL 15; orders-db wants 17. svcctl never replaces or upgrades an instance "
        'because its version changed: set version: "15" on instance orders-db, or create a new instance at 17 '
        "(nodes that offer PostgreSQL 17: lab-3) and move the data yourself."
    )
    # its sources offer 17 too (the PostgreSQL project's repository, say): still no upgrade
    both = {**running, "lab-1": debian("bookworm", ("15", "17"), "10.11", pg_running="15")}
    with pytest.raises(PlacementError) as caught:
        place(env, {"orders-db": "lab-1"}, both)
    message = caught.value.message
    assert "lab-1 (Debian 12 bookworm) runs PostgreSQL 15; orders-db wants 17 (svcctl neither upgrades" in message
    assert 'set version: "15" on instance orders-db' in message
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "15"}})
    assert place(env, {"orders-db": "lab-1"}, running) == {"orders-db": "lab-1"}


def test_an_existing_instance_on_a_node_that_lost_the_offer_says_what_it_offers() -> None:
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "15"}})
    with pytest.raises(PlacementError, match=r"lab-3 \(Debian 13 trixie\) offers PostgreSQL 17; orders-db wants 15"):
        place(env, {"orders-db": "lab-3"}, OFFERS)


def test_a_node_running_another_version_does_not_take_a_new_instance() -> None:
    # lab-1's sources offer 15 and 17 (say from the PostgreSQL project's repository) but it runs 15
    both = {"lab-1": debian("bookworm", ("15", "17"), "10.11", pg_running="15"), "lab-3": TRIXIE}
    env = env_of({"lab-1": node(storage=99999), "lab-3": node()}, {"reports-db": {"plan": "pg-small", "version": "17"}})
    assert place(env, {}, both) == {"reports-db": "lab-3"}
    env = env_of({"lab-1": node()}, {"reports-db": {"plan": "pg-small", "version": "17"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {}, both)
    assert caught.value.message == (
        "no node can take instance reports-db (postgres, plan pg-small):\n"
        "  lab-1: runs PostgreSQL 15, not 17 (Debian 12 bookworm)\n"
        "Add a node that offers PostgreSQL 17, set version: to one a node offers, add capacity, or relax "
        "placement.labels."
    )


def test_instances_placed_together_share_their_engines_version() -> None:
    # a fresh node offering 15 and 17: the first instance (by name) decides, the second goes elsewhere
    fresh = debian("bookworm", ("15", "17"), "10.11")
    env = env_of(
        {"lab-1": node(storage=99999), "lab-3": node()},
        {"aa": {"plan": "pg-small", "version": "15"}, "bb": {"plan": "pg-small", "version": "17"}},
    )
    assert place(env, {}, {"lab-1": fresh, "lab-3": TRIXIE}) == {"aa": "lab-1", "bb": "lab-3"}


def test_mariadb_is_filtered_by_its_series() -> None:
    env = env_of(NODES, {"shop-db": {"plan": "my-small", "version": "11.8"}})
    assert place(env, {}, OFFERS) == {"shop-db": "lab-3"}
    with pytest.raises(PlacementError, match=r"lab-1: offers MariaDB 10\.11, not 11\.8 \(Debian 12 bookworm\)"):
        place(env, {}, {"lab-1": BOOKWORM, "lab-2": BOOKWORM, "lab-3": BOOKWORM})


def test_no_offer_anywhere_lists_each_node_with_its_release() -> None:
    env = env_of(NODES, {"orders-db": {"plan": "pg-small", "version": "13"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {}, OFFERS)
    assert caught.value.message == (
        "no node can take instance orders-db (postgres, plan pg-small):\n"
        "  lab-1: offers PostgreSQL 15, not 13 (Debian 12 bookworm)\n"
        "  lab-2: offers PostgreSQL 15, not 13 (Debian 12 bookworm)\n"
        "  lab-3: offers PostgreSQL 17, not 13 (Debian 13 trixie)\n"
        "Add a node that offers PostgreSQL 13, set version: to one a node offers, add capacity, or relax "
        "placement.labels."
    )


def test_offers_found_without_package_lists_say_so() -> None:
    bare = NodeOffers(
        release="Debian 12 bookworm",
        engines={"postgres": EngineOffer(offered=frozenset({"15"}))},
        note="no apt package lists yet: what is installed and what the release ships",
    )
    env = env_of({"lab-1": node()}, {"orders-db": {"plan": "pg-small", "version": "17", "node": "lab-1"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {}, {"lab-1": bare})
    assert caught.value.message.startswith(
        "instance orders-db is pinned to node lab-1, which cannot take it: lab-1 (Debian 12 bookworm; no apt "
        "package lists yet: what is installed and what the release ships) offers PostgreSQL 15; orders-db wants 17."
    )
