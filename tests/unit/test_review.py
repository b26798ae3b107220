"""What a saved plan pins: the desired environment's digests and fingerprint, the observed state it rests on,
and the messages saying what moved. Also the saved plan file itself, and apply's refusals that need no host."""

from __future__ import annotations

import json
import shutil
import typing
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from svcctl import __version__
from svcctl.apply.execute import ApplyOptions, StalePlan, apply, check_still_current, load_for_plan
from svcctl.errors import InvalidEnvironment, SvcctlError
from svcctl.model.loader import load_environment
from svcctl.model.spec import App, Node
from svcctl.model.types import check_path
from svcctl.plan.planfile import FORMAT_VERSION, SavedPlan, is_plan_file, load_plan, save_plan, saved_plan
from svcctl.plan.planner import Planned
from svcctl.plan.review import (
    LOCAL_PATHS,
    desired_entries,
    entries_fingerprint,
    host_changes,
    observed_digests,
    pinned,
    yaml_changes,
)
from svcctl.plan.types import Action, Change, Plan
from svcctl.state import Kind, Resource, State

YAML = """\
environment: prod
nodes:
  db-1:
    host: db-1
    identity_file: keys/id_ed25519
    ssh_config: ~/ssh/config
    known_hosts: /etc/ssh/known
    engines: [postgres]
services:
  pg: {engine: postgres, versions: ["15", "16"]}
plans:
  pg-small: {service: pg, storage_mb: 512}
instances:
  orders-db: {plan: pg-small, version: "15"}
apps:
  web: {manifest: apps/web.yml}
bindings:
  - {app: web, instance: orders-db}
"""


def checkout(root: Path, text: str = YAML) -> Path:
    """The environment's files in `root/envs/prod` (with the directory its manifest goes to)."""
    env = root / "envs" / "prod"
    (env / "apps").mkdir(parents=True, exist_ok=True)
    (env / "svcctl.yaml").write_text(text)
    return env


def entries_of(path: Path) -> dict[str, dict[str, str]]:
    env = load_environment(path)
    return desired_entries(env, path if path.is_dir() else path.parent)


# -- the desired environment ------------------------------------------------------------------------------


