"""svcctl import's pure part: observed State + Environment -> instance entries -> YAML, and that YAML merged
into the environment loads with the real loader and places as `svcctl validate` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from svcctl.drivers.ownership import mark_ownership, merge_nodes
from svcctl.model.loader import load_environment
from svcctl.model.placement import place
from svcctl.model.spec import Environment
from svcctl.plan.importing import Imported, importable, render_json, render_yaml
from svcctl.state import Kind, Resource, State

ENV = """\
environment: brown
nodes:
  lab-1: {host: lab-1, engines: [postgres, redis], capacity: {storage_mb: 40000}}
  lab-2: {host: lab-2, engines: [postgres, mysql], capacity: {storage_mb: 40000}}
services:
  postgres: {engine: postgres, versions: ["13", "15"]}
  mariadb: {engine: mysql, versions: ["10.11"]}
  redis: {engine: redis, versions: ["7"]}
plans:
  pg-large: {service: postgres, storage_mb: 4096, connections: 50}
  pg-small: {service: postgres, storage_mb: 512, connections: 20}
  pg-medium: {service: postgres, storage_mb: 1024, connections: 20}
  my-small: {service: mariadb, storage_mb: 512}
  cache: {service: redis, memory_mb: 16}
"""


def environment(tmp_path: Path, text: str = ENV, extra: str = "") -> Environment:
    (tmp_path / "svcctl.yaml").write_text(text + extra)
    return load_environment(tmp_path / "svcctl.yaml")


def db(
    database: str, node: str = "lab-2", engine: str = "postgres", size_mb: int = 10, version: str = "15", **kw: Any
) -> Resource:
    """An unmanaged database as the drivers name it: its svcctl name if it has one, else `<node>.<engine>:<db>`."""
    name = database.replace("_", "-") if database.islower() and database.isascii() else f"{node}.{engine}:{database}"
    attrs = {"engine": engine, "major_version": version, "database": database, "connections": None}
    return Resource(
        kind=Kind.INSTANCE,
        name=kw.pop("name", name),
        node=node,
        engine=engine,
        attrs=attrs | {"storage_mb": None, "size_mb": size_mb} | kw.pop("attrs", {}),
        managed=kw.pop("managed", False),
        owner=kw.pop("owner", None),
    )


def redis(name: str, node: str = "lab-1") -> Resource:
    attrs = {"engine": "redis", "major_version": "7", "port": 6379}
    return Resource(kind=Kind.INSTANCE, name=name, node=node, engine="redis", attrs=attrs, managed=False)


def engine(node: str, name: str, version: str) -> Resource:
    return Resource(kind=Kind.ENGINE, name=f"{node}.{name}", node=node, engine=name, attrs={"version": version})


def entries(result: Imported) -> dict[str, dict[str, Any]]:
    """The YAML's entries, read back with a safe loader (so nothing but what it parses to counts)."""
    doc = YAML(typ="safe").load(render_yaml(result))
    assert set(doc) == {"instances"}
    return doc["instances"] or {}


def comments(result: Imported) -> list[str]:
    return [line for line in render_yaml(result).splitlines() if line.lstrip().startswith("#")]


def merged_validates(tmp_path: Path, result: Imported, name: str = "imported.yaml") -> Environment:
    """Save the output beside the environment's file (a directory environment) and load it as validate does."""
    (tmp_path / name).write_text(render_yaml(result))
    env = load_environment(tmp_path)
    place(env, {})
    return env


# -- plan choice ---------------------------------------------------------------------------------------------


def test_each_database_gets_the_smallest_plan_of_its_engine_and_version_that_holds_it(tmp_path: Path) -> None:
    env = environment(tmp_path)
    observed = State.of(
        [
            engine("lab-2", "postgres", "15"),
            db("tiny", size_mb=3),
            db("exactly_small", size_mb=512),
            db("middling", size_mb=513),
            db("legacy_orders", size_mb=1500),
            db("shop", engine="mysql", version="10.11", size_mb=40),
        ]
    )
    result = importable(env, observed)
    assert entries(result) == {
        "exactly-small": {"plan": "pg-small", "node": "lab-2", "version": "15", "adopt": {"database": "exactly_small"}},
        "legacy-orders": {"plan": "pg-large", "node": "lab-2", "version": "15", "adopt": {"database": "legacy_orders"}},
        "middling": {"plan": "pg-medium", "node": "lab-2", "version": "15", "adopt": {"database": "middling"}},
        "shop": {"plan": "my-small", "node": "lab-2", "version": "10.11", "adopt": {"database": "shop"}},
        "tiny": {"plan": "pg-small", "node": "lab-2", "version": "15", "adopt": {"database": "tiny"}},
    }
    assert not result.not_offered
    text = render_yaml(result)
    assert "version: '15'" in text and "version: '10.11'" in text  # strings, never the numbers 15 and 10.11
    assert "{" not in text.split("instances:", 1)[1]  # block style
    merged_validates(tmp_path, result)


