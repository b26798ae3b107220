"""Backup and restore of a big PostgreSQL database through svcctl, against pg_dump and pg_restore run by hand.

One instance on a lab host (default lab-1) with a backup schedule, filled to about --mb MB; then, interleaved
for --runs rounds:

- `svcctl backup INSTANCE` (the CLI in a fresh process: SSH, `systemctl start --wait` of the instance's
  backup service, pg_dump -Fc, checksum, result) against `pg_dump -Fc` by hand over ssh on the same host;
- `svcctl restore INSTANCE --from latest --force --auto-approve` against `pg_restore --clean --if-exists
  --no-owner` by hand of the hand-made dump.

It prints the medians and the ratios by hand / svcctl (the issue's target: >= 0.9), and destroys what it made.
Timings come from this script only: no test asserts them.

    .venv/bin/python benchmarks/backup.py [--host lab-1] [--mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAB = Path(os.environ.get("SVCCTL_LAB_ROOT", "/var/lib/svcctl-lab"))
REPO = Path(__file__).resolve().parents[1]


def ssh(host: str, command: str, stdin: str = "") -> str:
    res = subprocess.run(["ssh", "-F", str(LAB / "ssh_config"), host, command], input=stdin,
                         capture_output=True, text=True, timeout=3600)  # fmt: skip
    if res.returncode != 0:
        sys.exit(f"ssh {host} {command!r} failed: {res.stderr.strip()[-500:]}")
    return res.stdout


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.monotonic()
    res = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=3600)
    took = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({res.returncode}): {res.stdout[-800:]}{res.stderr[-800:]}")
    return took


def timed_ssh(host: str, command: str) -> float:
    t0 = time.monotonic()
    ssh(host, command)
    return time.monotonic() - t0


def environment(host: str, name: str, with_instance: bool) -> str:
    """The benchmark's environment `name`: one PostgreSQL instance `name` with backups, or none."""
    instances = f"  {name}: {{plan: pg-big, node: {host}, protect: false}}" if with_instance else "  {}"
    return f"""\
environment: {name}
nodes:
  {host}:
    host: {host}
    ssh_config: {LAB / "ssh_config"}
    engines: [postgres]
    capacity: {{memory_mb: 4096, storage_mb: 40960}}
services:
  postgres: {{engine: postgres, versions: ["15"]}}
plans:
  pg-big: {{service: postgres, storage_mb: 4096, connections: 20, backup: {{schedule: daily, keep: 3}}}}
instances:
{instances}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="lab-1")
    parser.add_argument("--mb", type=int, default=200, help="about how big the database is made")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    name = f"bk{secrets.token_hex(3)}"  # the instance, its database and the environment
    database = name
    work = Path(tempfile.mkdtemp(prefix="svcctl-bench-backup-"))
    env = {**os.environ, "SVCCTL_KEY": base64.b64encode(os.urandom(32)).decode()}
    svcctl = [sys.executable, "-m", "svcctl"]
    yaml = work / "svcctl.yaml"
    yaml.write_text(environment(args.host, name, with_instance=True))
    timed([*svcctl, "apply", ".", "--auto-approve"], env, work)
    hand = f"/var/tmp/{name}-by-hand.dump"
    try:
        rows = args.mb * 1024 * 1024 // 240  # about 240 bytes a row on disk
        sql = (f"CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 150) AS pad "
               f"FROM generate_series(1, {rows}) g; ALTER TABLE big OWNER TO {database}_owner;")  # fmt: skip
        ssh(args.host, f"sudo -n runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d {database}", stdin=sql)
        size = ssh(args.host, f"sudo -n runuser -u postgres -- psql -XAtq -d {database} "
                              f"-c \"SELECT pg_database_size('{database}') / 1048576\"").strip()  # fmt: skip
        by_hand_dump = (f"sudo -n runuser -u postgres -- pg_dump -Fc -f {hand}.tmp {database} && "
                        f"sudo -n mv {hand}.tmp {hand}")  # fmt: skip
        by_hand_restore = (f"sudo -n runuser -u postgres -- pg_restore --clean --if-exists --no-owner "
                           f"--role={database}_owner -d {database} {hand}")  # fmt: skip
        figures: dict[str, list[float]] = {"svcctl backup": [], "pg_dump by hand": [],
                                            "svcctl restore": [], "pg_restore by hand": []}  # fmt: skip
        for i in range(args.runs):
            order = [0, 1] if i % 2 == 0 else [1, 0]  # alternate which goes first
            for which in order:
                if which == 0:
                    figures["svcctl backup"].append(timed([*svcctl, "backup", name, "--env", "."], env, work))
                else:
                    figures["pg_dump by hand"].append(timed_ssh(args.host, by_hand_dump))
            for which in order:
                if which == 0:
                    restore = [*svcctl, "restore", name, "--env", ".", "--from", "latest", "--force", "--auto-approve"]
                    figures["svcctl restore"].append(timed(restore, env, work))
                else:
                    figures["pg_restore by hand"].append(timed_ssh(args.host, by_hand_restore))
        medians = {k: statistics.median(v) for k, v in figures.items()}
        print(f"database: {size} MB on {args.host}, {args.runs} rounds, interleaved")
        for k, v in figures.items():
            print(f"  {k:20} median {medians[k]:6.2f} s  ({', '.join(f'{x:.2f}' for x in v)})")
        for what, hand_key, ours in (("backup", "pg_dump by hand", "svcctl backup"),
                                     ("restore", "pg_restore by hand", "svcctl restore")):  # fmt: skip
            print(f"  {what}: by hand / svcctl = {medians[hand_key] / medians[ours]:.2f} (target >= 0.9)")
    finally:
        ssh(args.host, f"sudo -n rm -f {hand} {hand}.tmp")
        yaml.write_text(environment(args.host, name, with_instance=False))
        timed([*svcctl, "apply", ".", "--auto-approve", "--allow-destroy"], env, work)
        ssh(args.host, f"sudo -n rm -rf /var/backups/svcctl/{name}")


if __name__ == "__main__":
    main()
