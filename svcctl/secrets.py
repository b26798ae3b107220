"""Secrets: a masked string type, the environment's key, derived passwords and engine verifier checks.

Passwords are never stored: each is `HMAC-SHA256(key, "svcctl/v1/<purpose>")`, so any operator or CI job
holding the environment's key derives the same ones. The key lives outside Git (`SVCCTL_KEY`, a key file).
The verifier checks let drivers tell whether what an engine stores still matches the derived password
without the password ever leaving this process. It sits low: stdlib, svcctl.errors and the name rule of
svcctl.model.types only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from svcctl.errors import SvcctlError
from svcctl.hostlib import verifiers
from svcctl.model.types import check_environment_name

KEY_ENV = "SVCCTL_KEY"
KEY_FILE_ENV = "SVCCTL_KEY_FILE"
MIN_KEY_BYTES = 32
PASSWORD_LENGTH = 32
PURPOSE_PREFIX = "svcctl/v1/"
MASK = "***"

_HEX_RE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def scrubbed_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` (default: this process's environment) without the key's variables, for children.

    Tunnel clients, ansible-playbook and its ssh processes never need the environment's key; a child that
    cannot read it cannot leak it.
    """
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k not in (KEY_ENV, KEY_FILE_ENV)}


class Secret:
    """A string that prints as `***` wherever it goes (str, repr, f-strings, logging); `.reveal()` unmasks.

    Deliberately not a `str` subclass, so concatenation, `json.dumps` and the like fail loudly instead of
    leaking the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The clear-text value; call it only where the value must leave svcctl (a manifest, an engine)."""
        return self._value

    def __repr__(self) -> str:
        return MASK

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


# --- the key ---------------------------------------------------------------------------------------------


def default_key_path(env_name: str) -> Path:
    """Where `svcctl key init` puts the environment's key: ~/.config/svcctl/keys/<env_name>.key."""
    try:
        check_environment_name(env_name)
    except ValueError as exc:
        raise SvcctlError(f"{exc}: it cannot name a key file.") from None
    return Path.home() / ".config" / "svcctl" / "keys" / f"{env_name}.key"


