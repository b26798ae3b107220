"""Backups on the lab (issue #13): declared per plan and instance, applied as systemd timers, taken now with
`svcctl backup`, listed with `svcctl backups`, pulled here with a matching checksum, and restored.

One environment for the module (a PostgreSQL and a Redis instance on lab-1, a MariaDB one on lab-2, an app
bound to each), applied once and always destroyed in the finalizer, after which the timers must be gone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from svcctl.secrets import derive_password
from tests.conftest import Lab
from tests.e2e.applying import apply, assert_converged, destroy_all
from tests.e2e.envs import TEST_KEY, Env, make_env


def body(env: Env) -> str:
    return (
        "  pg-bk: {service: postgres, storage_mb: 512, connections: 20, backup: {schedule: daily, keep: 3}}\n"
        "instances:\n"
        f"  {env.pg()}: {{plan: pg-bk, node: lab-1, protect: false}}\n"
        f"  {env.rd()}: {{plan: cache-16, node: lab-1, protect: false,\n"
        '    backup: {schedule: "Mon..Fri 02:30", keep: 2}}\n'
        f"  {env.my()}: {{plan: mysql-small, node: lab-2, protect: false, backup: {{keep: 2}}}}\n"
        f"  {env.pg()}-drill: {{plan: pg-small, node: lab-1, protect: false}}\n"  # restore drills go here
        f"  {env.my()}-drill: {{plan: mysql-small, node: lab-2, protect: false}}\n"
        f"  {env.rd()}-drill: {{plan: cache-16, node: lab-1, protect: false}}\n"
        f"apps:\n  {env.app()}: {{manifest: apps/manifest.yml, format: cf}}\n"
        "bindings:\n"
        f"  - {{app: {env.app()}, instance: {env.pg()}}}\n"
        f"  - {{app: {env.app()}, instance: {env.my()}}}\n"
        f"  - {{app: {env.app()}, instance: {env.rd()}}}\n"
    )


def timers(lab: Lab, host: str) -> str:
    return lab.ssh(host, "systemctl list-timers --all --no-pager --plain 'svcctl-backup-*'").stdout


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The module's environment, applied with backups declared; destroyed after, and its timers checked gone."""
    made = make_env(tmp_path_factory.mktemp("backups"), secrets.token_hex(3))
    (made.path / "apps").mkdir()
    (made.path / "apps" / "manifest.yml").write_text(f"applications:\n  - name: {made.app()}\n")
    try:
        made.write(body(made))
        res = apply(made)
        assert res.returncode == 0, res.stdout + res.stderr
        yield made
    finally:
        destroy_all(made)
        for host in ("lab-1", "lab-2"):
            listed = timers(lab, host)
            for name in (made.pg(), made.rd(), made.my()):
                assert f"svcctl-backup-{name}.timer" not in listed
                assert lab.ssh(host, f"test -e /etc/svcctl/backup/{name}.json", check=False).returncode == 1
        gone = f"sudo -n test -e /etc/credstore.encrypted/svcctl-backup-{made.rd()}"
        assert lab.ssh("lab-1", gone, check=False).returncode == 1
        for host, name in (("lab-1", made.pg()), ("lab-1", made.rd()), ("lab-2", made.my())):
            lab.ssh(host, f"sudo -n rm -rf /var/backups/svcctl/{name}")  # the test's dumps, kept by design


def listing(env: Env, instance: str) -> list[dict[str, Any]]:
    res = env.run("backups", instance, "-o", "json", "--env", ".")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["instance"] == instance
    entries: list[dict[str, Any]] = doc["backups"]
    return entries


def tunnel(env: Env, instance: str, *command: str, stdin: str | None = None) -> str:
    """Run a real client through `svcctl tunnel --app` (the app's binding): its stdout; fails on its exit code."""
    res = env.run("tunnel", instance, "--app", env.app(), "--env", ".", "--", *command, stdin=stdin)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_apply_installs_one_timer_per_instance_with_its_schedule(lab: Lab, env: Env) -> None:
    one, two = timers(lab, "lab-1"), timers(lab, "lab-2")
    assert f"svcctl-backup-{env.pg()}.timer" in one and f"svcctl-backup-{env.rd()}.timer" in one
    assert f"svcctl-backup-{env.my()}.timer" in two
    shown = lab.ssh("lab-1", f"systemctl show -p TimersCalendar svcctl-backup-{env.rd()}.timer").stdout
    assert "Mon..Fri *-*-* 02:30:00" in shown
    assert_converged(env)


def password(purpose: str) -> str:
    return derive_password(base64.b64decode(TEST_KEY), purpose).reveal()


