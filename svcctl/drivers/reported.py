"""What a node reports, typed: the trust boundary between a node's observe output and everything after it.

The controller holds the keys to every node, so one compromised node must not be able to act on it. Nothing
a node printed reaches a driver, a plan, a message or Ansible before it passed this module: the output's
size (bounded by `SshSession.run`) and nesting depth, then every engine snippet's output and every registry
record, each string through the strict types of `svcctl.model.types`. A node whose report fails them gets an
`InvalidReport`, its observation error, and the plan fails closed as it does for an unreachable node.

Fields the schemas do not name are dropped, so no unchecked value reaches a driver; an engine's free text
that only a driver's parser reads (database comments) is bounded but may hold any character. Verifiers:
the postgres driver computes no SCRAM verifier above its iteration cap; MariaDB's and Redis's hashes cost
the same whatever a node reports, and their length is bounded here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from svcctl.drivers import ENGINES
from svcctl.drivers.base import Observed
from svcctl.drivers.mysql.driver import major_minor
from svcctl.drivers.redis.driver import major_of
from svcctl.errors import SvcctlError
from svcctl.model.names import NAME_MAX, NAME_PATTERN
from svcctl.model.types import (
    Cidr,
    EnvironmentName,
    Host,
    PackageVersion,
    ReportedName,
    Text,
    Token,
    Version,
    check_cidr,
    check_environment_name,
    check_reported_name,
    check_text,
    check_timestamp,
    check_token,
    check_version,
    quoted,
    text_problem,
    unsafe_character,
)
from svcctl.state import Kind

MAX_DEPTH = 32
"""Deepest nesting a node's JSON may have; svcctl's own observe output nests 8 deep."""
MAX_ITEMS = 10_000
"""Most entries of any list or mapping a node reports (databases, users, registry records, ...)."""
MAX_ATTR_LIST = 256
COMMENT_MAX = 65_536
ERROR_MAX = 4_096
_BIG = 2**63 - 1

# --- pieces ---------------------------------------------------------------------------------------------------


def _or_empty(check: Callable[[str], str]) -> Callable[[str], str]:
    """`check`, but the empty string passes too (MariaDB's anonymous user, a blank config value)."""
    return lambda value: value if value == "" else check(value)


def _number_text(limit: int) -> Callable[[str], str]:
    """A config value that must be a decimal number from 0 to `limit` (Redis keeps them as text)."""

    def check(value: str) -> str:
        if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= limit):
            raise ValueError(f"{quoted(value)} is not a number from 0 to {limit}")
        return value

    return check


_MEMORY = re.compile(r"\s*[0-9]{1,18}\s*(?:[kmg]b?)?\s*", re.IGNORECASE)


def _memory(value: str) -> str:
    if not _MEMORY.fullmatch(value):
        raise ValueError(f"{quoted(value)} is not a Redis memory size such as 64mb or 1048576")
    return value


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError(f"{quoted(value)} is not a SHA-256 password hash (64 lowercase hex digits)")
    return value


def _comment(value: str) -> str:
    # Only the drivers' comment parsers read it, and they keep nothing but `key=<digits>`: bounded only.
    if len(value) > COMMENT_MAX:
        raise ValueError(f"comment is longer than {COMMENT_MAX} characters")
    return value


def _error_text(value: str) -> str:
    if len(value) > ERROR_MAX:
        raise ValueError(f"error text is longer than {ERROR_MAX} characters")
    return value


def _series(derive: Callable[[str], str | None]) -> Callable[[str], str]:
    """A package version whose series (what `derive` takes from it) is a version svcctl can compare."""

    def check(value: str) -> str:
        check_version(derive(value) or "")
        return value

    return check


