"""Where an instance lives and how a tunnel logs in to it: a binding's user, or a temporary session user.

The node is the one whose registry records the instance for this environment (the placement apply made);
reading the registries of the candidate nodes in parallel is one short command each, far quicker than
observing.  When the tunnel's OpenSSH master is already connecting to the one node the instance can be on,
the registry is read through it (`locate_through`: no second SSH handshake); else svcctl's own sessions read
the candidates'.  A temporary user is created and dropped by the session helper over the same connection
(one round trip each, no Ansible), with its secrets on stdin only.  A registry is what the node says, so
every value read from it (database, port, a binding's user) is checked against svcctl.model.types before
a client, an option file or the helper's request gets it.
"""

from __future__ import annotations

import datetime
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from svcctl.drivers import drivers, reported, sessions
from svcctl.drivers.base import binding_user
from svcctl.errors import SvcctlError
from svcctl.hostlib.registry import REGISTRY_PATH, empty_registry
from svcctl.model.spec import Environment
from svcctl.model.types import check_identifier
from svcctl.secrets import Secret, derive_password, instance_admin_password, session_password
from svcctl.ssh import SshTarget
from svcctl.state import Kind, Resource

if TYPE_CHECKING:  # svcctl.ssh.session imports paramiko (0.1 s), which a tunnel through OpenSSH never needs
    from svcctl.ssh import SshSession
    from svcctl.tunnel.master import SshMaster

ENGINE_PORTS = {"postgres": 5432, "mysql": 3306}
"""The engines' ports on the node; a Redis instance's port is in its record."""
SESSION_TTL = datetime.timedelta(hours=12)
"""How long a temporary user may log in (PostgreSQL enforces it; for the others the registry records it)."""