def test_over_every_quota_the_largest_plan_is_chosen_with_a_comment_saying_so(tmp_path: Path) -> None:
    env = environment(tmp_path)
    result = importable(env, State.of([db("warehouse", size_mb=9000)]))
    assert entries(result)["warehouse"]["plan"] == "pg-large"
    assert comments(result)[-1] == (
        "  # warehouse on lab-2 (PostgreSQL): uses 9000 MB, over plan pg-large's storage_mb (4096 MB), "
        "the largest PostgreSQL 15 plan: add a bigger plan or raise that one's quota"
    )
    merged_validates(tmp_path, result)


def test_a_plan_without_storage_mb_has_no_quota_so_it_holds_any_size_but_is_chosen_last(tmp_path: Path) -> None:
    env = environment(tmp_path, extra="  pg-open: {service: postgres}\n")
    result = importable(env, State.of([db("warehouse", size_mb=9000), db("tiny", size_mb=1)]))
    assert {k: v["plan"] for k, v in entries(result).items()} == {"tiny": "pg-small", "warehouse": "pg-open"}
    assert not [c for c in comments(result) if "over plan" in c]


def test_only_plans_whose_service_offers_the_version_the_node_runs_are_chosen(tmp_path: Path) -> None:
    text = ENV.replace('postgres: {engine: postgres, versions: ["13", "15"]}', 'postgres: {engine: postgres, '
                       'versions: ["15"]}\n  pg13: {engine: postgres, versions: ["13"]}')  # fmt: skip
    env = environment(tmp_path, text, "  pg13-tiny: {service: pg13, storage_mb: 100}\n")
    result = importable(env, State.of([db("old_app", node="lab-1", version="13"), db("new_app", version="15")]))
    assert entries(result)["old-app"] == {
        "plan": "pg13-tiny", "node": "lab-1", "version": "13", "adopt": {"database": "old_app"},
    }  # fmt: skip
    assert entries(result)["new-app"]["plan"] == "pg-small"
    merged_validates(tmp_path, result)


def test_no_plan_for_the_engine_skips_the_database_with_a_comment_naming_what_to_add(tmp_path: Path) -> None:
    text = ENV.replace("  my-small: {service: mariadb, storage_mb: 512}\n", "")
    env = environment(tmp_path, text)
    result = importable(env, State.of([db("shop", engine="mysql", version="10.11"), db("kept")]))
    assert list(entries(result)) == ["kept"]
    assert (
        '#   lab-2 MariaDB "shop": the environment has no plan for service mariadb (MariaDB): declare one, such as '
        "plans: {mysql-small: {service: mariadb, storage_mb: 1024}}, then run svcctl import again"
    ) in comments(result)
    merged_validates(tmp_path, result)


def test_no_service_for_the_engine_asks_for_a_service_and_a_plan(tmp_path: Path) -> None:
    text = ENV.replace('  mariadb: {engine: mysql, versions: ["10.11"]}\n', "").replace(
        "  my-small: {service: mariadb, storage_mb: 512}\n", ""
    )
    result = importable(environment(tmp_path, text), State.of([db("shop", engine="mysql", version="10.11")]))
    assert entries(result) == {}
    wanted = 'declare both, such as services: {mysql: {engine: mysql, versions: ["10.11"]}}'
    assert any(wanted in c for c in comments(result))


def test_a_version_no_service_offers_asks_to_add_it_to_a_service(tmp_path: Path) -> None:
    result = importable(environment(tmp_path), State.of([db("ancient", version="11")]))
    assert entries(result) == {}
    assert any('no plan\'s service offers PostgreSQL 11, which node lab-2 runs: add "11" to the versions of service '
               "postgres" in c for c in comments(result))  # fmt: skip


