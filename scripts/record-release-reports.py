"""Record what observe prints on each Debian release of the lab, the fleet applied, for the unit tests.

Run it as root from the repository, with the lab up and its release hosts booted
(`LAB_RELEASES="bullseye trixie" make lab`):

    .venv/bin/python scripts/record-release-reports.py

It copies examples/fleet to a temporary directory, renames its instances and its environment with a token
of this run (`ledger-13` is `ledger-13-rec1a2b3c`, `fleet` is `fleetrec1a2b3c`, as tests/e2e/test_fleet.py
does), applies it through the real CLI (`svcctl apply . --auto-approve`, waiting out another apply's lock
as tests/e2e/applying.apply does) with the e2e tests' environment but a fixed key (KEY), and checks that
the next plan is empty. It then runs the whole observe script (`svcctl.drivers.observe_script()`) as root
on lab-bullseye, lab-1 and lab-trixie and writes tests/unit/observe_recordings/releases/<codename>.json.
Whatever happened, it then destroys what it made (unprotect, declare nothing, apply --allow-destroy, the
next plan empty: tests/e2e/applying.destroy_all); if that fails, it says so and keeps the directory. The
engines stay installed and running, as svcctl leaves every engine (shared by the node's environments).

Before a report is written it is made what the node would print with the fleet alone on it, under stable
names, so that a new recording changes no meaning:

- the lab is shared: other environments' objects on the node (databases, roles and users, Redis instances
  and their listeners, registry records and claims) are dropped; the engines' own (postgres, root, ...)
  and the engines themselves stay as observed;
- the run's token goes from every name, path, grant and registry entry (`ledger-13`, `fleet`), but not
  from verifiers and hashes, which stay as recorded: they are those of the passwords derived from KEY for
  the run's names, which is why the file keeps the token (`binding/shop/ledger-13/0` was derived as
  `binding/shop/ledger-13-<token>/0`; tests/unit/test_release_recordings.py derives them so);
- the result must pass the controller's strict check, and no password derived for the fleet may appear.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.e2e's helpers, for a script run from scripts/

from ruamel.yaml import YAML  # noqa: E402

from svcctl.drivers import observe_script, reported  # noqa: E402
from svcctl.drivers.mysql.driver import SYSTEM_USERS  # noqa: E402
from svcctl.drivers.postgres.driver import SYSTEM_DATABASES, SYSTEM_ROLES  # noqa: E402
from svcctl.secrets import derive_password  # noqa: E402
from tests.conftest import LAB_ROOT  # noqa: E402
from tests.e2e.applying import apply, assert_converged, destroy_all  # noqa: E402
from tests.e2e.envs import Env  # noqa: E402

EXAMPLE = REPO / "examples" / "fleet"
OUT = REPO / "tests" / "unit" / "observe_recordings" / "releases"
KEY = "svcctl-release-recordings-key!!!"
"""The key every password of the recordings is derived from (32 bytes; a test key, like the other recordings')."""
ENVIRONMENT = "fleet"
APP = "shop"
HOSTS = {"bullseye": "lab-bullseye", "bookworm": "lab-1", "trixie": "lab-trixie"}
INSTANCES = {  # the example's instances -> the release whose node the version places them on
    "ledger-13": "bullseye", "ledger-15": "bookworm", "ledger-17": "trixie",
    "stock-105": "bullseye", "stock-1011": "bookworm", "stock-118": "trixie",
    "cache-6": "bullseye", "cache-7": "bookworm", "cache-8": "trixie",
}  # fmt: skip
SECRET_FIELDS = frozenset({"verifier", "hashes", "authentication_string"})
"""Recorded as printed: the token is never taken out of these."""
APPLY_TIMEOUT_S = 1500  # a first apply installs and starts three engines on each of three releases


class Failed(Exception):
    """What went wrong, said in a sentence; main prints it and exits non-zero."""


class FleetEnv(Env):
    """The e2e tests' environment directory, with the recordings' key, and whose YAML keeps the fleet's own
    nodes, services and plans when destroy_all declares nothing (Env.write would declare lab-1 and lab-2)."""

    frame: str = ""

    def run(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 600,
        stdin: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Env.run with SVCCTL_KEY set to the recordings' key."""
        key = {"SVCCTL_KEY": base64.b64encode(KEY.encode()).decode(), **(extra_env or {})}
        return super().run(*args, check=check, timeout=timeout, stdin=stdin, extra_env=key)

    def write(self, body: str, *, lab2_extra: str = "") -> None:
        """The fleet's nodes, services and plans, then `body`."""
        self.write_raw(self.frame + body)


def fleet(parent: Path, token: str) -> FleetEnv:
    """examples/fleet copied to `parent/fleet<token>`, its instances and environment renamed with the token."""
    path = parent / f"{ENVIRONMENT}{token}"
    shutil.copytree(EXAMPLE, path)
    yaml_file = path / "svcctl.yaml"
    text = yaml_file.read_text()
    for old in INSTANCES:
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", f"{old}-{token}", text)
    text, declared = re.subn(rf"(?m)^environment: {ENVIRONMENT}$", f"environment: {path.name}", text)
    if declared != 1:
        raise Failed(f"{EXAMPLE / 'svcctl.yaml'} does not declare `environment: {ENVIRONMENT}` once")
    yaml_file.write_text(text)
    env = FleetEnv(path=path, token=token)
    doc = YAML(typ="safe").load(text)
    frame = io.StringIO()
    YAML(typ="safe").dump({k: doc[k] for k in ("environment", "nodes", "services", "plans")}, frame)
    env.frame = frame.getvalue()
    return env


def check_lab() -> None:
    """The lab runs each host this script records, on the release it is named for."""
    try:
        hosts = json.loads((LAB_ROOT / "hosts.json").read_text())
    except (OSError, ValueError) as exc:
        raise Failed(
            f"cannot read the lab's hosts ({exc}); bring the lab up: LAB_RELEASES='bullseye trixie' make lab"
        ) from None
    for release, host in HOSTS.items():
        if hosts.get(host, {}).get("release") != release:
            raise Failed(f"the lab has no {host} running Debian {release}: LAB_RELEASES='bullseye trixie' make lab")


def observe(host: str) -> dict[str, Any]:
    """The observe script's document from `host`, run as svcctl runs it (`sudo python3 -`)."""
    res = subprocess.run(
        ["ssh", "-F", str(LAB_ROOT / "ssh_config"), host, "sudo python3 -"],
        input=observe_script(), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise Failed(f"observe failed on {host} ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return reported.decode(host, res.stdout)


def _ours(name: str, token: str) -> bool:
    return token in name


def _named(item: dict[str, Any]) -> str:
    return str(item["name"])


def alone(doc: dict[str, Any], token: str, environment: str) -> tuple[dict[str, Any], list[str]]:
    """The document as if this fleet were alone on the node: other environments' objects dropped (and named)."""
    dropped: list[str] = []

    def keep(what: str, items: list[Any], name: Callable[[Any], str], system: frozenset[str]) -> list[Any]:
        kept = [i for i in items if name(i) in system or _ours(name(i), token)]
        dropped.extend(f"{what} {name(i)}" for i in items if i not in kept)
        return kept

    engines = doc["engines"]
    for cluster in engines["postgres"].get("clusters", []):
        if "databases" in cluster:
            cluster["databases"] = keep("postgres database", cluster["databases"], _named, SYSTEM_DATABASES)
        if "roles" in cluster:
            cluster["roles"] = keep("postgres role", cluster["roles"], _named, SYSTEM_ROLES)
    mysql = engines["mysql"]
    mysql["databases"] = keep("mysql database", mysql.get("databases", []), _named, frozenset())
    mysql["users"] = keep("mysql user", mysql.get("users", []), lambda u: u["user"], SYSTEM_USERS)
    redis = engines["redis"]
    instances = redis.get("instances", {})
    for name in sorted(instances):
        if not _ours(name, token):
            dropped.append(f"redis instance {name}")
            del instances[name]
    ports = {str(i.get("config", {}).get("port")) for i in instances.values()}
    listen = redis.get("listen", [])
    redis["listen"] = [a for a in listen if a.rsplit(":", 1)[-1] in ports]
    dropped += [f"redis listener {a}" for a in listen if a not in redis["listen"]]
    registry: dict[str, Any] = {}
    for address, record in sorted(doc.get("registry", {}).items()):
        claims = record.get("claims")
        if record.get("environment") != environment and environment not in (claims or {}):
            dropped.append(f"registry record {address}")
            continue
        if claims is not None:
            record["claims"] = {environment: claims[environment]} if environment in claims else {}
            dropped += [f"claim of {other} on {address}" for other in sorted(claims) if other != environment]
        record["environment"] = environment
        registry[address] = record
    doc["registry"] = registry
    return doc, dropped


def stable(value: Any, token: str) -> Any:
    """`value` with the run's token taken out of every key and string, verifiers and hashes aside."""
    if isinstance(value, dict):
        return {stable(k, token): v if k in SECRET_FIELDS else stable(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [stable(v, token) for v in value]
    if isinstance(value, str):  # names, SQL identifiers (grants escape their `_`), paths, the environment
        for old, new in ((f"\\_{token}", ""), (f"_{token}", ""), (f"-{token}", ""), (ENVIRONMENT + token, ENVIRONMENT)):
            value = value.replace(old, new)
    return value


def passwords(token: str) -> list[str]:
    """Every password the fleet's apply derived from KEY (its bindings' and its Redis admins'), by either name."""
    purposes = []
    for instance in INSTANCES:
        for name in (instance, f"{instance}-{token}"):
            purposes += [f"binding/{APP}/{name}/0", f"instance/{name}/admin"]
    return [derive_password(KEY.encode(), p).reveal() for p in purposes]


def recording(release: str, host: str, doc: dict[str, Any], token: str) -> dict[str, Any]:
    """The file's content for one release: the normalised report, and how to judge its credentials."""
    report, dropped = alone(doc, token, f"{ENVIRONMENT}{token}")
    report = stable(report, token)
    text = json.dumps(report)
    if token in text:
        raise Failed(f"{host}: the token {token} is still in the report after normalising; record again")
    leaked = [p for p in passwords(token) if p in text]
    if leaked:
        raise Failed(f"{host}: the report holds {len(leaked)} derived password(s) in plain text; nothing written")
    checked = reported.observation(host, reported.decode(host, text))
    if dict(checked.engines) != report["engines"] or dict(checked.registry) != report["registry"]:
        raise Failed(f"{host}: the strict check changes the normalised report; nothing written")
    print(f"{host}: dropped {len(dropped)} object(s) of other environments: {', '.join(dropped) or 'none'}")
    return {
        "doc": (
            f"observe on {host} (Debian {release}) with examples/fleet applied (scripts/record-release-reports.py): "
            f"the run's names were <name>-{token} and {ENVIRONMENT}{token}, made stable here; other environments' "
            "objects dropped; verifiers as recorded, for passwords derived from `key` for the run's names"
        ),
        "release": release,
        "node": host,
        "key": KEY,
        "token": token,
        "report": report,
    }


def record(env: FleetEnv) -> dict[str, dict[str, Any]]:
    """Apply the fleet, check it converged, and observe each release's host."""
    res = apply(env, timeout=APPLY_TIMEOUT_S)
    if res.returncode != 0:
        raise Failed(f"svcctl apply exited {res.returncode}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    assert_converged(env)
    return {release: recording(release, host, observe(host), env.token) for release, host in HOSTS.items()}


def destroy(env: FleetEnv) -> str | None:
    """destroy_all: unprotect, declare nothing, apply --allow-destroy, converged; what failed, or None."""
    try:
        destroy_all(env)
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None


def main() -> int:
    """Record, destroy, then write the files (only once everything made is gone)."""
    try:
        check_lab()
    except Failed as exc:
        print(exc, file=sys.stderr)
        return 1
    token = f"rec{secrets.token_hex(3)}"
    parent = Path(tempfile.mkdtemp(prefix="svcctl-record-"))
    env = fleet(parent, token)
    recorded: dict[str, dict[str, Any]] = {}
    failure = None
    try:
        recorded = record(env)
    except (Failed, AssertionError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    finally:
        left = destroy(env)
    if left is not None:
        print(
            f"could not destroy what {env.path} made: {left}\nrun `svcctl apply . --allow-destroy` there.",
            file=sys.stderr,
        )
        return 1
    shutil.rmtree(parent)
    if failure is not None:
        print(f"nothing recorded: {failure}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    for release, content in recorded.items():
        path = OUT / f"{release}.json"
        path.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
