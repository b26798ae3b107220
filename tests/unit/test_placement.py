"""Placement: deterministic, most free capacity first, existing instances stay, clear refusals."""

from __future__ import annotations

from typing import Any

import pytest

from svcctl.model.placement import PlacementError, demand_of, place
from svcctl.model.spec import Environment


def env_of(nodes: dict[str, Any], instances: dict[str, Any]) -> Environment:
    """An environment with the usual catalogue: pg-small (512 MB storage) and cache-64 (64 MB memory)."""
    return Environment.model_validate(
        {
            "nodes": nodes,
            "services": {
                "pg": {"engine": "postgres", "versions": ["15"]},
                "my": {"engine": "mysql", "versions": ["10.11"]},
                "redis": {"engine": "redis", "versions": ["7"]},
            },
            "plans": {
                "pg-small": {"service": "pg", "storage_mb": 512},
                "pg-big": {"service": "pg", "storage_mb": 3000},
                "my-small": {"service": "my", "storage_mb": 512},
                "cache-64": {"service": "redis", "memory_mb": 64},
                "cache-900": {"service": "redis", "memory_mb": 900},
            },
            "instances": instances,
        }
    )


def node(engines: list[str], memory: int = 1024, storage: int = 4096, **labels: str) -> dict[str, Any]:
    return {
        "host": "h",
        "engines": engines,
        "labels": labels,
        "capacity": {"memory_mb": memory, "storage_mb": storage},
    }


def test_demand_counts_memory_for_redis_and_storage_for_sql() -> None:
    env = env_of({}, {"aa": {"plan": "pg-small"}, "bb": {"plan": "cache-64"}})
    assert (demand_of(env, "aa").memory_mb, demand_of(env, "aa").storage_mb) == (0, 512)
    assert (demand_of(env, "bb").memory_mb, demand_of(env, "bb").storage_mb) == (64, 0)


def test_ties_go_to_the_first_node_by_name() -> None:
    env = env_of({"n-b": node(["postgres"]), "n-a": node(["postgres"])}, {"aa": {"plan": "pg-small"}})
    assert place(env, {}) == {"aa": "n-a"}


def test_most_free_wins() -> None:
    env = env_of(
        {"n-a": node(["postgres"], storage=2000), "n-b": node(["postgres"], storage=8000)},
        {"aa": {"plan": "pg-small"}},
    )
    assert place(env, {}) == {"aa": "n-b"}


def test_score_is_the_tightest_resource() -> None:
    # n-a has far more free MB in total, but its memory is 90 % taken: its tightest fraction (0.1) loses
    # to n-b's (3584/4096), where a sum of free MB would have picked n-a.
    env = env_of(
        {"n-a": node(["postgres", "redis"], memory=1000, storage=100000), "n-b": node(["postgres"])},
        {"aa": {"plan": "cache-900", "node": "n-a"}, "bb": {"plan": "pg-small"}},
    )
    assert place(env, {}) == {"aa": "n-a", "bb": "n-b"}


def test_capacity_is_consumed_by_earlier_placements_in_name_order() -> None:
    nodes = {"n-a": node(["postgres"], storage=4000), "n-b": node(["postgres"], storage=4000)}
    instances: dict[str, Any] = {"cc": {"plan": "pg-big"}, "aa": {"plan": "pg-big"}, "bb": {"plan": "pg-small"}}
    # aa: tie, n-a. bb: n-a has 1000 left, n-b 4000, so n-b. cc: only n-b (3488 free) still fits it.
    assert place(env_of(nodes, instances), {}) == {"aa": "n-a", "bb": "n-b", "cc": "n-b"}
    instances["dd"] = {"plan": "pg-big"}
    with pytest.raises(PlacementError) as caught:
        place(env_of(nodes, instances), {})
    assert caught.value.message == (
        "no node can take instance dd (postgres, plan pg-big):\n"
        "  n-a: needs 3000 MB storage, 1000 MB free\n"
        "  n-b: needs 3000 MB storage, 488 MB free\n"
        "Add capacity or a node, relax placement.labels, or choose a smaller plan."
    )


def test_deterministic_whatever_the_declaration_order() -> None:
    nodes = {"n-a": node(["postgres", "redis"]), "n-b": node(["postgres", "redis"]), "n-c": node(["redis"])}
    instances = {f"db{i}": {"plan": "pg-small" if i % 2 else "cache-64"} for i in range(10)}
    first = place(env_of(nodes, instances), {})
    again = place(env_of(dict(reversed(nodes.items())), dict(reversed(instances.items()))), {})
    assert first == again
    assert set(first) == set(instances)