# -- what is not offered -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("database", "why"),
    [
        ("LegacyOrders", 'instance name "LegacyOrders" breaks svcctl\'s name rule'),
        ("orders_db_for_the_whole_company", "breaks svcctl's name rule"),  # 31 characters: over 24
        ("a__b", 'instance name "a--b" breaks svcctl\'s name rule'),
        ("trailing_", "breaks svcctl's name rule"),
        ("9lives", "breaks svcctl's name rule"),
        ("x", "breaks svcctl's name rule"),
        ("orders-db", "it holds a hyphen"),
        ("admin", 'instance name "admin" is reserved'),
        ("svcctl_state", 'instance name "svcctl-state" is reserved'),
    ],
)
def test_a_database_whose_name_cannot_be_an_instance_name_is_a_comment_saying_why(
    tmp_path: Path, database: str, why: str
) -> None:
    result = importable(environment(tmp_path), State.of([db(database), db("fine")]))
    assert list(entries(result)) == ["fine"]
    (line,) = [c for c in comments(result) if c.startswith("#   lab-2 PostgreSQL")]
    assert line.startswith(f'#   lab-2 PostgreSQL "{database}": cannot be adopted: ') and why in line
    assert line.endswith("; rename the database on the node (or leave it unmanaged)")
    merged_validates(tmp_path, result)


def test_databases_the_environment_already_declares_are_left_out(tmp_path: Path) -> None:
    env = environment(tmp_path, extra=(
        "instances:\n  legacy-orders: {plan: pg-small, node: lab-2, adopt: {database: legacy_orders}}\n"
        "  billing: {plan: pg-small, node: lab-1}\n"
    ))  # fmt: skip
    observed = State.of([db("legacy_orders"), db("billing", name="billing@lab-2/postgres"), db("new_one")])
    result = importable(env, observed)
    assert list(entries(result)) == ["new-one"]
    text = render_yaml(result)
    assert "legacy_orders" not in text  # declared as that instance on that node: nothing to say
    assert (  # the same name declared for another node's database: it cannot be adopted under that name
        '#   lab-2 PostgreSQL "billing": cannot be adopted as instance billing: the environment already declares '
        "an instance of that name (on node lab-1, PostgreSQL); rename one of them"
    ) in comments(result)
    (tmp_path / "imported.yaml").write_text(text)
    place(load_environment(tmp_path), {})


def test_objects_a_registry_records_are_not_offered_whichever_environment_owns_them(tmp_path: Path) -> None:
    env = environment(tmp_path)
    registry = {
        "instance.theirs": {"attrs": {}, "environment": "staging"},
        "instance.ours": {"attrs": {"engine": "postgres"}, "environment": "brown"},
    }
    live = [db("theirs"), db("ours"), db("nobodys")]
    observed = State.of(merge_nodes(mark_ownership("lab-2", live, registry, "brown")))
    assert observed.resources["instance.theirs"].owner == "staging"
    assert observed.resources["instance.ours"].managed
    result = importable(env, observed)
    assert list(entries(result)) == ["nobodys"]
    assert "theirs" not in render_yaml(result) and "ours" not in render_yaml(result)


def test_redis_servers_are_listed_as_comments_adoption_is_not_supported_yet(tmp_path: Path) -> None:
    result = importable(environment(tmp_path), State.of([redis("sessions"), redis("cache@lab-1/redis")]))
    assert entries(result) == {}
    lines = comments(result)
    for name in ("cache", "sessions"):
        assert (
            f'#   lab-1 Redis "{name}": adopting a Redis server is not supported yet (only PostgreSQL and '
            "MariaDB databases)"
        ) in lines


def test_nothing_to_import_is_a_comment_and_an_empty_instances_mapping(tmp_path: Path) -> None:
    env = environment(tmp_path)
    observed = State.of([engine("lab-2", "postgres", "15"), db("ours", managed=True)])
    result = importable(env, observed)
    text = render_yaml(result)
    assert text == (
        "# svcctl import: environment brown, nodes lab-1, lab-2\n"
        "# nothing to import: no unmanaged database on these nodes\n"
        "instances: {}\n"
    )
    merged_validates(tmp_path, result)
    assert json.loads(render_json(result)) == {
        "environment": "brown", "nodes": ["lab-1", "lab-2"], "instances": {}, "not_offered": [],
    }  # fmt: skip


def test_only_the_nodes_asked_for_are_scanned(tmp_path: Path) -> None:
    result = importable(environment(tmp_path), State.of([db("one", node="lab-1"), db("two")]), ["lab-2"])
    assert list(entries(result)) == ["two"]
    assert render_yaml(result).startswith("# svcctl import: environment brown, nodes lab-2\n")


