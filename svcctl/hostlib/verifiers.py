"""The forms in which engines store a password, so that the clear password never reaches a server or a log.

Apply and the session helper create them on the node; observe and the controller check a stored one
against the password derived from the environment's key (`credentials: stale` when it does not match).
"""

from __future__ import annotations

import os

SCRAM_ROUNDS = 4096  # PostgreSQL's default scram_iterations
SCRAM_MAX_ROUNDS = 100_000  # a stored verifier asking for more is not svcctl's: never computed (a node could
# report a billion rounds to stall the controller)
MYSQL_NATIVE = "mysql_native_password"
_SCRAM = r"SCRAM-SHA-256\$(\d{1,12}):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)"
_HEX64 = r"[0-9a-f]{64}"
# Compiled where used (re's own cache keeps them), and base64 imported there: observe bundles this module for
# Redis's one digest, and each pattern compiled at import cost every node's observe its CPU whether used or not.


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _scram_keys(password: str, salt: bytes, rounds: int) -> tuple[bytes, bytes]:
    import hashlib  # hashlib and hmac where used: importing them (OpenSSL) costs a node 4-8 ms of CPU per observe
    import hmac

    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, rounds)
    client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client).digest(), server


def scram_verifier(password: str, salt: bytes | None = None, rounds: int = SCRAM_ROUNDS) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier (RFC 5802/7677): `SCRAM-SHA-256$rounds:salt$StoredKey:ServerKey`."""
    salt = os.urandom(16) if salt is None else salt
    stored, server = _scram_keys(password, salt, rounds)
    return f"SCRAM-SHA-256${rounds}:{_b64(salt)}${_b64(stored)}:{_b64(server)}"


def scram_matches(password: str, verifier: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier is for `password`.

    False, without computing anything, for another mechanism (md5), anything malformed, an empty salt, and
    more than SCRAM_MAX_ROUNDS rounds. PostgreSQL applies SASLprep first, which leaves ASCII (every derived
    password) unchanged. Both halves are compared without short-circuiting.
    """
    import base64
    import re

    match = re.fullmatch(_SCRAM, verifier)
    if match is None:
        return False
    rounds = int(match.group(1))
    try:
        salt, stored_want, server_want = (base64.b64decode(match.group(i), validate=True) for i in (2, 3, 4))
    except ValueError:  # binascii.Error is a ValueError
        return False
    if not 0 < rounds <= SCRAM_MAX_ROUNDS or not salt:
        return False
    import hmac  # see _scram_keys

    stored, server = _scram_keys(password, salt, rounds)
    stored_ok = hmac.compare_digest(stored, stored_want)
    server_ok = hmac.compare_digest(server, server_want)
    return stored_ok and server_ok


def mysql_native_hash(password: str) -> str:
    """MariaDB's mysql_native_password stored form: `*` and SHA1(SHA1(password)) in upper-case hex."""
    import hashlib  # see _scram_keys

    inner = hashlib.sha1(password.encode("utf-8")).digest()  # noqa: S324 (the engine's format, not our choice)
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


def mysql_native_matches(password: str, stored: str) -> bool:
    """Whether a mysql_native_password hash (`*` and 40 hex digits, any case) is for `password`."""
    if len(stored) != 41 or not stored.startswith("*"):
        return False
    import hmac  # see _scram_keys

    return hmac.compare_digest(mysql_native_hash(password).encode(), stored.upper().encode("utf-8", "replace"))


def redis_acl_digest(password: str) -> str:
    """A Redis ACL password as its file keeps it (`#<hex>`, without the `#`): SHA-256 of the password."""
    import hashlib  # see _scram_keys

    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def redis_acl_matches(password: str, digest: str) -> bool:
    """Whether a Redis ACL password digest (hex SHA-256, with or without ACL LIST's leading `#`) is for it."""
    given = digest[1:] if digest.startswith("#") else digest
    import re

    if re.fullmatch(_HEX64, given.lower()) is None:
        return False
    import hmac  # see _scram_keys

    return hmac.compare_digest(redis_acl_digest(password).encode(), given.lower().encode())
