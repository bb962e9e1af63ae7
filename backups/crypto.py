"""The encrypted backup file: compressed, then AES-256-GCM in chunks under a per-backup key.

Layout: MAGIC, a 4-byte big-endian header length, the header (JSON), then chunks, each a
4-byte length and an AES-GCM ciphertext (with its tag) of at most CHUNK_SIZE compressed bytes.

- Each backup has a random 256-bit data key; the header carries it wrapped (AES-GCM) by the
  key-encryption key from settings (ENGRAM_BACKUP_KEY), with the tenant id as associated data.
- Chunk nonces are a random 7-byte prefix, a 4-byte chunk counter and a last-chunk flag, so
  chunks cannot be reordered, dropped or appended, and a file cut after any chunk is refused.
- The SHA-256 of the header is every chunk's associated data: changing the tenant id, the
  wrapped key or any other header field makes every chunk fail to authenticate.

Memory use is bounded by the chunk size whatever the size of the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

MAGIC = b"ENGRMBK1"
FORMAT_VERSION = 1
CHUNK_SIZE = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
# zlib level 1: most of level 6's ratio on SQLite pages at a fraction of the time.
COMPRESSION_LEVEL = 1
_LENGTH = struct.Struct(">I")


class BackupUnreadable(Exception):
    """The file is not a backup this service can trust: corrupted, truncated, tampered with,
    of another tenant, or encrypted under another key. Nothing was restored from it."""


@dataclass(frozen=True)
class BackupHeader:
    tenant_id: str
    schema_version: str
    taken_at: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def key_encryption_key() -> bytes:
    try:
        key = base64.b64decode(settings.ENGRAM_BACKUP_KEY, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ImproperlyConfigured("ENGRAM_BACKUP_KEY must be set to 32 bytes, base64-encoded.")
    return key


def key_id(key: bytes) -> str:
    """A short name of the key-encryption key, so a file under another key is named as such."""
    return hashlib.sha256(b"engram-backup-kek" + key).hexdigest()[:16]


def _key_aad(tenant_id: str) -> bytes:
    return b"engram-backup-data-key:" + tenant_id.encode()


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypt_file(source: BinaryIO, target: BinaryIO, header: BackupHeader) -> None:
    """Compress and encrypt `source` into `target`."""
    kek = key_encryption_key()
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(12)
    prefix = os.urandom(7)
    header_bytes = json.dumps(
        {
            "format": FORMAT_VERSION,
            "tenant_id": header.tenant_id,
            "schema_version": header.schema_version,
            "taken_at": header.taken_at,
            "cipher": "AES-256-GCM",
            "compression": "zlib",
            "chunk_size": CHUNK_SIZE,
            "kek_id": key_id(kek),
            "wrapped_key": _b64(
                AESGCM(kek).encrypt(wrap_nonce, data_key, _key_aad(header.tenant_id))
            ),
            "wrap_nonce": _b64(wrap_nonce),
            "nonce_prefix": _b64(prefix),
        },
        sort_keys=True,
    ).encode()
    preamble = MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes
    target.write(preamble)
    aad = hashlib.sha256(preamble).digest()
    cipher = AESGCM(data_key)
    compressor = zlib.compressobj(COMPRESSION_LEVEL)
    pending = bytearray()
    counter = 0

    def emit(chunk: bytes, last: bool) -> None:
        nonlocal counter
        sealed = cipher.encrypt(_nonce(prefix, counter, last), chunk, aad)
        target.write(_LENGTH.pack(len(sealed)) + sealed)
        counter += 1

    while block := source.read(CHUNK_SIZE):
        pending += compressor.compress(block)
        while len(pending) > CHUNK_SIZE:
            emit(bytes(pending[:CHUNK_SIZE]), last=False)
            del pending[:CHUNK_SIZE]
    pending += compressor.flush()
    while len(pending) > CHUNK_SIZE:
        emit(bytes(pending[:CHUNK_SIZE]), last=False)
        del pending[:CHUNK_SIZE]
    emit(bytes(pending), last=True)


def _read_exact(source: BinaryIO, size: int, what: str) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise BackupUnreadable(f"The backup is truncated (in its {what}).")
    return data


def read_header(source: BinaryIO) -> tuple[dict, bytes]:
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupUnreadable("Not an Engram Cloud backup file (bad magic bytes).")
    (length,) = _LENGTH.unpack(_read_exact(source, 4, "header"))
    if length > MAX_HEADER_BYTES:
        raise BackupUnreadable("The backup's header is corrupted.")
    header_bytes = _read_exact(source, length, "header")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise BackupUnreadable("The backup's header is corrupted.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise BackupUnreadable("The backup's header is corrupted or of an unknown format.")
    return header, MAGIC + _LENGTH.pack(length) + header_bytes


def decrypt_file(source: BinaryIO, target: BinaryIO, *, tenant_id: str) -> BackupHeader:
    """Authenticate, decrypt and decompress `source` into `target`, or raise BackupUnreadable.

    `target` may have received part of the data when this raises: write it to a scratch file.
    """
    header, preamble = read_header(source)
    if header.get("tenant_id") != tenant_id:
        raise BackupUnreadable("This backup belongs to another tenant.")
    kek = key_encryption_key()
    if header.get("kek_id") != key_id(kek):
        raise BackupUnreadable("This backup was encrypted under another ENGRAM_BACKUP_KEY.")
    try:
        data_key = AESGCM(kek).decrypt(
            base64.b64decode(header["wrap_nonce"]),
            base64.b64decode(header["wrapped_key"]),
            _key_aad(tenant_id),
        )
        prefix = base64.b64decode(header["nonce_prefix"])
        chunk_limit = int(header["chunk_size"]) + 16
    except (InvalidTag, KeyError, ValueError, TypeError):
        raise BackupUnreadable("The backup's key does not authenticate: tampered with.") from None
    if len(prefix) != 7 or chunk_limit > CHUNK_SIZE + 16:
        raise BackupUnreadable("The backup's header is corrupted.")
    aad = hashlib.sha256(preamble).digest()
    cipher = AESGCM(data_key)
    decompressor = zlib.decompressobj()
    counter = 0
    while True:
        length_bytes = source.read(4)
        if len(length_bytes) < 4:
            raise BackupUnreadable("The backup is truncated (its last chunk is missing).")
        (length,) = _LENGTH.unpack(length_bytes)
        if length > chunk_limit:
            raise BackupUnreadable("The backup is corrupted (a chunk is too large).")
        sealed = _read_exact(source, length, "data")
        chunk, last = _open_chunk(cipher, prefix, counter, sealed, aad)
        counter += 1
        try:
            while chunk:
                # Bounded output per call: a crafted chunk cannot inflate into gigabytes at once.
                target.write(decompressor.decompress(chunk, CHUNK_SIZE))
                chunk = decompressor.unconsumed_tail
        except zlib.error:
            raise BackupUnreadable("The backup's data is corrupted.") from None
        if last:
            break
    if source.read(1):
        raise BackupUnreadable("The backup has data after its last chunk.")
    target.write(decompressor.flush())
    if not decompressor.eof:
        raise BackupUnreadable("The backup's data is incomplete.")
    return BackupHeader(
        tenant_id=header["tenant_id"],
        schema_version=str(header.get("schema_version", "")),
        taken_at=str(header.get("taken_at", "")),
    )


def _open_chunk(
    cipher: AESGCM, prefix: bytes, counter: int, sealed: bytes, aad: bytes
) -> tuple[bytes, bool]:
    for last in (False, True):
        try:
            return cipher.decrypt(_nonce(prefix, counter, last), sealed, aad), last
        except InvalidTag:
            continue
    raise BackupUnreadable("The backup does not authenticate: corrupted or tampered with.")