def test_a_node_that_does_not_list_the_engine_is_asked_to(tmp_path: Path) -> None:
    result = importable(environment(tmp_path), State.of([db("shop", node="lab-1", engine="mysql", version="10.11")]))
    assert entries(result) == {}
    assert any("node lab-1 does not list mysql in its engines: add it" in c for c in comments(result))


def test_the_same_name_on_two_nodes_is_offered_once(tmp_path: Path) -> None:
    observed = State.of(merge_nodes([db("orders", node="lab-1"), db("orders", node="lab-2")]))
    result = importable(environment(tmp_path), observed)
    assert entries(result)["orders"]["node"] == "lab-1"
    assert any(c.startswith('#   lab-2 PostgreSQL "orders": cannot be adopted as instance orders too') for c in
               comments(result))  # fmt: skip
    merged_validates(tmp_path, result)


def test_an_entry_the_node_has_no_room_for_is_a_comment_so_the_yaml_still_places(tmp_path: Path) -> None:
    env = environment(tmp_path, ENV.replace("[postgres, mysql], capacity: {storage_mb: 40000}",
                                            "[postgres, mysql], capacity: {storage_mb: 1100}"))  # fmt: skip
    result = importable(env, State.of([db("first", size_mb=1), db("second", size_mb=1), db("third", size_mb=1)]))
    assert list(entries(result)) == ["first", "second"]
    assert any(c.startswith('#   lab-2 PostgreSQL "third": cannot be adopted with plan pg-small (512 MB): node '
                            "lab-2's capacity.storage_mb (1100 MB)") for c in comments(result))  # fmt: skip
    merged_validates(tmp_path, result)


def test_a_superuser_owner_is_noted_above_its_entry(tmp_path: Path) -> None:
    observed = State.of([db("legacy", attrs={"owner": "postgres", "owner_superuser": True})])
    result = importable(environment(tmp_path), observed)
    assert "legacy" in entries(result)
    assert any('its owner "postgres" is a superuser' in c and c.startswith("  # ") for c in comments(result))


# -- hostile names ---------------------------------------------------------------------------------------------

HOSTILE = [
    "evil\n  injected: {plan: pg-small}",
    "evil\ninstances: {}",
    "a: b",
    "x # comment",
    "#",
    '"quoted"',
    "'single'",
    "l\u0435gacy_orders",  # Cyrillic e: looks like legacy_orders
    "\uff4c\uff45\uff47\uff41\uff43\uff59",  # fullwidth "legacy"
    "tab\there",
    "line\u2028sep",
    "bidi\u202eevil",
    "back\\slash",
    "- item",
    "{flow: map}",
    "&anchor",
    "*alias",
    "!!python/object:os.system",
    "%TAG",
    "---",
    "...",
    "trailing ",
    "emoji_\U0001f600",
]


def test_hostile_names_are_comments_escaped_and_never_keys_or_values(tmp_path: Path) -> None:
    observed = State.of([db(name, name=f"lab-2.postgres:{i}") for i, name in enumerate(HOSTILE)] + [db("plain")])
    result = importable(environment(tmp_path), observed)
    text = render_yaml(result)
    doc = YAML(typ="safe").load(text)
    assert doc == {"instances": {"plain": {"plan": "pg-small", "node": "lab-2", "version": "15",
                                           "adopt": {"database": "plain"}}}}  # fmt: skip
    assert text.isascii()
    lines = text.splitlines()
    header = lines[: lines.index("instances:")]
    assert all(line.startswith("#") for line in header)
    assert len([line for line in header if "cannot be adopted" in line]) == len(HOSTILE)  # one line each
    for name in HOSTILE:
        shown = '"' + name.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
        assert any(shown in line for line in header), name
    assert "\\u0435" in text and "\\u2028" in text and "\\u202e" in text and "\\n  injected" in text
    merged_validates(tmp_path, result)
    assert json.loads(render_json(result))["not_offered"][0]["name"] in HOSTILE


def test_a_hostile_name_in_an_entry_note_stays_in_its_comment(tmp_path: Path) -> None:
    owner = "postgres\n  injected: true\n# "
    observed = State.of([db("legacy", attrs={"owner": owner, "owner_superuser": True})])
    result = importable(environment(tmp_path), observed)
    doc = YAML(typ="safe").load(render_yaml(result))
    assert doc["instances"]["legacy"] == {"plan": "pg-small", "node": "lab-2", "version": "15",
                                          "adopt": {"database": "legacy"}}  # fmt: skip
    assert '"postgres\\n  injected: true\\n# "' in render_yaml(result)