def redis_port(lab: Lab, instance: str) -> int:
    return int(lab.ssh("lab-1", f"sudo -n sed -n 's/^port //p' /etc/redis/redis-{instance}.conf").stdout)


def redis_as(lab: Lab, instance: str, user: str, secret: str, *command: str) -> str:
    """redis-cli on lab-1 as `user`, its password on stdin and in redis-cli's environment only: what it printed
    (an error reply too, whatever its exit code)."""
    words = " ".join(command)
    script = (
        f"read -r P; REDISCLI_AUTH=$P redis-cli --no-auth-warning --user {user} -p {redis_port(lab, instance)} {words}"
    )
    res = lab.ssh("lab-1", script, stdin=secret + "\n", check=False)
    return (res.stdout + res.stderr).strip()


def test_the_redis_backup_holds_no_password_in_clear_and_its_user_reads_no_key(lab: Lab, env: Env) -> None:
    rd = env.rd()
    stored = f"/etc/credstore.encrypted/svcctl-backup-{rd}"
    assert lab.ssh("lab-1", f"sudo -n stat -c %a:%U {stored} /etc/credstore.encrypted").stdout.split() == [
        "600:root", "700:root"
    ]  # fmt: skip
    unit = lab.ssh("lab-1", f"cat /etc/systemd/system/svcctl-backup-{rd}.service").stdout
    assert f"LoadCredentialEncrypted=svcctl-backup:{stored}" in unit.splitlines()
    assert lab.ssh("lab-1", f"test -e /etc/svcctl/backup/{rd}.auth", check=False).returncode == 1
    # Neither the admin's nor the backup user's password is in clear in any file there (patterns on stdin).
    clear = "\n".join((password(f"instance/{rd}/admin"), password(f"instance/{rd}/backup"))) + "\n"
    where = "/etc/svcctl /etc/credstore* /etc/systemd/system /var/backups/svcctl"  # the glob: those that exist
    found = lab.ssh("lab-1", f"sudo -n sh -c 'grep -rlF -f /dev/stdin {where}'", stdin=clear, check=False)
    assert found.returncode == 1 and found.stdout == "", found.stdout + found.stderr
    # The backup user may ping and BGSAVE, and is refused every key.
    backup = password(f"instance/{rd}/backup")
    assert tunnel(env, rd, "redis-cli", "SET", "secret-key", "v").strip() == "OK"
    assert redis_as(lab, rd, "svcctl_backup", backup, "PING") == "PONG"
    assert "NOPERM" in redis_as(lab, rd, "svcctl_backup", backup, "GET", "secret-key")
    assert "NOPERM" in redis_as(lab, rd, "svcctl_backup", backup, "KEYS", "'*'")
    assert "NOPERM" in redis_as(lab, rd, "svcctl_backup", backup, "CONFIG", "GET", "dir")
    assert "WRONGPASS" in redis_as(lab, rd, "svcctl_backup", "not-its-password", "PING")


