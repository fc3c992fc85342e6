"""The seal key: an Ed25519 key kept outside PostgreSQL that signs every seal, and the heads that
carry a signed seal outside the database (JetStream, an auditor's `head.json`).

An attacker who can write to PostgreSQL can recompute event hashes, Merkle roots and the seal
chain, but not a signature: a verifier that trusts the key's public half finds the first seal
whose signature fails. And a head kept outside the database remembers how far the log went, so
cutting its tail is found too.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNED = b"chronicle-seal-v1|"
"""What is signed is this prefix and the seal's hash (which covers its range, count, root and chain)."""


class SealKeyError(ValueError):
    """The seal key is missing or unreadable; the message says which setting."""


@dataclass(frozen=True)
class SealKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, seal_hash: bytes) -> bytes:
        return self.private.sign(SIGNED + seal_hash)

    @classmethod
    def generate(cls) -> SealKey:
        return cls(Ed25519PrivateKey.generate())

    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_pem(cls, pem: bytes, where: str) -> SealKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise SealKeyError(f"{where}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SealKeyError(f"{where}: the seal key must be an Ed25519 key")
        return cls(key)

    @classmethod
    def from_secret(cls, secret: str, where: str) -> SealKey:
        """The 32 raw bytes of the private key, base64 (standard or URL-safe)."""
        try:
            raw = base64.urlsafe_b64decode(secret.strip().replace("+", "-").replace("/", "_") + "==")
        except (binascii.Error, ValueError):
            raise SealKeyError(f"{where}: not base64") from None
        if len(raw) != 32:
            raise SealKeyError(f"{where}: an Ed25519 private key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def from_file(cls, path: Path) -> SealKey:
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise SealKeyError(f"CHRONICLE_SEAL_KEY_FILE: cannot read {path} ({e.strerror})") from None
        return cls.from_pem(pem, f"CHRONICLE_SEAL_KEY_FILE {path}")


def make_key_file(path: Path) -> SealKey:
    """A new key in a new file only its owner may read (mode 0600)."""
    key = SealKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.pem())
    return key


def signature_valid(public_key: bytes, seal_hash: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, SIGNED + seal_hash)
    except (InvalidSignature, ValueError):
        return False
    return True


class SealHead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A signed seal as it is kept outside the database. Positions are strings (they exceed what a
    JavaScript number holds); bytes are lower-case hex. Its encoding is canonical: `parse_head`
    refuses any other spelling of the same content, so any changed byte is noticed."""

    seq: int
    from_position: str
    to_position: str
    event_count: int
    merkle_root: str
    previous_hash: str
    seal_hash: str
    public_key: str
    signature: str


class MalformedHead(ValueError):
    pass


_head_decoder = msgspec.json.Decoder(SealHead)


def encode_head(head: SealHead) -> bytes:
    return msgspec.json.encode(head)


def parse_head(raw: bytes) -> SealHead:
    """A head as `encode_head` wrote it (one trailing newline allowed), or MalformedHead."""
    body = raw[:-1] if raw.endswith(b"\n") else raw
    try:
        head = _head_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise MalformedHead(f"not a seal head: {e}") from None
    if encode_head(head) != body:
        raise MalformedHead("not a seal head as Chronicle writes it (its bytes were changed)")
    return head


def head_of(
    seq: int,
    from_position: int,
    to_position: int,
    event_count: int,
    merkle_root: bytes,
    previous_hash: bytes,
    seal_hash: bytes,
    public_key: bytes,
    signature: bytes,
) -> SealHead:
    return SealHead(
        seq,
        str(from_position),
        str(to_position),
        event_count,
        merkle_root.hex(),
        previous_hash.hex(),
        seal_hash.hex(),
        public_key.hex(),
        signature.hex(),
    )


def load_seal_key(secret: str | None, path: Path | None) -> SealKey:
    """The key from CHRONICLE_SEAL_KEY (base64 of its 32 raw bytes) or CHRONICLE_SEAL_KEY_FILE (PEM)."""
    if secret:
        return SealKey.from_secret(secret, "CHRONICLE_SEAL_KEY")
    if path is not None:
        return SealKey.from_file(path)
    raise SealKeyError(
        "no seal key: set CHRONICLE_SEAL_KEY_FILE (an Ed25519 PEM file) or CHRONICLE_SEAL_KEY (its 32 bytes,"
        " base64); `chronicle dev` makes one in its data folder"
    )