def test_existing_instances_stay_even_where_a_new_one_would_not_go() -> None:
    env = env_of(
        {"n-a": node(["postgres"], storage=1000), "n-b": node(["postgres"], storage=9000)},
        {"aa": {"plan": "pg-small"}, "bb": {"plan": "pg-small"}},
    )
    assert place(env, {"aa": "n-a", "gone": "n-b"}) == {"aa": "n-a", "bb": "n-b"}


def test_existing_instance_pinned_elsewhere_is_refused() -> None:
    env = env_of({"n-a": node(["postgres"]), "n-b": node(["postgres"])}, {"aa": {"plan": "pg-small", "node": "n-b"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {"aa": "n-a"})
    assert caught.value.message == (
        "instance aa exists on node n-a but the environment pins it to node n-b; svcctl does not move "
        "instances. Set node: n-a (or remove node:), or migrate the data yourself and delete the old instance."
    )


def test_pinned_goes_where_pinned() -> None:
    env = env_of(
        {"n-a": node(["postgres"]), "n-b": node(["postgres"], storage=99999)},
        {"aa": {"plan": "pg-small", "node": "n-a"}},
    )
    assert place(env, {}) == {"aa": "n-a"}


def test_pinned_that_does_not_fit_is_refused() -> None:
    env = env_of({"n-a": node(["postgres"], storage=100)}, {"aa": {"plan": "pg-small", "node": "n-a"}})
    with pytest.raises(PlacementError) as caught:
        place(env, {})
    assert caught.value.message == (
        "instance aa is pinned to node n-a, which cannot take it: needs 512 MB storage, 100 MB free. "
        "Pin it to another node, remove node: to let svcctl choose, or raise node n-a's capacity."
    )


def test_labels_restrict_candidates() -> None:
    env = env_of(
        {"n-a": node(["postgres"], zone="a"), "n-b": node(["postgres"], storage=9999, zone="b")},
        {"aa": {"plan": "pg-small", "placement": {"labels": {"zone": "a"}}}},
    )
    assert place(env, {}) == {"aa": "n-a"}


def test_no_fit_lists_every_candidate_with_its_reasons() -> None:
    env = env_of(
        {
            "n-a": node(["mysql"]),
            "n-b": node(["redis"], zone="b"),
            "n-c": node(["redis"], memory=500, zone="a"),
            "n-d": node(["redis", "postgres"], memory=0, storage=0),
        },
        {"aa": {"plan": "cache-900", "placement": {"labels": {"zone": "a"}}}},
    )
    with pytest.raises(PlacementError) as caught:
        place(env, {})
    assert caught.value.message == (
        "no node can take instance aa (redis, plan cache-900):\n"
        "  n-a: does not run redis; lacks label zone=a\n"
        "  n-b: lacks label zone=a\n"
        "  n-c: needs 900 MB memory, 500 MB free\n"
        "  n-d: lacks label zone=a; needs 900 MB memory, 0 MB free\n"
        "Add capacity or a node, relax placement.labels, or choose a smaller plan."
    )


# -- the table: inputs -> the expected node of every instance, or the start of the error ------------------

PG, REDIS, BOTH = ["postgres"], ["redis"], ["postgres", "redis"]
SMALL: dict[str, Any] = {"plan": "pg-small"}
CACHE: dict[str, Any] = {"plan": "cache-64"}

TABLE: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, str], dict[str, str] | str]] = [
    ("only-runner", {"n-a": node(PG), "n-b": node(REDIS)}, {"aa": SMALL}, {}, {"aa": "n-a"}),
    ("redis-goes-to-redis", {"n-a": node(PG), "n-b": node(REDIS)}, {"aa": CACHE}, {}, {"aa": "n-b"}),
    ("tie-first-name", {"n-b": node(PG), "n-a": node(PG)}, {"aa": SMALL}, {}, {"aa": "n-a"}),
    ("more-free-storage", {"n-a": node(PG, storage=2000), "n-b": node(PG, storage=8000)}, {"aa": SMALL}, {},
     {"aa": "n-b"}),
    ("more-free-memory", {"n-a": node(REDIS, memory=128), "n-b": node(REDIS, memory=1024)}, {"aa": CACHE}, {},
     {"aa": "n-b"}),
    ("spread-in-name-order", {"n-a": node(PG, storage=1024), "n-b": node(PG, storage=1024)},
     {"aa": SMALL, "bb": SMALL}, {}, {"aa": "n-a", "bb": "n-b"}),
    ("labels-pick-the-node", {"n-a": node(PG, zone="a"), "n-b": node(PG, storage=9999, zone="b")},
     {"aa": {"plan": "pg-small", "placement": {"labels": {"zone": "b"}}}}, {}, {"aa": "n-b"}),
    ("all-labels-needed", {"n-a": node(PG, zone="a"), "n-b": node(PG, zone="a", disk="ssd")},
     {"aa": {"plan": "pg-small", "placement": {"labels": {"zone": "a", "disk": "ssd"}}}}, {}, {"aa": "n-b"}),
    ("pinned-beats-free", {"n-a": node(PG), "n-b": node(PG, storage=99999)},
     {"aa": {"plan": "pg-small", "node": "n-a"}}, {}, {"aa": "n-a"}),
    ("pinned-first-then-free", {"n-a": node(PG, storage=1024), "n-b": node(PG, storage=1024)},
     {"aa": SMALL, "zz": {"plan": "pg-small", "node": "n-a"}}, {}, {"aa": "n-b", "zz": "n-a"}),
    ("existing-stays", {"n-a": node(PG, storage=1000), "n-b": node(PG, storage=9000)}, {"aa": SMALL}, {"aa": "n-a"},
     {"aa": "n-a"}),
    ("existing-counts-against-capacity", {"n-a": node(PG, storage=1024), "n-b": node(PG, storage=1024)},
     {"aa": SMALL, "bb": SMALL}, {"bb": "n-a"}, {"aa": "n-b", "bb": "n-a"}),
    ("zero-capacity-left-out-of-score", {"n-a": node(PG, memory=0, storage=1000), "n-b": node(PG, storage=1000)},
     {"aa": SMALL}, {}, {"aa": "n-a"}),
    ("exactly-full-fits", {"n-a": node(REDIS, memory=64)}, {"aa": CACHE}, {}, {"aa": "n-a"}),
    ("one-mb-short", {"n-a": node(REDIS, memory=63)}, {"aa": CACHE}, {},
     "no node can take instance aa (redis, plan cache-64):\n  n-a: needs 64 MB memory, 63 MB free\n"),
    ("no-runner", {"n-a": node(PG)}, {"aa": CACHE}, {}, "no node can take instance aa (redis, plan cache-64):\n"
     "  n-a: does not run redis\n"),
    ("no-nodes", {}, {"aa": SMALL}, {}, "no node can take instance aa (postgres, plan pg-small):\n"
     "  (no nodes are declared)\n"),
    ("labels-nobody-has", {"n-a": node(PG, zone="a")},
     {"aa": {"plan": "pg-small", "placement": {"labels": {"zone": "b"}}}}, {},
     "no node can take instance aa (postgres, plan pg-small):\n  n-a: lacks label zone=b\n"),
    ("second-does-not-fit", {"n-a": node(PG, storage=1000)}, {"aa": SMALL, "bb": SMALL}, {},
     "no node can take instance bb (postgres, plan pg-small):\n  n-a: needs 512 MB storage, 488 MB free\n"),
    ("pinned-wrong-engine", {"n-a": node(REDIS)}, {"aa": {"plan": "pg-small", "node": "n-a"}}, {},
     "instance aa is pinned to node n-a, which cannot take it: does not run postgres."),
    ("pinned-full", {"n-a": node(PG, storage=100)}, {"aa": {"plan": "pg-small", "node": "n-a"}}, {},
     "instance aa is pinned to node n-a, which cannot take it: needs 512 MB storage, 100 MB free."),
    ("existing-pinned-elsewhere", {"n-a": node(PG), "n-b": node(PG)}, {"aa": {"plan": "pg-small", "node": "n-b"}},
     {"aa": "n-a"}, "instance aa exists on node n-a but the environment pins it to node n-b;"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("nodes", "instances", "existing", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_placement_table(
    nodes: dict[str, Any], instances: dict[str, Any], existing: dict[str, str], expected: dict[str, str] | str
) -> None:
    env = env_of(nodes, instances)
    if isinstance(expected, dict):
        assert place(env, existing) == expected
    else:
        with pytest.raises(PlacementError) as caught:
            place(env, existing)
        assert caught.value.message.startswith(expected)
