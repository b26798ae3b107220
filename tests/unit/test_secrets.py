"""Secrets: masking, key loading and creation, derivation, and the engines' verifier checks."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svcctl.errors import SvcctlError
from svcctl.secrets import (
    Secret,
    binding_password,
    create_key,
    decode_key,
    derive_password,
    instance_admin_password,
    load_key,
    mysql_native_matches,
    redis_acl_matches,
    scram_sha256_matches,
    session_password,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CLEAR = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SVCCTL_KEY", raising=False)
    monkeypatch.delenv("SVCCTL_KEY_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --- Secret ----------------------------------------------------------------------------------------------


def test_secret_never_prints_its_value(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(CLEAR)
    assert repr(secret) == "***"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert f"{secret!r}" == "***"
    assert f"{secret:>5}" == "  ***"
    assert "%s %r" % (secret, secret) == "*** ***"  # noqa: UP031
    assert repr([secret]) == "[***]"
    assert repr({"password": secret}) == "{'password': ***}"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("svcctl.test").info("password %s / %r / %s", secret, secret, {"p": secret})
    assert CLEAR not in caplog.text
    assert caplog.records[0].getMessage() == "password *** / *** / {'p': ***}"
    assert secret.reveal() == CLEAR


def test_secret_is_not_a_str_so_it_cannot_leak_by_concatenation() -> None:
    secret = Secret(CLEAR)
    assert not isinstance(secret, str)
    with pytest.raises(TypeError):
        _ = "pw=" + secret  # type: ignore[operator]
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_secret_equality_and_copy() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert hash(Secret("a")) == hash(Secret("a"))
    assert copy.deepcopy(Secret("a")).reveal() == "a"


# --- derivation ------------------------------------------------------------------------------------------


def test_derive_matches_an_independent_computation() -> None:
    digest = hmac.new(KEY, b"svcctl/v1/binding/web/orders-db/0", hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).decode()[:32]
    assert binding_password(KEY, "web", "orders-db", 0).reveal() == expected
    assert derive_password(KEY, "binding/web/orders-db/0").reveal() == expected


def test_derive_is_deterministic_and_differs_per_purpose_rotation_and_key() -> None:
    passwords = [
        binding_password(KEY, "web", "orders-db", 0),
        binding_password(KEY, "web", "orders-db", 1),
        binding_password(KEY, "api", "orders-db", 0),
        binding_password(KEY, "web", "sessions", 0),
        binding_password(OTHER_KEY, "web", "orders-db", 0),
        instance_admin_password(KEY, "orders-db"),
        session_password(KEY, "orders-db", "s1"),
        session_password(KEY, "orders-db", "s2"),
    ]
    assert len({p.reveal() for p in passwords}) == len(passwords)
    assert binding_password(KEY, "web", "orders-db", 0) == binding_password(KEY, "web", "orders-db", 0)
    assert instance_admin_password(KEY, "x1") == derive_password(KEY, "instance/x1/admin")
    assert session_password(KEY, "x1", "abc") == derive_password(KEY, "session/x1/abc")


def test_derive_refuses_short_keys_and_ambiguous_parts() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        derive_password(b"short", "x")
    with pytest.raises(ValueError, match="no '/'"):
        binding_password(KEY, "a/b", "c", 0)
    with pytest.raises(ValueError, match="rotation"):
        binding_password(KEY, "a", "c", -1)


@given(key=st.binary(min_size=32, max_size=64), purpose=st.text(min_size=1, max_size=100))
def test_derived_passwords_are_always_32_url_safe_characters(key: bytes, purpose: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", derive_password(key, purpose).reveal())


# --- keys ------------------------------------------------------------------------------------------------


def test_key_from_env_base64_and_hex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCCTL_KEY", base64.b64encode(KEY).decode())
    assert load_key("staging") == KEY
    monkeypatch.setenv("SVCCTL_KEY", base64.urlsafe_b64encode(KEY).decode().rstrip("="))
    assert load_key("staging") == KEY
    monkeypatch.setenv("SVCCTL_KEY", KEY.hex() + "\n")
    assert load_key("staging") == KEY


def test_short_or_garbled_env_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SVCCTL_KEY", base64.b64encode(b"x" * 31).decode())
    with pytest.raises(SvcctlError, match=r"\$SVCCTL_KEY holds a key of 31 bytes; at least 32 are required"):
        load_key("staging")
    monkeypatch.setenv("SVCCTL_KEY", "not a key!")
    with pytest.raises(SvcctlError, match="neither hex nor base64"):
        load_key("staging")
    monkeypatch.setenv("SVCCTL_KEY", "")
    with pytest.raises(SvcctlError, match=r"\$SVCCTL_KEY is empty"):
        load_key("staging")


def test_env_key_wins_over_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = create_key("staging", tmp_path / "k.key")
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(path))
    from_file = load_key("staging")
    assert len(from_file) == 32
    monkeypatch.setenv("SVCCTL_KEY", KEY.hex())
    assert load_key("staging") == KEY


def test_missing_key_says_how_to_get_one() -> None:
    with pytest.raises(SvcctlError) as info:
        load_key("staging")
    message = info.value.message
    assert "svcctl key init" in message
    assert "SVCCTL_KEY" in message
    assert "Every operator and CI job of this environment needs the same key" in message
    assert str(Path.home() / ".config/svcctl/keys/staging.key") in message


def test_create_key_then_load_from_default_path() -> None:
    path = create_key("staging")
    assert path == Path.home() / ".config/svcctl/keys/staging.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(base64.b64decode(path.read_text().strip())) == 32
    assert load_key("staging") == base64.b64decode(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["staging.key"]  # no temp file left


def test_create_key_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    path = create_key("staging", tmp_path / "keys" / "s.key")
    first = path.read_text()
    with pytest.raises(SvcctlError, match="already exists; refusing to overwrite"):
        create_key("staging", path)
    assert path.read_text() == first
    create_key("staging", path, force=True)
    assert path.read_text() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_open_to_others_is_refused(mode: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = create_key("staging", tmp_path / "k.key")
    path.chmod(mode)
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(path))
    with pytest.raises(SvcctlError, match=f"Run `chmod 600 {re.escape(str(path))}`"):
        load_key("staging")


def test_key_file_env_pointing_nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(tmp_path / "nope.key"))
    with pytest.raises(SvcctlError, match="does not exist"):
        load_key("staging")


def test_short_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.key"
    path.write_text(base64.b64encode(b"k" * 16).decode())
    path.chmod(0o600)
    monkeypatch.setenv("SVCCTL_KEY_FILE", str(path))
    with pytest.raises(SvcctlError, match="holds a key of 16 bytes"):
        load_key("staging")


def test_unsafe_environment_name_cannot_name_a_key_file() -> None:
    with pytest.raises(SvcctlError, match="cannot name a key file"):
        load_key("../etc")


def test_decode_key_prefers_hex_for_even_hex_strings() -> None:
    assert decode_key("00" * 32, "x") == bytes(32)


# --- verifiers -------------------------------------------------------------------------------------------


def _scram_verifier(password: str, salt: bytes, iterations: int) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


# RFC 7677 section 3: user "user", password "pencil". The verifier below holds the StoredKey and ServerKey
# of that exchange; the test proves it by recomputing the RFC's published ClientProof and ServerSignature.
RFC7677_VERIFIER = (
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)


def test_scram_rfc7677_vector() -> None:
    _, stored_b64, server_b64 = RFC7677_VERIFIER.split("$")[1], *RFC7677_VERIFIER.split("$")[2].split(":")
    stored, server = base64.b64decode(stored_b64), base64.b64decode(server_b64)
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}"
    ).encode()
    server_signature = hmac.new(server, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(client_proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored
    assert scram_sha256_matches("pencil", RFC7677_VERIFIER)
    assert scram_sha256_matches(Secret("pencil"), RFC7677_VERIFIER)
    assert not scram_sha256_matches("pencil2", RFC7677_VERIFIER)


def test_scram_independent_computation() -> None:
    password = binding_password(KEY, "web", "orders-db", 3)
    verifier = _scram_verifier(password.reveal(), b"0123456789abcdef", 4096)
    assert scram_sha256_matches(password, verifier)
    assert not scram_sha256_matches(binding_password(KEY, "web", "orders-db", 4), verifier)
    # only one half right is still a mismatch
    head, keys = verifier.rsplit("$", 1)
    stored, _server = keys.split(":")
    assert not scram_sha256_matches(password, f"{head}${stored}:{base64.b64encode(bytes(32)).decode()}")


@pytest.mark.parametrize(
    "verifier",
    [
        "",
        "md5a3556571e93b0d20722ba62be61e8c2d",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:!!!$AAAA:AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$A:A",
    ],
)
def test_scram_unparseable_verifiers_do_not_match(verifier: str) -> None:
    assert not scram_sha256_matches("pencil", verifier)


def test_mysql_native_password() -> None:
    # The well-known PASSWORD('password') of MySQL/MariaDB.
    assert mysql_native_matches("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19")
    assert mysql_native_matches("password", "*2470c0c06dee42fd1618bb99005adca2ec9d1e19")
    password = binding_password(KEY, "web", "shop", 0)
    expected = "*" + hashlib.sha1(hashlib.sha1(password.reveal().encode()).digest()).hexdigest().upper()
    assert mysql_native_matches(password, expected)
    assert not mysql_native_matches(binding_password(KEY, "web", "shop", 1), expected)
    assert not mysql_native_matches(password, "")
    assert not mysql_native_matches(password, expected[1:] + "0")


def test_redis_acl_sha256() -> None:
    password = instance_admin_password(KEY, "sessions")
    digest = hashlib.sha256(password.reveal().encode()).hexdigest()
    assert redis_acl_matches(password, digest)
    assert redis_acl_matches(password, "#" + digest)
    assert redis_acl_matches(password, digest.upper())
    assert redis_acl_matches("password", "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8")
    assert not redis_acl_matches(password, hashlib.sha256(b"other").hexdigest())
    assert not redis_acl_matches(password, "")
    assert not redis_acl_matches(password, ">" + password.reveal())


def test_create_key_leaves_no_temp_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(fd: int, data: bytes) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(os, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        create_key("staging", tmp_path / "k.key")
    assert list(tmp_path.iterdir()) == []
