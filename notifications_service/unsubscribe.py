"""Signed unsubscribe tokens: the user id and a truncated HMAC-SHA256, base64url, no expiry."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid

# 128 bits of HMAC are plenty against forgery and keep the link short.
_MAC_BYTES = 16
_PURPOSE = b"notifications:unsubscribe:"


def _mac(user_id: uuid.UUID, secret: str) -> bytes:
    return hmac.new(secret.encode(), _PURPOSE + user_id.bytes, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(user_id: uuid.UUID, secret: str) -> str:
    raw = user_id.bytes + _mac(user_id, secret)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def read_token(token: str, secret: str) -> uuid.UUID | None:
    """The user id the token was made for, or None when it is malformed or tampered with."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + _MAC_BYTES:
        return None
    user_id = uuid.UUID(bytes=raw[:16])
    return user_id if hmac.compare_digest(raw[16:], _mac(user_id, secret)) else None