def test_two_checkouts_by_two_users_pin_the_same_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths resolved on this machine (relative ones, `~`) are digested as the same files give them anywhere."""
    monkeypatch.setenv("HOME", str(tmp_path / "home" / "alice"))
    alice = entries_of(checkout(tmp_path / "home" / "alice" / "src"))
    monkeypatch.setenv("HOME", str(tmp_path / "ci"))
    ci = checkout(tmp_path / "ci" / "builds" / "42" / "repo")
    assert load_environment(ci).nodes["db-1"].identity_file == str(ci / "keys" / "id_ed25519")  # resolved here
    assert entries_of(ci) == alice
    assert entries_of(ci / "svcctl.yaml") == alice  # through its file, too
    assert entries_fingerprint(entries_of(ci)) == entries_fingerprint(alice)


def test_the_fingerprint_is_of_what_is_declared_not_how_it_is_written(tmp_path: Path) -> None:
    base = entries_of(checkout(tmp_path / "a"))
    spelt_out = YAML.replace('{plan: pg-small, version: "15"}', '{plan: pg-small, version: "15", protect: true}')
    split = tmp_path / "b" / "envs" / "prod"
    checkout(tmp_path / "b", "")
    (split / "svcctl.yaml").unlink()
    head, tail = spelt_out.split("instances:\n")
    (split / "a.yaml").write_text(head)
    (split / "b.yaml").write_text("# the instances, in a file of their own\ninstances:\n" + tail)
    assert entries_of(split) == base


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda t: t + "  - {app: web, instance: extra-db}\n",
            [
                "binding.web.extra-db was added to the YAML (svcctl.yaml:20:5)",
                "instance.extra-db was added to the YAML (svcctl.yaml:15:3)",
            ],
        ),
        (
            lambda t: t.replace('version: "15"', 'version: "16"'),
            ["instance.orders-db.version changed in the YAML (svcctl.yaml:14:40)"],
        ),
        (
            lambda t: t.replace("{app: web, instance: orders-db}", "{app: web, instance: orders-db, role: readonly}"),
            ["binding.web.orders-db.role changed in the YAML (svcctl.yaml:18:43)"],
        ),
        (
            lambda t: t.replace("    known_hosts: /etc/ssh/known\n", ""),
            ["node.db-1.known_hosts changed in the YAML (svcctl.yaml:3:3)"],
        ),
        (
            lambda t: t.replace("identity_file: keys/id_ed25519", "identity_file: keys/other"),
            ["node.db-1.identity_file changed in the YAML (svcctl.yaml:5:20)"],
        ),
        (
            lambda t: t.replace("  - {app: web, instance: orders-db}\n", "").replace("bindings:\n", ""),
            ["binding.web.orders-db was removed from the YAML"],
        ),
        (
            lambda t: t.replace("environment: prod", "environment: prod-2"),
            ["the environment's name changed in the YAML (svcctl.yaml:1:14)"],
        ),
    ],
    ids=["instance-added", "version", "role", "default-again", "path", "binding-removed", "name"],
)
def test_what_changed_in_the_yaml_is_named_where_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: typing.Callable[[str], str], expected: list[str]
) -> None:
    then = entries_of(checkout(tmp_path))
    monkeypatch.chdir(tmp_path / "envs" / "prod")
    text = edit(YAML)
    if "extra-db" in text:
        text = text.replace("apps:\n", "  extra-db: {plan: pg-small}\napps:\n")
    Path("svcctl.yaml").write_text(text)
    env = load_environment(Path())
    now = desired_entries(env, Path.cwd())
    assert entries_fingerprint(now) != entries_fingerprint(then)
    assert yaml_changes(then, now, env) == expected


def test_every_local_path_field_is_made_portable() -> None:
    """A new path field (typed LocalPath) must be listed, or another checkout would pin another environment."""

    def checks_a_path(field: FieldInfo) -> bool:
        inner = [m for arg in typing.get_args(field.annotation) for m in getattr(arg, "__metadata__", ())]
        return any(getattr(m, "func", None) is check_path for m in [*field.metadata, *inner])

    found = {
        kind: tuple(sorted(name for name, field in model.model_fields.items() if checks_a_path(field)))
        for kind, model in (("node", Node), ("app", App))
    }
    assert found == {kind: tuple(sorted(fields)) for kind, fields in LOCAL_PATHS.items()}


# -- the observed state ---------------------------------------------------------------------------------


def _res(kind: Kind, name: str, node: str = "db-1", **kw: typing.Any) -> Resource:
    return Resource(kind=kind, name=name, node=node, engine="postgres", **kw)


def test_the_plan_rests_on_this_environment_s_objects_and_what_sits_at_its_addresses() -> None:
    desired = State.of(
        [_res(Kind.INSTANCE, "orders-db"), _res(Kind.INSTANCE, "new-db"), _res(Kind.ENGINE, "db-1.postgres")]
    )
    ours = _res(Kind.INSTANCE, "orders-db", attrs={"database": "orders_db", "size_mb": 12})
    retired = _res(Kind.INSTANCE, "old-db", attrs={"database": "old_db"})  # recorded by us, no longer declared
    engine = _res(Kind.ENGINE, "db-1.postgres", attrs={"running": True}, claims={"other": ["10.0.0.0/24"]})
    squatter = _res(Kind.INSTANCE, "new-db@db-2/postgres", node="db-2", managed=False)  # blocks the create
    theirs = _res(Kind.INSTANCE, "billing", managed=False, owner="billing-env", attrs={"size_mb": 900})
    stranger = _res(Kind.BINDING, "db-1.postgres:legacy_user", managed=False)
    observed = State.of([ours, retired, engine, squatter, theirs, stranger])
    kept = pinned(observed, desired, {"instance.new-db"})
    assert sorted(kept.resources) == ["instance.new-db@db-2/postgres", "instance.old-db", "instance.orders-db"]
    assert kept.resources["instance.orders-db"].attrs == {"database": "orders_db"}  # size_mb is a measurement
    # A shared engine counts when the plan changes it (or else through the changes it would bring), and so does
    # whatever the plan acts on.
    kept = pinned(observed, desired, {"engine.db-1.postgres", "binding.db-1.postgres:legacy_user"})
    assert sorted(kept.resources) == [
        "binding.db-1.postgres:legacy_user", "engine.db-1.postgres", "instance.new-db@db-2/postgres",
        "instance.old-db", "instance.orders-db",
    ]  # fmt: skip


def test_growing_data_and_other_environments_leave_the_fingerprint_and_anything_else_moves_it() -> None:
    desired = State.of([_res(Kind.INSTANCE, "orders-db")])
    ours = _res(Kind.INSTANCE, "orders-db", attrs={"database": "orders_db", "size_mb": 12})
    base = observed_digests(pinned(State.of([ours]), desired, ()))
    grown = ours.model_copy(update={"attrs": {"database": "orders_db", "size_mb": 4000}})
    other = _res(Kind.INSTANCE, "billing", managed=False, owner="billing-env")
    assert observed_digests(pinned(State.of([grown, other]), desired, ())) == base
    moved = ours.model_copy(update={"recorded": {"database": "orders_db"}})
    session = _res(Kind.SESSION, "orders-db.ab12")
    now = observed_digests(pinned(State.of([moved, session]), desired, ()))
    assert host_changes(base, now) == ["instance.orders-db changed", "session.orders-db.ab12 appeared"]
    assert host_changes(now, base) == ["instance.orders-db changed", "session.orders-db.ab12 is gone"]
    assert host_changes(base, base) == []


def test_of_a_shared_engine_only_the_networks_others_claim_are_pinned() -> None:
    desired = State.of([_res(Kind.ENGINE, "db-1.postgres")])
    changing = {"engine.db-1.postgres"}
    live = {"running": True, "client_networks": ["10.0.0.0/24"], "claimed_networks": []}
    engine = _res(Kind.ENGINE, "db-1.postgres", attrs=live, recorded={**live, "claimed_networks": ["10.0.0.0/24"]},
                  claims={"a": ["10.0.0.0/24"], "b": []})  # fmt: skip
    base = observed_digests(pinned(State.of([engine]), desired, changing))
    others_applied = engine.model_copy(
        update={"recorded": {**live, "claimed_networks": []}, "claims": {"a": ["10.0.0.0/24"], "c": [], "d": []}}
    )
    assert observed_digests(pinned(State.of([others_applied]), desired, changing)) == base
    opened = engine.model_copy(update={"claims": {"a": ["10.0.0.0/24"], "b": ["10.9.0.0/16"]}})
    stopped = engine.model_copy(update={"attrs": {**live, "running": False}})
    for moved in (opened, stopped):
        assert host_changes(base, observed_digests(pinned(State.of([moved]), desired, changing))) == [
            "engine.db-1.postgres changed"
        ]


# -- the saved plan file ----------------------------------------------------------------------------------

CREATE = Change(action=Action.CREATE, address="instance.orders-db", kind=Kind.INSTANCE, node="db-1", engine="postgres")


def _planned(plan: Plan | None = None, observed: State | None = None) -> Planned:
    desired = State.of([_res(Kind.INSTANCE, "orders-db")])
    observed = observed if observed is not None else State()
    from svcctl.plan.diff import fingerprint

    plan = plan or Plan(environment="prod", changes=[CREATE])
    changing = {c.address for c in plan.changes}
    plan = plan.model_copy(update={"fingerprint": fingerprint(pinned(observed, desired, changing))})
    return Planned(plan=plan, desired=desired, observed=observed, placement={"orders-db": "db-1"})


def _saved(tmp_path: Path) -> tuple[Path, Path, SavedPlan]:
    env_dir = checkout(tmp_path / "checkout")
    env = load_environment(env_dir)
    saved = saved_plan(_planned(), env, env_dir)
    out = tmp_path / "reviewed" / "prod.plan"
    save_plan(out, saved)
    return env_dir, out, saved


def test_a_saved_plan_round_trips_with_no_absolute_path_and_mode_0600(tmp_path: Path) -> None:
    env_dir, out, saved = _saved(tmp_path)
    text = out.read_text()
    assert str(tmp_path) not in text and "/etc/ssh" not in text and "keys/id" not in text
    assert (out.stat().st_mode & 0o777) == 0o600
    assert is_plan_file(out) and not is_plan_file(env_dir / "svcctl.yaml")
    doc = json.loads(text)
    assert (doc["kind"], doc["format_version"], doc["svcctl_version"], doc["environment"]) == (
        "svcctl-plan", FORMAT_VERSION, __version__, "prod"
    )  # fmt: skip
    assert set(doc) == {"kind", "format_version", "svcctl_version", "environment", "desired", "observed", "plan"}
    assert load_plan(out) == saved
    assert saved.desired_fingerprint == entries_fingerprint(desired_entries(load_environment(env_dir), env_dir))


def _rewrite(path: Path, change: typing.Callable[[dict[str, typing.Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version=1), r"is a saved plan of format 1; this svcctl \(.*\) reads only format 2"),
        (lambda d: d.update(format_version="2"), r'is a saved plan of format "2"'),
        (lambda d: d.update(svcctl_version="0.0.9"), r"was made by svcctl \"0.0.9\", and this is svcctl "),
        (lambda d: d.pop("svcctl_version"), r"was made by svcctl null"),
        (lambda d: d["observed"].update(fingerprint="0" * 64), r"its parts disagree"),
        (lambda d: d.update(environment="staging"), r"its parts disagree"),
        (lambda d: d.pop("desired"), r"is not a readable saved plan \(KeyError"),
        (lambda d: d["plan"].update(changes=[{"action": "explode"}]), r"is not a readable saved plan \(Validation"),
        (lambda d: d["observed"].update(resources={"a": 1}), r"is not a readable saved plan \(TypeError"),
    ],
    ids=[
        "format-1",
        "format-string",
        "other-svcctl",
        "no-svcctl-version",
        "fingerprints",
        "names",
        "no-desired",
        "bad-change",
        "bad-digest",
    ],
)
def test_a_plan_file_of_another_format_or_svcctl_or_damaged_is_refused(
    tmp_path: Path, change: typing.Callable[[dict[str, typing.Any]], None], message: str
) -> None:
    _env_dir, out, _saved_plan = _saved(tmp_path)
    _rewrite(out, change)
    with pytest.raises(SvcctlError, match=message) as caught:
        load_plan(out)
    assert "Make the plan again with this svcctl" in caught.value.message


# -- apply's refusals before any host is reached ----------------------------------------------------------


def test_a_saved_plan_applies_to_its_environment_from_another_directory_and_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env_dir, out, saved = _saved(tmp_path)
    other = checkout(tmp_path / "other-checkout")  # the same files elsewhere
    monkeypatch.chdir(tmp_path)
    assert load_for_plan(out, saved, other).name == "prod"
    assert load_for_plan(out, saved, other / "svcctl.yaml").name == "prod"
    monkeypatch.chdir(other)
    assert load_for_plan(out, saved, Path()).name == "prod"


def test_a_saved_plan_is_refused_once_the_yaml_moved_saying_what_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir, out, saved = _saved(tmp_path)
    monkeypatch.chdir(env_dir)
    Path("svcctl.yaml").write_text(YAML.replace("apps:\n", "  extra-db: {plan: pg-small}\napps:\n"))
    with pytest.raises(StalePlan) as caught:
        load_for_plan(out, saved, Path())
    assert caught.value.message == (
        f"the saved plan {out} is not what the YAML says now: instance.extra-db was added to the YAML "
        "(svcctl.yaml:15:3). Nothing was changed. Undo the change to apply this plan, or make a new plan with "
        "`svcctl plan --out` and review it."
    )


def test_a_saved_plan_is_refused_for_another_environment_or_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env_dir, out, saved = _saved(tmp_path)
    staging = checkout(tmp_path / "staging", YAML.replace("environment: prod", "environment: staging"))
    with pytest.raises(StalePlan, match=r"is a plan of environment prod, but .* is environment staging; give the"):
        load_for_plan(out, saved, staging)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(SvcctlError, match=r"^\.: no \*\.yaml .* is a saved plan of environment prod: give .* --env"):
        load_for_plan(out, saved, Path())
    shutil.copy(staging / "svcctl.yaml", empty / "broken.yaml")
    (empty / "broken.yaml").write_text("nodes: 3\n")
    with pytest.raises(InvalidEnvironment):  # a broken environment is reported as such, not as "give --env"
        load_for_plan(out, saved, Path())


def test_env_is_only_for_a_saved_plan(tmp_path: Path) -> None:
    env_dir = checkout(tmp_path)
    with pytest.raises(SvcctlError, match=r"--env names the environment of a saved plan"):
        apply(env_dir, ApplyOptions(environment=env_dir), print, lambda _q: False)


def test_hosts_that_moved_or_changes_that_differ_make_a_saved_plan_stale(tmp_path: Path) -> None:
    _env_dir, out, saved = _saved(tmp_path)
    check_still_current(out, saved, _planned())  # as it was: accepted
    engine = _res(Kind.ENGINE, "db-1.postgres", attrs={"running": True})  # shared and left alone: no matter
    check_still_current(out, saved, _planned(observed=State.of([engine])))
    squatter = _res(Kind.INSTANCE, "orders-db", managed=False, owner="other")
    with pytest.raises(StalePlan, match=r"the hosts changed since it was made: instance.orders-db appeared\. "):
        check_still_current(out, saved, _planned(observed=State.of([squatter])))
    update = CREATE.model_copy(update={"action": Action.UPDATE})
    with pytest.raises(StalePlan, match=r"planned now, the changes differ at instance.orders-db\. Nothing"):
        check_still_current(out, saved, _planned(Plan(environment="prod", changes=[update])))
    with pytest.raises(StalePlan, match=r"planned now, its errors or the hosts' fingerprint differ"):
        check_still_current(out, saved, _planned(Plan(environment="prod", changes=[CREATE], errors=["taken"])))