def decode_key(text: str, source: str) -> bytes:
    """Decode a key written as hex or base64 (standard or URL-safe, padding optional); at least 32 bytes.

    An even-length string of hex digits is read as hex, anything else as base64 (keys written by
    `svcctl key init` are padded base64, which is never all hex digits).
    """
    value = text.strip()
    if not value:
        raise SvcctlError(f"{source} is empty; it must hold the environment's key (base64 or hex, 32+ bytes).")
    key: bytes
    if _HEX_RE.match(value):
        key = bytes.fromhex(value)
    else:
        standard = value.replace("-", "+").replace("_", "/")
        padded = standard + "=" * (-len(standard) % 4)
        try:
            key = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise SvcctlError(
                f"{source} is neither hex nor base64; it must hold the environment's key "
                "(`svcctl key init` writes one)."
            ) from None
    if len(key) < MIN_KEY_BYTES:
        raise SvcctlError(
            f"{source} holds a key of {len(key)} bytes; at least {MIN_KEY_BYTES} are required "
            "(`svcctl key init` writes a 32-byte key)."
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SvcctlError(f"key file {path} does not exist.") from None
    if info.st_mode & 0o077:
        raise SvcctlError(
            f"key file {path} is readable or writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it. Run `chmod 600 {path}`."
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SvcctlError(f"cannot read key file {path}: {exc}.") from None
    return decode_key(text, f"key file {path}")


def load_key(env_name: str) -> bytes:
    """The environment's key: from $SVCCTL_KEY, else the file $SVCCTL_KEY_FILE, else the default key file."""
    if KEY_ENV in os.environ:
        return decode_key(os.environ[KEY_ENV], f"${KEY_ENV}")
    key_file = os.environ.get(KEY_FILE_ENV)
    if key_file:
        return _read_key_file(Path(key_file).expanduser())
    path = default_key_path(env_name)
    if not path.exists():
        raise SvcctlError(
            f'no key for environment "{env_name}": neither ${KEY_ENV} nor ${KEY_FILE_ENV} is set and {path} '
            f"does not exist. Create one with `svcctl key init`, or set ${KEY_ENV} (base64 or hex, 32+ bytes). "
            "Every operator and CI job of this environment needs the same key: passwords are derived from it."
        )
    return _read_key_file(path)


def create_key(env_name: str, path: Path | None = None, force: bool = False) -> Path:
    """Write a new random 32-byte key (base64) atomically with mode 0600 in a 0700 directory; return its path.

    Refuses to overwrite an existing key unless `force`: replacing a key changes every derived password.
    """
    target = path if path is not None else default_key_path(env_name)
    directory = target.parent
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        created.chmod(0o700)
    if path is None:
        directory.chmod(0o700)
    if target.exists() and not force:
        raise SvcctlError(
            f"key file {target} already exists; refusing to overwrite it (every password derived from it "
            "would change). Pass --force to replace it."
        )
    data = base64.b64encode(os.urandom(MIN_KEY_BYTES)) + b"\n"
    tmp = directory / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            tmp.replace(target)
        else:
            try:
                os.link(tmp, target)  # fails if the target appeared meanwhile: never overwrite by accident
            except FileExistsError:
                raise SvcctlError(f"key file {target} already exists; refusing to overwrite it.") from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


# --- derived passwords -----------------------------------------------------------------------------------


def derive_password(key: bytes, purpose: str) -> Secret:
    """HMAC-SHA256(key, "svcctl/v1/" + purpose) as 32 URL-safe base64 characters ([A-Za-z0-9_-]).

    The alphabet is safe unquoted in URLs, shells and configuration files.
    """
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")
    if not purpose:
        raise ValueError("purpose must not be empty")
    digest = hmac.new(key, (PURPOSE_PREFIX + purpose).encode(), hashlib.sha256).digest()
    return Secret(base64.urlsafe_b64encode(digest).decode("ascii")[:PASSWORD_LENGTH])


def _part(value: str) -> str:
    # Purposes are joined with "/": a part containing one could make two purposes collide.
    if not value or "/" in value:
        raise ValueError(f"purpose part {value!r} must be non-empty and contain no '/'")
    return value


def binding_password(key: bytes, app: str, instance: str, rotation: int) -> Secret:
    """The password of a binding's user; bumping `rotation` yields a new, unrelated one."""
    if rotation < 0:
        raise ValueError("rotation must be >= 0")
    return derive_password(key, f"binding/{_part(app)}/{_part(instance)}/{rotation}")


def instance_admin_password(key: bytes, instance: str) -> Secret:
    """The instance's administrative password (the Redis `default` user)."""
    return derive_password(key, f"instance/{_part(instance)}/admin")


def instance_backup_password(key: bytes, instance: str) -> Secret:
    """The password of a Redis instance's backup user (`svcctl_backup`: BGSAVE and what watching it needs)."""
    return derive_password(key, f"instance/{_part(instance)}/backup")


def session_password(key: bytes, instance: str, session_id: str) -> Secret:
    """A password for one short-lived session (such as a tunnel) on an instance."""
    return derive_password(key, f"session/{_part(instance)}/{_part(session_id)}")


# --- verifier checks -------------------------------------------------------------------------------------


def _clear(password: Secret | str) -> str:
    return password.reveal() if isinstance(password, Secret) else password


def scram_sha256_matches(password: Secret | str, verifier: str) -> bool:
    """Whether PostgreSQL's `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` verifier is for `password`
    (the host library's rule, `svcctl.hostlib.verifiers`: never computed above its round cap).

    Each answer is kept for the process: PBKDF2's 4096 rounds cost ~2 ms, and apply asks the same
    questions again when it verifies (this process's memory only; nothing is written anywhere)."""
    return _scram_matches(_clear(password), verifier)


@functools.lru_cache(maxsize=8192)
def _scram_matches(password: str, verifier: str) -> bool:
    return verifiers.scram_matches(password, verifier)


def mysql_native_matches(password: Secret | str, auth_string: str) -> bool:
    """Whether MariaDB's mysql_native_password hash (`*` + uppercase hex SHA1(SHA1(pw))) is for `password`."""
    return verifiers.mysql_native_matches(_clear(password), auth_string)


def redis_acl_matches(password: Secret | str, sha256_hex: str) -> bool:
    """Whether a Redis ACL password hash (hex SHA-256, with or without ACL LIST's leading `#`) is for it."""
    return verifiers.redis_acl_matches(_clear(password), sha256_hex)