class Ran(Protocol):
    """A finished command's exit code and output (svcctl.ssh's CommandResult, the master's RemoteResult)."""

    @property
    def rc(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


class NodeCommands(Protocol):
    """What runs the session helper on a node: svcctl's own SshSession, or the tunnel's OpenSSH master."""

    @property
    def name(self) -> str:
        """The node's name, for messages."""
        ...

    def run(self, argv: Sequence[str], *, sudo: bool = ..., stdin: bytes | None = ..., timeout: float = ...) -> Ran:
        """Run argv on the node (secrets on stdin only)."""
        ...


@dataclass(frozen=True)
class Located:
    """An instance found on its node: the node's registry records for this environment, by address."""

    instance: str
    engine: str
    node: str
    records: Mapping[str, Mapping[str, Any]]

    @property
    def attrs(self) -> Mapping[str, Any]:
        """The instance's recorded attributes (database, Redis port, ...), as the node reports them."""
        attrs = self.records[f"instance.{self.instance}"].get("attrs")
        return attrs if isinstance(attrs, Mapping) else {}

    @property
    def remote_port(self) -> int:
        """The engine's port on the node: PostgreSQL's and MariaDB's fixed one, or the Redis instance's record."""
        port = self.attrs.get("port")
        if port is None and self.engine in ENGINE_PORTS:
            return ENGINE_PORTS[self.engine]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise self.unsafe("port", f"{_shown(port)} is not a TCP port")
        return port

    @property
    def database(self) -> str | None:
        """The database the instance is (None for Redis), checked as an identifier."""
        db = self.attrs.get("database")
        if db is None or db == "":
            return None
        return self.checked("database", db, check_identifier)

    def checked(self, what: str, value: object, check: Callable[[str], str]) -> str:
        """A string from the node's registry that passed `check`, or a SvcctlError naming the node."""
        if not isinstance(value, str):
            raise self.unsafe(what, f"{_shown(value)} is not a string")
        try:
            return check(value)
        except ValueError as exc:
            raise self.unsafe(what, str(exc)) from None

    def unsafe(self, what: str, problem: str) -> SvcctlError:
        """The error for a registry value svcctl refuses to use."""
        return SvcctlError(
            f"node {self.node}: its registry records an unusable {what} for instance {self.instance} ({problem}); "
            "svcctl passes nothing from it to a client. The record may have been tampered with: check the "
            "node's /var/lib/svcctl/registry.json, and run `svcctl plan` to see what it records."
        )


def _shown(value: object) -> str:
    """A registry value of the wrong type, for a message: its type, and its repr only when short."""
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def target_of(env: Environment, node: str, connect_timeout: float = 10) -> SshTarget:
    """The node's SSH target, exactly as plan and apply reach it."""
    return SshTarget.from_node(node, env.nodes[node], connect_timeout=connect_timeout)


READ_REGISTRY = [
    "sh",
    "-c",
    f'if [ -e "$1" ]; then exec cat -- "$1"; fi; echo {shlex.quote(json.dumps(empty_registry()))}',
    "sh",
    REGISTRY_PATH,
]
"""The node's registry as it is (apply writes it atomically; readers take no lock), or the empty one if none:
`cat` as root, a quarter of what the session helper's `find` costs the node (python3 and the helper's imports)."""


def _registry(session: NodeCommands) -> dict[str, Any]:
    res = session.run(READ_REGISTRY, sudo=True, timeout=30)
    if res.rc != 0:
        raise SvcctlError(f"node {session.name}: cannot read svcctl's registry: {res.stderr.strip()[-300:]}")
    # the same checks as observe's: a registry is what the node says
    return reported.registry(session.name, reported.decode(session.name, res.stdout).get("objects", {}))


def locate(env: Environment, environment: str, instance: str) -> tuple[Located, SshSession]:
    """Find the node holding `instance` and return it with an open SSH session to it (the caller closes it)."""
    if instance not in env.instances:
        known = ", ".join(sorted(env.instances)) or "none"
        raise SvcctlError(f"no instance {instance!r} in environment {environment!r} (its instances: {known}).")
    engine = env.engine_of(instance)
    pinned = env.instances[instance].node
    candidates = [pinned] if pinned else sorted(n for n, node in env.nodes.items() if engine in node.engines)

    from svcctl.ssh import connect

    def look(node: str) -> tuple[SshSession, dict[str, Any]] | SvcctlError:
        try:
            session = connect(target_of(env, node))
        except SvcctlError as exc:
            return exc
        try:
            return session, _registry(session)
        except SvcctlError as exc:
            session.close()
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(candidates))), thread_name_prefix="locate") as pool:
        results = dict(zip(candidates, pool.map(look, candidates), strict=True))
    found: tuple[Located, SshSession] | None = None
    failures: list[SvcctlError] = []
    for node, result in results.items():
        if isinstance(result, SvcctlError):
            failures.append(result)
            continue
        session, objects = result
        here = _located(objects, environment, instance, engine, node)
        if found is None and here is not None:
            found = here, session
        else:
            session.close()
    if found is not None:
        return found
    if failures:
        if len(failures) == 1:
            raise failures[0]
        raise SvcctlError(f"cannot tell where instance {instance} is: " + " ".join(f.message for f in failures))
    raise _not_created(instance, environment)


def locate_through(master: SshMaster, env: Environment, environment: str, instance: str) -> Located:
    """The instance on the one node it can be on, read through the tunnel's OpenSSH master to that node
    (once it is connected): the same helper and checks as `locate`, without a second SSH handshake."""
    engine = env.engine_of(instance)
    master.ready(master.target.connect_timeout + 5)
    found = _located(_registry(master), environment, instance, engine, master.name)
    if found is None:
        raise _not_created(instance, environment)
    return found


def _located(objects: dict[str, Any], environment: str, instance: str, engine: str, node: str) -> Located | None:
    """The instance as `node`'s checked registry records it for `environment`, or None if it does not."""
    ours = {a: r for a, r in objects.items() if isinstance(r, dict) and r.get("environment") == environment}
    if f"instance.{instance}" not in ours:
        return None
    return Located(instance=instance, engine=engine, node=node, records=ours)


