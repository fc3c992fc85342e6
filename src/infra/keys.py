"""Keys derived from the one configured secret (CHRONICLE_JWT_SECRET), one per purpose (HKDF-SHA256):
an operator sets one secret, and no derived key serves two purposes."""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


@functools.cache
def derived_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for `purpose`, derived from `secret`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(secret.encode())