def test_an_old_admin_password_file_is_drift_that_apply_removes(lab: Lab, env: Env) -> None:
    rd = env.rd()
    lab.ssh("lab-1", f"sudo -n install -m 0600 /dev/null /etc/svcctl/backup/{rd}.auth")
    res = env.run("plan", ".", "-o", "json", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    changes = {c["address"]: c for c in json.loads(res.stdout)["changes"]}
    assert [a["name"] for a in changes[f"backup.{rd}"]["attributes"]] == ["credentials"]
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.ssh("lab-1", f"test -e /etc/svcctl/backup/{rd}.auth", check=False).returncode == 1
    assert_converged(env)


@pytest.mark.parametrize("engine", ["postgres", "mysql", "redis"])
def test_backup_now_then_list_then_pull_with_a_matching_checksum(env: Env, engine: str, tmp_path: Path) -> None:
    instance = {"postgres": env.pg(), "mysql": env.my(), "redis": env.rd()}[engine]
    before = {e["id"] for e in listing(env, instance)}
    res = env.run("backup", instance, "--env", ".")
    assert res.returncode == 0, res.stdout + res.stderr
    assert ": ok," in res.stdout
    made = [e for e in listing(env, instance) if e["id"] not in before]
    assert len(made) == 1 and made[0]["result"] == "ok" and made[0]["size"] > 0
    res = env.run("backups", "pull", instance, str(tmp_path), "--id", made[0]["id"], "--env", ".")
    assert res.returncode == 0, res.stdout + res.stderr
    pulled = tmp_path / made[0]["file"]
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == made[0]["sha256"]
    assert oct(pulled.stat().st_mode & 0o777) == "0o600"
    # Never overwritten without --force; with it, the same verified copy again.
    again = env.run("backups", "pull", instance, str(tmp_path), "--env", ".")
    if again.returncode == 0:  # latest may be newer than made[0] only if the timer ran meanwhile
        assert made[0]["file"] not in again.stdout
    else:
        assert "never overwrites" in again.stderr
    forced = env.run("backups", "pull", instance, str(tmp_path), "--id", made[0]["id"], "--force", "--env", ".")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def restore(env: Env, instance: str, *args: str) -> Any:
    return env.run("restore", instance, "--env", ".", *args, timeout=900)


def test_postgres_restore_brings_a_dropped_table_back_and_the_binding_still_works(env: Env) -> None:
    pg = env.pg()
    rows = "create table items (id int primary key, name text); insert into items values (1, 'a'), (2, 'b'), (3, 'c')"
    tunnel(env, pg, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", rows)
    assert env.run("backup", pg, "--env", ".").returncode == 0
    tunnel(env, pg, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", "drop table items; create table other (x int)")
    # Over data: refused without --force, and without a terminal without --auto-approve.
    res = restore(env, pg, "--from", "latest")
    assert res.returncode == 1 and "holds data" in res.stderr
    res = restore(env, pg, "--from", "latest", "--force")
    assert res.returncode == 1 and "--auto-approve" in res.stderr
    assert "items" not in tunnel(env, pg, "psql", "-XAtq", "-c", "select tablename from pg_tables")
    res = restore(env, pg, "--from", "latest", "--force", "--auto-approve", "--verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        tunnel(env, pg, "psql", "-XAtq", "-c", "select string_agg(name, ',' order by id) from items").strip() == "a,b,c"
    )
    # The app's credentials still work, and it may still write to what was restored.
    tunnel(env, pg, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", "insert into items values (4, 'd')")
    assert tunnel(env, pg, "psql", "-XAtq", "-c", "select count(*) from items").strip() == "4"


def test_mariadb_restore_brings_a_dropped_table_back(env: Env) -> None:
    my = env.my()
    tunnel(
        env,
        my,
        "mariadb",
        "-N",
        "-B",
        "-e",
        "create table items (id int primary key); insert into items values (1), (2)",
    )
    assert env.run("backup", my, "--env", ".").returncode == 0
    tunnel(env, my, "mariadb", "-N", "-B", "-e", "drop table items; create table other (x int)")
    assert restore(env, my).returncode == 1
    res = restore(env, my, "--force", "--auto-approve", "--verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert tunnel(env, my, "mariadb", "-N", "-B", "-e", "select count(*) from items").strip() == "2"


def test_redis_restore_replaces_the_dataset_and_the_binding_still_works(env: Env) -> None:
    rd = env.rd()
    assert tunnel(env, rd, "redis-cli", "SET", "restore-key", "before").strip() == "OK"
    assert env.run("backup", rd, "--env", ".").returncode == 0
    assert tunnel(env, rd, "redis-cli", "SET", "restore-key", "after").strip() == "OK"
    assert restore(env, rd).returncode == 1  # Redis: always "may hold data"
    res = restore(env, rd, "--force", "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    assert tunnel(env, rd, "redis-cli", "GET", "restore-key").strip() == "before"


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_a_restore_drill_into_another_instance_verifies_every_table_and_row(lab: Lab, env: Env, engine: str) -> None:
    source = env.pg() if engine == "postgres" else env.my()
    drill, host = f"{source}-drill", "lab-1" if engine == "postgres" else "lab-2"
    fill = "create table drill_rows as select seq as id, md5(seq) as v from seq_1_to_2500"
    if engine == "postgres":
        fill = "create table drill_rows as select g as id, md5(g::text) as v from generate_series(1, 2500) g"
        tunnel(env, source, "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", fill)
    else:
        tunnel(env, source, "mariadb", "-N", "-B", "-e", fill)
    assert env.run("backup", source, "--env", ".").returncode == 0
    res = restore(env, source, "--into", drill, "--verify", "--force", "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert re.search(rf"Restored backup \d{{8}}T\d{{6}}Z into {drill} in \d+\.\d s", out), out
    assert re.search(r"Verified: \d+ table\(s\), \d+ row\(s\), as the dump holds them", out), out
    db = drill.replace("-", "_")
    if engine == "postgres":
        counted = lab.ssh(
            host, f"sudo -n runuser -u postgres -- psql -XAtq -d {db} -c 'select count(*) from drill_rows'"
        )
    else:
        counted = lab.ssh(host, f"sudo -n mariadb -N -B -e 'select count(*) from {db}.drill_rows'")
    assert counted.stdout.strip() == "2500"


def test_a_redis_restore_drill_compares_each_databases_keys_and_names_a_wrong_count(lab: Lab, env: Env) -> None:
    rd = env.rd()
    drill = f"{rd}-drill"
    fill = "".join(f"SET drill-{i} {i}\n" for i in range(250)) + "SET drill-ttl v EX 86400\nSELECT 2\nSET other 1\n"
    tunnel(env, rd, "redis-cli", stdin=fill)
    assert env.run("backup", rd, "--env", ".").returncode == 0
    expected = {
        db: int(n)
        for db, n in re.findall(r"^(db\d+):keys=(\d+)", redis_as(lab, rd, "default", password(f"instance/{rd}/admin"),
                                                            "INFO", "keyspace"), re.M)
    }  # fmt: skip
    assert expected["db0"] >= 251 and expected["db2"] == 1
    res = restore(env, rd, "--into", drill, "--verify", "--force", "--auto-approve")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert re.search(rf"Restored backup \d{{8}}T\d{{6}}Z into {drill} in \d+\.\d s", out), out
    assert f"Verified: {len(expected)} database(s), {sum(expected.values())} key(s), as the dump holds them." in out
    # A restore that does not take (the target loads an AOF of its own instead of the RDB) is named.
    conf = f"/etc/redis/redis-{drill}.conf"
    admin = password(f"instance/{drill}/admin")
    lab.ssh("lab-1", f"sudo -n sh -c 'echo appendonly yes >> {conf}' && sudo -n systemctl restart redis-server@{drill}")
    try:
        assert redis_as(lab, drill, "default", admin, "FLUSHALL") == "OK"
        assert redis_as(lab, drill, "default", admin, "SET", "stray", "1") == "OK"
        res = restore(env, rd, "--into", drill, "--verify", "--force", "--auto-approve")
        assert res.returncode == 1, res.stdout + res.stderr
        assert f'"db0": 1 key(s), the dump has {expected["db0"]} key(s), 1 of them with a TTL' in res.stderr
        assert '"db2": 0 key(s), the dump has 1 key(s)' in res.stderr
    finally:
        lab.ssh(
            "lab-1", f"sudo -n sed -i '/^appendonly yes$/d' {conf} && sudo -n systemctl restart redis-server@{drill}"
        )
    assert_converged(env)


def test_a_changed_schedule_and_a_timer_stopped_by_hand_are_planned_and_applied(lab: Lab, env: Env) -> None:
    pg, rd = env.pg(), env.rd()
    lab.ssh("lab-1", f"sudo -n systemctl disable --now svcctl-backup-{rd}.timer")
    env.write(body(env).replace("backup: {schedule: daily, keep: 3}", 'backup: {schedule: "*-*-* 04:15:00", keep: 5}'))
    res = env.run("plan", ".", "-o", "json", "--detailed-exitcode")
    assert res.returncode == 2, res.stdout + res.stderr
    changes = {c["address"]: c for c in json.loads(res.stdout)["changes"]}
    assert sorted(a for a in changes if a.startswith("backup.")) == [f"backup.{pg}", f"backup.{rd}"]
    assert {a["name"] for a in changes[f"backup.{pg}"]["attributes"]} == {"schedule", "keep"}
    assert [a["name"] for a in changes[f"backup.{rd}"]["attributes"]] == ["enabled"]
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    shown = lab.ssh("lab-1", f"systemctl show -p TimersCalendar -p ActiveState svcctl-backup-{pg}.timer").stdout
    assert "*-*-* 04:15:00" in shown and "ActiveState=active" in shown
    config = json.loads(lab.ssh("lab-1", f"sudo -n cat /etc/svcctl/backup/{pg}.json").stdout)
    assert config["keep"] == 5
    timer = f"svcctl-backup-{rd}.timer"
    state = lab.ssh("lab-1", f"systemctl is-enabled {timer}; systemctl is-active {timer}")
    assert state.stdout.split() == ["enabled", "active"]
    assert_converged(env)


def test_removing_a_redis_backup_removes_its_user_and_its_credential(lab: Lab, env: Env) -> None:
    rd = env.rd()
    admin = password(f"instance/{rd}/admin")
    assert "svcctl_backup" in redis_as(lab, rd, "default", admin, "ACL", "USERS")
    env.write(body(env).replace(',\n    backup: {schedule: "Mon..Fri 02:30", keep: 2}}', "}"))
    res = apply(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.ssh("lab-1", f"sudo -n test -e /etc/credstore.encrypted/svcctl-backup-{rd}", check=False).returncode == 1
    assert "svcctl_backup" not in lab.ssh("lab-1", f"sudo -n cat /etc/redis/users-{rd}.acl").stdout
    assert "svcctl_backup" not in redis_as(lab, rd, "default", admin, "ACL", "USERS")  # dropped live too
    assert redis_as(lab, rd, "default", admin, "DBSIZE") != "0"  # the instance and its data stay
    assert_converged(env)