def _not_created(instance: str, environment: str) -> SvcctlError:
    return SvcctlError(
        f"instance {instance} has not been created yet (no node of environment {environment!r} records it); "
        "run `svcctl apply` first, then open the tunnel."
    )


def binding_login(env: Environment, located: Located, app: str, key: bytes) -> tuple[str, Secret]:
    """The user and derived password of `app`'s binding to the instance, as apply created them."""
    instance = located.instance
    if app not in env.apps:
        raise SvcctlError(f"no app {app!r} in the environment (its apps: {', '.join(sorted(env.apps)) or 'none'}).")
    if not any(b.app == app and b.instance == instance for b in env.bindings):
        raise SvcctlError(f"app {app} has no binding to instance {instance}; add one to the YAML and apply it.")
    record = located.records.get(f"binding.{app}.{instance}")
    if record is None:
        raise SvcctlError(
            f"the binding of app {app} to instance {instance} has not been applied yet on node {located.node}; "
            "run `svcctl apply` first."
        )
    recorded = record.get("attrs") if isinstance(record, Mapping) else None
    attrs = dict(recorded) if isinstance(recorded, Mapping) else {}
    rotation = attrs.get("rotation")
    if isinstance(rotation, bool) or not isinstance(rotation, int) or rotation < 0:
        raise located.unsafe(f"rotation of app {app}'s binding", f"{_shown(rotation)} is not a rotation number")
    user = located.checked(f"user of app {app}'s binding", attrs.get("user"), check_identifier)
    expected = binding_user(app, instance, rotation)
    if user != expected:
        raise located.unsafe(f"user of app {app}'s binding", f"{user}, where svcctl created {expected}")
    binding = Resource(kind=Kind.BINDING, name=f"{app}.{instance}", node=located.node, engine=located.engine,
                       attrs=attrs)  # fmt: skip
    secret = drivers()[located.engine].secrets_for(binding, lambda purpose: derive_password(key, purpose))
    return user, secret["password"]


@dataclass
class TempUser:
    """A temporary session user on the instance's node: created by `create`, removed by `drop`."""

    located: Located
    environment: str
    key: bytes
    role: str
    session_id: str
    expiry: str

    @classmethod
    def new(cls, located: Located, environment: str, key: bytes, write: bool) -> TempUser:
        """A new session (not yet created on the node)."""
        return cls(located, environment, key, "readwrite" if write else "readonly", sessions.new_id(),
                   sessions.expires_at(SESSION_TTL))  # fmt: skip

    @property
    def user(self) -> str:
        """The engine user: `svs_<instance>_<id>`."""
        return sessions.user_name(self.located.instance, self.session_id)

    @property
    def password(self) -> Secret:
        """Its password, derived from the key and the session's identity."""
        return session_password(self.key, self.located.instance, self.session_id)

    def _request(self) -> bytes:
        loc = self.located
        admin = instance_admin_password(self.key, loc.instance) if loc.engine == "redis" else None
        return sessions.request(
            engine=loc.engine,
            instance=loc.instance,
            session_id=self.session_id,
            database=loc.database or "",
            role=self.role,
            expiry=self.expiry,
            environment=self.environment,
            password=self.password,
            admin_password=admin,
        )

    def _helper(self, session: NodeCommands, verb: str) -> None:
        res = session.run(sessions.helper_argv(verb), sudo=True, stdin=self._request())
        if res.rc != 0:
            what = "create" if verb == "create" else "remove"
            raise SvcctlError(
                f"node {session.name}: could not {what} the temporary user {self.user} for instance "
                f"{self.located.instance}: {res.stderr.strip()[-400:] or res.stdout.strip()[-400:]}"
            )

    def create(self, session: NodeCommands) -> None:
        """Record the session in the node's registry, then create the user (one SSH round trip)."""
        self._helper(session, "create")

    def drop(self, session: NodeCommands) -> None:
        """Drop the user (ending its connections), then forget the record (one SSH round trip)."""
        self._helper(session, "drop")
