"""apply's steps: a run of consecutive instance and binding changes is one step per engine, each engine's order
kept; engines and sessions stay where they were."""

from __future__ import annotations

from typing import Any

from svcctl.apply.execute import records, steps


def change(action: str, kind: str, engine: str, name: str) -> dict[str, Any]:
    return {"action": action, "kind": kind, "engine": engine, "address": f"{kind}.{name}", "name": name}


def addresses(step: dict[str, Any]) -> list[str]:
    return [c["address"] for c in step["changes"]] if step.get("batch") else [step["change"]["address"]]


def test_a_first_apply_is_the_engine_then_one_batch_of_everything_on_it() -> None:
    changes = [change("create", "engine", "postgres", "n.postgres")]
    for i in range(10):
        changes.append(change("create", "instance", "postgres", f"db{i}"))
    for i in range(10):
        changes.append(change("create", "binding", "postgres", f"app.db{i}"))
    out = steps(changes)
    assert [s.get("batch", False) for s in out] == [False, True]
    assert out[0]["label"] == "create engine.n.postgres"
    assert addresses(out[1]) == [c["address"] for c in changes[1:]]
    assert out[1]["label"] == "20 create (instances, bindings)"


def flat_by_engine(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in items:
        out.setdefault(c["engine"], []).append(c["address"])
    return out


def test_sessions_split_the_batches_and_each_engine_keeps_its_order() -> None:
    changes = [
        change("delete", "binding", "postgres", "app.a~r0"),
        change("delete", "instance", "postgres", "a"),
        change("create", "instance", "redis", "cache"),
        change("create", "instance", "postgres", "a"),  # a replace: its delete stays before it, in one module run
        change("create", "session", "postgres", "s1"),
        change("update", "binding", "postgres", "app.a"),
    ]
    out = steps(changes)
    assert [addresses(s) for s in out] == [
        ["binding.app.a~r0", "instance.a", "instance.a"],
        ["instance.cache"],
        ["session.s1"],
        ["binding.app.a"],
    ]
    assert [s.get("batch", False) for s in out] == [True, True, False, True]  # redis: a batch of its own
    assert out[0]["label"] == "2 delete, 1 create (instances, bindings)"
    done = [c for s in out for c in (s["changes"] if s.get("batch") else [s["change"]])]
    assert sorted(map(id, done)) == sorted(map(id, changes))  # every change exactly once
    assert flat_by_engine(done) == flat_by_engine(changes)  # in its engine's order


def test_alternating_engines_are_one_batch_each_not_one_per_change() -> None:
    # Instances sorted by name alternate engines (s0-pg, s1-my, s2-pg, ...): a first apply of 100 objects over 4
    # hosts made 22-30 module runs per host before, where two suffice.
    changes = [change("create", "engine", "mysql", "n.mysql"), change("create", "engine", "postgres", "n.postgres")]
    for i in range(12):
        engine = ("postgres", "mysql")[i % 2]
        changes.append(change("create", "instance", engine, f"s{i}"))
    for i in range(12):
        changes.append(change("create", "binding", ("postgres", "mysql")[i % 2], f"app.s{i}"))
    out = steps(changes)
    assert [s.get("engine") for s in out] == [None, None, "postgres", "mysql"]
    assert addresses(out[2]) == [f"instance.s{i}" for i in range(0, 12, 2)] + [
        f"binding.app.s{i}" for i in range(0, 12, 2)
    ]
    assert addresses(out[3]) == [f"instance.s{i}" for i in range(1, 12, 2)] + [
        f"binding.app.s{i}" for i in range(1, 12, 2)
    ]
    assert out[2]["label"] == out[3]["label"] == "12 create (instances, bindings)"


def test_mysql_and_redis_objects_batch_too_but_never_with_another_engine() -> None:
    changes = [
        change("create", "instance", "mysql", "m"),
        change("create", "binding", "mysql", "app.m"),
        change("create", "instance", "postgres", "p"),
        change("delete", "binding", "mysql", "old.m"),
        change("create", "instance", "redis", "r1"),
        change("create", "instance", "redis", "r2"),
        change("create", "binding", "redis", "app.r1"),
        change("create", "engine", "redis", "n.redis"),
        change("delete", "binding", "redis", "app.r2"),
    ]
    out = steps(changes)
    assert [s.get("batch", False) for s in out] == [True, True, True, False, True]
    assert [s.get("engine") for s in out] == ["mysql", "postgres", "redis", None, "redis"]
    assert [addresses(s) for s in out] == [
        ["instance.m", "binding.app.m", "binding.old.m"],
        ["instance.p"],
        ["instance.r1", "instance.r2", "binding.app.r1"],
        ["engine.n.redis"],  # an engine change ends the run: what follows it is a new batch
        ["binding.app.r2"],
    ]
    assert out[0]["label"] == "2 create, 1 delete (instances, bindings)"
    assert out[2]["label"] == "3 create (instances, bindings)"
    assert out[3]["label"] == "create engine.n.redis"
    assert steps([]) == []


def test_objects_only_runs_record_in_their_modules_and_skip_the_first_task() -> None:
    changes = [
        change("update", "binding", "postgres", "app.db0"),
        change("delete", "instance", "mysql", "db1"),
        change("delete", "instance", "postgres", "db2"),  # a replace: delete, then create again
        change("create", "instance", "postgres", "db2"),
        change("create", "instance", "mysql", "db3"),
    ]
    out = steps(changes)
    first, late = records(changes, out)
    assert first == []  # the registry task is skipped: each module records its share first, in one write
    assert [s.get("record_first") for s in out] == [["binding.app.db0"], ["instance.db3"]]
    assert late == ["instance.db1", "instance.db2"]  # the replace's create is recorded after its delete


def test_a_run_with_an_engine_records_first_and_a_replace_late() -> None:
    changes = [
        change("create", "engine", "postgres", "n.postgres"),
        change("delete", "instance", "postgres", "db0"),  # a replace: delete, then create again
        change("create", "instance", "postgres", "db0"),
        change("create", "binding", "postgres", "app.db1"),
    ]
    out = steps(changes)
    first, late = records(changes, out)
    assert [c["address"] for c in first] == ["engine.n.postgres", "binding.app.db1"]
    assert all(s.get("record_first", []) == [] for s in out)  # the first task records them all
    assert late == ["instance.db0"]  # recorded by its step after its delete has forgotten it
