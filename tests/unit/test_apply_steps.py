"""apply's steps: consecutive instance and binding changes of one engine become one step, order is kept."""

from __future__ import annotations

from typing import Any

from svcctl.apply.execute import steps


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


def test_other_engines_and_sessions_split_the_batches_and_order_is_kept() -> None:
    changes = [
        change("delete", "binding", "postgres", "app.a~r0"),
        change("delete", "instance", "postgres", "a"),
        change("create", "instance", "redis", "cache"),
        change("create", "instance", "postgres", "a"),
        change("create", "session", "postgres", "s1"),
        change("update", "binding", "postgres", "app.a"),
    ]
    out = steps(changes)
    assert [addresses(s) for s in out] == [
        ["binding.app.a~r0", "instance.a"],
        ["instance.cache"],
        ["instance.a"],
        ["session.s1"],
        ["binding.app.a"],
    ]
    assert [s.get("batch", False) for s in out] == [True, True, True, False, True]  # redis: a batch of its own
    assert out[0]["label"] == "2 delete (instances, bindings)"
    # every change appears exactly once, in its original order
    flat = [a for s in out for a in addresses(s)]
    assert flat == [c["address"] for c in changes]


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
    assert [s.get("batch", False) for s in out] == [True, True, True, True, False, True]
    assert [s.get("engine") for s in out] == ["mysql", "postgres", "mysql", "redis", None, "redis"]
    assert [addresses(s) for s in out] == [
        ["instance.m", "binding.app.m"],
        ["instance.p"],
        ["binding.old.m"],
        ["instance.r1", "instance.r2", "binding.app.r1"],
        ["engine.n.redis"],
        ["binding.app.r2"],
    ]
    assert out[0]["label"] == "2 create (instances, bindings)"
    assert out[3]["label"] == "3 create (instances, bindings)"
    assert out[4]["label"] == "create engine.n.redis"
    assert steps([]) == []