Name = ReportedName
MysqlName = Annotated[str, AfterValidator(_or_empty(check_reported_name))]
MysqlWord = Annotated[str, AfterValidator(_or_empty(check_token))]
Comment = Annotated[str, AfterValidator(_comment)]
ErrorText = Annotated[str, AfterValidator(_error_text)]
PgMajor = Annotated[str, Field(pattern=r"^[0-9]{1,4}$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Count = Annotated[int, Field(ge=0, le=_BIG)]
ConnLimit = Annotated[int, Field(ge=-1, le=2**31 - 1)]
MAX_CLIENTS = 1_000_000
"""Most client connections a node may report for one database or instance (each engine's limit is far lower)."""
Clients = Annotated[int, Field(ge=0, le=MAX_CLIENTS)]
MariadbPackage = Annotated[PackageVersion, AfterValidator(_series(major_minor))]
RedisPackage = Annotated[PackageVersion, AfterValidator(_series(major_of))]
Sha256 = Annotated[str, AfterValidator(_sha256)]


class _Report(BaseModel):
    """Strict: no coercion ("5432" is not 5432, true is not 1); unknown fields are dropped."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=False)


class Unit(_Report):
    """A systemd unit's state, as the snippets report it."""

    active: bool
    enabled: bool


# --- postgres ---------------------------------------------------------------------------------------------


class PgDefaultAcl(_Report):
    role: Name
    schema_: Name | None = Field(alias="schema")
    type: Token
    acl: Annotated[list[Text], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)


class PgDatabase(_Report):
    name: Name
    owner: Name
    connlimit: ConnLimit
    size: Count
    comment: Comment | None = None
    acl: Annotated[list[Text], Field(max_length=MAX_ITEMS)] | None = None
    public_acl: Annotated[list[Text], Field(max_length=MAX_ITEMS)] | None = None
    default_acl: Annotated[list[PgDefaultAcl], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    clients: Clients | None = None  # client connections to it now (absent in older reports)


class PgRole(_Report):
    name: Name
    login: bool
    superuser: bool = False
    connlimit: ConnLimit
    config: Annotated[list[Text], Field(max_length=256)] | None = None
    member_of: Annotated[list[Name], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    verifier: Token | None = None


class PgSettings(_Report):
    listen_addresses: Text | None = None
    password_encryption: Token | None = None
    port: Token | None = None


class PgCluster(_Report):
    version: Version
    name: Name
    port: Port
    running: bool
    start: Literal["auto", "manual", "disabled"]
    unit: Unit
    hba: Annotated[list[Annotated[list[Text], Field(max_length=64)]], Field(max_length=MAX_ITEMS)] | None = None
    hba_block: Annotated[list[Annotated[list[Text], Field(max_length=64)]], Field(max_length=MAX_ITEMS)] | None = None
    hba_legacy: bool = False  # pg_hba.conf is the whole file svcctl wrote before it had markers
    listen_base: Text | None = None  # listen_addresses without svcctl's drop-in
    settings: PgSettings = Field(default_factory=PgSettings)
    databases: Annotated[list[PgDatabase], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    roles: Annotated[list[PgRole], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)


class PostgresReport(_Report):
    """observe_postgres(): packages by major version and the Debian clusters."""

    packages: Annotated[dict[PgMajor, PackageVersion], Field(max_length=64)]
    clusters: Annotated[list[PgCluster], Field(max_length=64)]


# --- mysql ------------------------------------------------------------------------------------------------


class MysqlConf(_Report):
    bind_address: MysqlWord | None = None
    client_networks: Annotated[list[Cidr], Field(max_length=MAX_ATTR_LIST)] = Field(default_factory=list)


class MysqlServer(_Report):
    version: Text  # VERSION(): Debian 13's MariaDB says "11.8.9-MariaDB-0+deb13u1 from Debian"
    port: Port
    bind_address: MysqlWord | None = None
    listening: Annotated[list[Host], Field(max_length=256)] = Field(default_factory=list)


class MysqlDatabase(_Report):
    name: Name
    charset: Token | None = None
    comment: Comment | None = None
    size_bytes: Count
    clients: Clients | None = None  # client connections using it now (absent in older reports)


class MysqlUser(_Report):
    user: MysqlName
    host: MysqlWord
    plugin: MysqlWord | None = None
    authentication_string: MysqlWord | None = None
    max_user_connections: Annotated[int, Field(ge=0, le=2**32)]
    grants: Annotated[list[Text], Field(max_length=256)] = Field(default_factory=list)


class MysqlReport(_Report):
    """observe_mysql(): package, unit, svcctl's config file, the server's own bind-address and, while it runs,
    databases and users."""

    installed: bool
    package_version: MariadbPackage | None = None
    active: bool = False
    enabled: bool = False
    conf: MysqlConf | None = None
    bind_base: MysqlWord | None = None  # bind-address without svcctl's file ("" none); absent in older reports
    server: MysqlServer | None = None
    databases: Annotated[list[MysqlDatabase], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    users: Annotated[list[MysqlUser], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _installed_has_version(self) -> MysqlReport:
        if self.installed and self.package_version is None:
            raise ValueError("installed without a package_version")
        return self


# --- redis ------------------------------------------------------------------------------------------------


class RedisConfig(_Report):
    port: Annotated[str, AfterValidator(_number_text(65535))] | None = None
    bind: Text | None = None
    maxmemory: Annotated[str, AfterValidator(_memory)] | None = None
    maxmemory_policy: Token | None = Field(None, alias="maxmemory-policy")
    maxclients: Annotated[str, AfterValidator(_number_text(2**31 - 1))] | None = None
    aclfile: Text | None = None
    dir: Text | None = None
    pidfile: Text | None = None


class RedisAcl(_Report):
    path: Text | None = None
    exists: bool = False


RedisFlag = Literal["on", "off", "nopass", "resetpass", "reset", "skip-sanitize-payload", "sanitize-payload"]


class RedisUser(_Report):
    name: Name
    flags: Annotated[list[RedisFlag], Field(max_length=64)] = Field(default_factory=list)
    rules: Annotated[list[Token], Field(max_length=1024)] = Field(default_factory=list)
    hashes: Annotated[list[Sha256], Field(max_length=64)] = Field(default_factory=list)


class RedisBackupFiles(_Report):
    """Which of its backup files an instance has: a credential file, the admin password file of older svcctl."""

    credential: bool = False
    legacy_auth: bool = False


class RedisInstance(_Report):
    config: RedisConfig = Field(default_factory=RedisConfig)
    acl: RedisAcl | None = None
    backup: RedisBackupFiles | None = None
    users: Annotated[list[RedisUser], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    unit: Unit
    clients: Clients | None = None  # established connections to its port, while it runs (absent in older reports)


class RedisReport(_Report):
    """observe_redis(): package, stock unit, listeners and every `redis-server@NAME` instance."""

    installed: bool
    version: RedisPackage | None = None
    running: bool = False
    default_service: Unit | None = None
    listen: Annotated[list[Token], Field(max_length=1024)] = Field(default_factory=list)
    instances: Annotated[dict[Name, RedisInstance], Field(max_length=1000)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _installed_has_version(self) -> RedisReport:
        if self.installed and self.version is None:
            raise ValueError("installed without a version")
        return self


class EngineError(_Report):
    """What the observe script reports for an engine whose snippet raised."""

    error: ErrorText


ENGINE_REPORTS: dict[str, type[_Report]] = {"postgres": PostgresReport, "mysql": MysqlReport, "redis": RedisReport}

# --- the release fragment -----------------------------------------------------------------------------------

RELEASE = "release"
"""Where the footer files observe_release()'s output: engines["release"] (it files every observe_* there)."""

OsWord = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]  # os-release(5): ID, VERSION_CODENAME
OsVersionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,63}$")]  # os-release(5): VERSION_ID
PythonVersion = Annotated[str, Field(pattern=r"^[0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}$")]
EnginePackage = Annotated[
    str, Field(pattern=r"^(?:postgresql-[0-9]{1,4}(?:[.][0-9]{1,2})?|mariadb-server|redis-server)$")
]
_SERIES: dict[str, Callable[[str], str | None]] = {"mariadb-server": major_minor, "redis-server": major_of}


class OsRelease(_Report):
    """/etc/os-release's ID, VERSION_ID and VERSION_CODENAME (Debian testing has no VERSION_ID)."""

    id: OsWord | None = None
    version_id: OsVersionId | None = None
    version_codename: OsWord | None = None


class PackageOffer(_Report):
    """One engine package as `apt-cache policy` shows it: installed and candidate version, or None."""

    installed: PackageVersion | None = None
    candidate: PackageVersion | None = None


class ReleaseReport(_Report):
    """observe_release(): the node's release, its python3, whether apt has package lists, and the engine
    packages apt knows (None when apt-cache could not be asked)."""

    os: OsRelease
    python: PythonVersion
    lists: bool
    packages: Annotated[dict[EnginePackage, PackageOffer], Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _series_compare(self) -> ReleaseReport:
        for package, offer in (self.packages or {}).items():
            derive = _SERIES.get(package)
            for field in ("installed", "candidate"):
                value = getattr(offer, field)
                if derive is not None and value is not None:
                    try:
                        check_version(derive(value) or "")
                    except ValueError:
                        raise ValueError(
                            f"packages.{package}.{field}: {quoted(value)} has no series svcctl can compare"
                        ) from None
        return self


# --- the registry -----------------------------------------------------------------------------------------

_ADDRESS_PART = rf"[a-z0-9](?:[a-z0-9-]{{0,{NAME_MAX + 8}}})"
_KINDS = "|".join(k.value for k in Kind)
_ADDRESS = re.compile(rf"(?:{_KINDS})\.{_ADDRESS_PART}(?:\.{_ADDRESS_PART}){{0,2}}(?:~r(?:0|[1-9][0-9]{{0,8}}))?")
_ATTR_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_address(value: str) -> str:
    """A registry address svcctl writes: `<kind>.<name>[.<name>...]`, an old rotation's `~r<n>` at the end."""
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(f"address {quoted(value)} {problem}")
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            f"address {quoted(value)} is not one svcctl writes: {', '.join(k.value for k in Kind)}, a dot, then "
            "dot-separated lowercase names"
        )
    return value


def _listed(check: Callable[[str], str]) -> Callable[[Any], Any]:
    def each(value: Any) -> Any:
        if not isinstance(value, list) or len(value) > MAX_ATTR_LIST:
            raise ValueError(f"must be a list of at most {MAX_ATTR_LIST} strings")
        for item in value:
            _string(check)(item)
        return value

    return each


def _string(check: Callable[[str], str]) -> Callable[[Any], Any]:
    def one(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return check(value)

    return one


def _port(value: Any) -> Any:
    if value is not None and (type(value) is not int or not 1 <= value <= 65535):
        raise ValueError("must be a port number from 1 to 65535")
    return value


def _version(value: Any) -> Any:
    # Registries written through Ansible's native types hold "15" as 15 and "10.11" as 10.11.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        check_version(str(value))
        return value
    return _string(check_version)(value)


def _engine(value: Any) -> Any:
    if value not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}")
    return value


def _recorded_identifier(value: str) -> str:
    # What svcctl records are its own identifiers (`orders_db`, `sv_web_orders_db_r0`): lowercase, digits, `_`.
    check_token(value)
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise ValueError(f"identifier {quoted(value)} is not one svcctl creates (lowercase letters, digits, _)")
    return value


_KNOWN_ATTRS: dict[str, Callable[[Any], Any]] = {
    "engine": _engine,
    "version": _version,
    "major_version": _version,
    "user": _string(_recorded_identifier),
    "database": _string(_recorded_identifier),
    "owner": _string(_recorded_identifier),
    "client_networks": _listed(check_cidr),
    "claimed_networks": _listed(check_cidr),
    "hosts": _listed(check_token),
    "bind": _listed(check_token),
    "expires_at": _string(check_timestamp),
    "environment": _string(check_environment_name),
    "port": _port,
}


def _scalar(value: Any) -> str | None:
    """What is wrong with `value` as a recorded attribute's scalar, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if abs(value) <= _BIG else "is an integer out of range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "is not a finite number"
    if isinstance(value, str):
        check_text(value)
        return None
    return "is neither a string, a number, a boolean nor null"


def check_recorded_attrs(attrs: Any) -> dict[str, Any]:
    """A record's `attrs`: named like svcctl's attributes, each a JSON scalar or a short list of them, known
    ones (user, database, version, networks, ...) of their own strict type."""
    if not isinstance(attrs, dict):
        raise ValueError("attrs is not an object")
    if len(attrs) > 256:
        raise ValueError("attrs has more than 256 attributes")
    for key, value in attrs.items():
        if not isinstance(key, str) or not _ATTR_NAME.fullmatch(key):
            raise ValueError(f"attribute name {quoted(str(key))} is not one svcctl writes")
        try:
            if key in _KNOWN_ATTRS:
                _KNOWN_ATTRS[key](value)
            elif isinstance(value, list):
                if len(value) > MAX_ATTR_LIST:
                    raise ValueError(f"is a list longer than {MAX_ATTR_LIST}")
                problems = [p for p in map(_scalar, value) if p is not None]
                if any(isinstance(v, list) for v in value) or problems:
                    raise ValueError(f"holds an item that {problems[0] if problems else 'is a list'}")
            else:
                problem = _scalar(value)
                if problem is not None:
                    raise ValueError(problem)
        except ValueError as exc:
            raise ValueError(f'attribute "{key}": {exc}') from None
    return attrs


class Record(_Report):
    """One registry record: what svcctl applied for an object, for which environment, and when."""

    attrs: dict[str, Any] = Field(default_factory=dict)
    environment: EnvironmentName
    applied_at: Annotated[str, AfterValidator(check_timestamp)] | None = None
    claims: (
        Annotated[dict[EnvironmentName, Annotated[list[Cidr], Field(max_length=MAX_ATTR_LIST)]], Field(max_length=1000)]
        | None
    ) = None

    @field_validator("attrs", mode="plain")
    @classmethod
    def _attrs(cls, value: Any) -> dict[str, Any]:
        return check_recorded_attrs(value)


# --- checking a node's report -----------------------------------------------------------------------------


class InvalidReport(SvcctlError):
    """A node reported something that fails svcctl's schema: that node's observation error."""

    def __init__(self, node: str, what: str, problem: str) -> None:
        super().__init__(
            f"node {node} reported {what} that svcctl refuses: {problem}. svcctl uses nothing a node reports "
            "until it is well-formed, so this node cannot be planned; check what changed on it (by hand, by "
            "another tool, or by an intruder) and fix or remove that."
        )
        self.node = node


def depth_exceeds(doc: object, limit: int = MAX_DEPTH) -> bool:
    """Whether a decoded JSON document nests lists and objects more than `limit` deep (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number svcctl accepts")


def decode(node: str, text: str) -> dict[str, Any]:
    """A node's observe output as a JSON object: refused (InvalidReport) when it is not JSON, not an object,
    holds NaN or Infinity, or nests more than MAX_DEPTH deep."""
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidReport(node, "JSON", f"it nests deeper than svcctl reads (more than {MAX_DEPTH})") from None
    except ValueError as exc:  # JSONDecodeError, an integer of thousands of digits, NaN
        raise InvalidReport(node, "output", f"it is not JSON svcctl reads ({quoted(str(exc), 200)})") from None
    if not isinstance(doc, dict):
        raise InvalidReport(node, "JSON", "the document is not an object")
    if depth_exceeds(doc):
        raise InvalidReport(node, "JSON", f"it nests more than {MAX_DEPTH} deep")
    return doc


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a path: `clusters[0].databases[2].name`, odd keys quoted and escaped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (a key)"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{quoted(part)}]"
    return out


def _problem(exc: ValidationError) -> str:
    """The first error of a validation, with where it is; our messages quote values, pydantic's never do."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    where = _where(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    text = f"{where}: {message}{more}" if where else f"{message}{more}"
    return text.encode("unicode_escape").decode("ascii") if unsafe_character(text) else text


def engine_report(node: str, engine: str, data: Any) -> dict[str, Any]:
    """One engine's snippet output, checked against its schema: a dict of checked values only."""
    model = EngineError if isinstance(data, dict) and "error" in data else ENGINE_REPORTS[engine]
    try:
        checked = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidReport(node, f"{engine} data", _problem(exc)) from None
    return checked.model_dump(by_alias=True, exclude_unset=True)


def registry(node: str, objects: Any) -> dict[str, dict[str, Any]]:
    """A node's registry records, each address and record checked: a dict of checked records only."""
    if not isinstance(objects, dict):
        raise InvalidReport(node, "a registry", "its objects are not a JSON object")
    if len(objects) > MAX_ITEMS:
        raise InvalidReport(node, "a registry", f"it holds more than {MAX_ITEMS} records")
    out: dict[str, dict[str, Any]] = {}
    for address, record in objects.items():
        try:
            check_address(address)
        except ValueError as exc:
            raise InvalidReport(node, "a registry entry", str(exc)) from None
        try:
            checked = Record.model_validate(record)
        except ValidationError as exc:
            raise InvalidReport(node, f'the registry entry "{address}"', _problem(exc)) from None
        out[address] = checked.model_dump(exclude_unset=True)
    return out


def release_report(node: str, data: Any) -> dict[str, Any]:
    """The release fragment's output (or its error), checked against its schema."""
    model: type[_Report] = EngineError if isinstance(data, dict) and "error" in data else ReleaseReport
    try:
        checked = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidReport(node, "release data", _problem(exc)) from None
    return checked.model_dump(exclude_unset=False)


# --- the backups fragment -----------------------------------------------------------------------------------

BACKUPS = "backups"
"""Where the footer files observe_backups()'s output: engines["backups"] (svcctl.drivers.backups parses it)."""


InstanceName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX)]


class TimerState(_Report):
    """A backup timer's state, as systemctl show says it."""

    active: bool
    enabled: bool


class BackupSchedule(_Report):
    """One instance's backup configuration and timer, as svcctl wrote them (None where unreadable)."""

    engine: Literal["postgres", "mysql", "redis"] | None = None
    keep: Annotated[int, Field(ge=0, le=100_000)] | None = None
    schedule: Annotated[Text, Field(max_length=256)] | None = None
    port: Port | None = None
    timer: TimerState
    count: Count = 0
    latest: Annotated[str, Field(pattern=r"^[0-9]{8}T[0-9]{6}Z$")] | None = None


class BackupsReport(_Report):
    """observe_backups(): each instance with a backup configuration on the node."""

    instances: Annotated[dict[InstanceName, BackupSchedule], Field(max_length=MAX_ITEMS)] = Field(default_factory=dict)


def backups_report(node: str, data: Any) -> dict[str, Any]:
    """The backups fragment's output (or its error), checked against its schema."""
    model: type[_Report] = EngineError if isinstance(data, dict) and "error" in data else BackupsReport
    try:
        checked = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidReport(node, "backups data", _problem(exc)) from None
    return checked.model_dump(exclude_unset=False)


def observation(node: str, doc: Mapping[str, Any]) -> Observed:
    """A node's whole observe document, checked: its registry, each engine's output (or error), and the
    release fragment's, which rides along as engines["release"] (absent: no offer data for the node)."""
    engines = doc.get("engines", {})
    if not isinstance(engines, dict):
        raise InvalidReport(node, "a document", "its engines are not a JSON object")
    checked = {engine: engine_report(node, engine, data) for engine, data in engines.items() if engine in ENGINES}
    if RELEASE in engines:
        checked[RELEASE] = release_report(node, engines[RELEASE])
    if BACKUPS in engines:
        checked[BACKUPS] = backups_report(node, engines[BACKUPS])
    return Observed(  # engines svcctl does not know, like any unknown field, are dropped unread
        node=node,
        engines=checked,
        registry=registry(node, doc.get("registry", {})),
    )
