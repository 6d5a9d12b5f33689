"""Connection secrets sealed at rest: AES-GCM under `SLUICE_SECRET_KEY`.

The variable holds one key, or `new,old` while keys rotate: the first key seals, every key opens.
A key is 32 random bytes in base64 (`sluice dev` generates one; so does `generate_key`). Each
sealed value names the key that sealed it (a short fingerprint, not the key) and is bound to the
row it belongs to (associated data: workspace and connection name), so a sealed value copied
into another workspace's row does not open there.

A dump of the database therefore holds no secret; a process needs the key to use one. Errors name
the variable and never include a key or a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_VARIABLE", "SecretBox", "SecretKeyError", "generate_key", "parse_keys"]

KEY_VARIABLE = "SLUICE_SECRET_KEY"
_VERSION = "v1"
_NONCE_BYTES = 12


class SecretKeyError(ValueError):
    """A missing, malformed or wrong key; the message names the variable."""


def generate_key() -> str:
    """A fresh key, as `SLUICE_SECRET_KEY` holds it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The keys of `SLUICE_SECRET_KEY` (`key` or `new,old`), each checked to be 32 bytes."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise SecretKeyError(f"{KEY_VARIABLE}: is empty; set it to a key (32 bytes, base64)")
    keys: list[bytes] = []
    for position, part in enumerate(parts, start=1):
        try:
            key = base64.urlsafe_b64decode(part.replace("+", "-").replace("/", "_") + "==")
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SecretKeyError(
                f"{KEY_VARIABLE}: key {position} is not 32 bytes in base64 "
                "(generate one with `sluice rotate-secrets --new-key`)"
            )
        keys.append(key)
    return tuple(keys)


def _fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"sluice secret key\x00" + key).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class SecretBox:
    """Seals and opens secret maps with the keys of `SLUICE_SECRET_KEY`."""

    keys: tuple[bytes, ...]

    @classmethod
    def from_text(cls, text: str | None) -> SecretBox:
        if text is None or not text.strip():
            raise SecretKeyError(
                f"{KEY_VARIABLE}: is not set; it encrypts connection secrets "
                "(generate one with `sluice rotate-secrets --new-key`)"
            )
        return cls(parse_keys(text))

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self.keys)})"

    @property
    def current(self) -> str:
        """Fingerprint of the key that seals."""
        return _fingerprint(self.keys[0])

    def seal(self, secrets: dict[str, str], context: str) -> str:
        """`secrets` encrypted under the current key, bound to `context` (the row it is for)."""
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(secrets, ensure_ascii=False, sort_keys=True).encode("utf-8")
        sealed = AESGCM(self.keys[0]).encrypt(nonce, plain, context.encode("utf-8"))
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{_VERSION}.{self.current}.{body}"

    def sealed_with(self, sealed: str) -> str:
        """Fingerprint of the key a sealed value names."""
        parts = sealed.split(".")
        return parts[1] if len(parts) == 3 else ""

    def open(self, sealed: str, context: str) -> dict[str, str]:
        """The secrets in `sealed`; SecretKeyError when no key given opens it."""
        parts = sealed.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise SecretKeyError(f"{KEY_VARIABLE}: a stored secret is not in a known format")
        key = next((k for k in self.keys if _fingerprint(k) == parts[1]), None)
        if key is None:
            raise SecretKeyError(
                f"{KEY_VARIABLE}: none of its keys sealed the stored secrets; while rotating, "
                "give both keys as 'new,old'"
            )
        try:
            raw = base64.urlsafe_b64decode(parts[2])
            plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretKeyError(
                f"{KEY_VARIABLE}: a stored secret does not decrypt (altered, or moved to "
                "another row)"
            ) from None
        value = json.loads(plain)
        assert isinstance(value, dict)
        return {str(k): str(v) for k, v in value.items()}
