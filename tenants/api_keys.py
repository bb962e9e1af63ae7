"""The API key format: `ek_live_` (or `ek_test_`), 36 random base62 characters, 6 of checksum.

36 base62 characters carry 214 bits. The checksum (CRC32 of the random part, in base62) lets
malformed or mistyped keys be refused without touching the database. Keys are stored only as
HMAC-SHA256 digests keyed with the server-side pepper.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from typing import Any

from django.conf import settings

ALPHABET = string.digits + string.ascii_letters
RANDOM_LENGTH = 36
CHECKSUM_LENGTH = 6
DISPLAY_LENGTH = 8
MODES = ("live", "test")
KEY_PATTERN = re.compile(
    rf"^ek_(?P<mode>live|test)_(?P<body>[0-9A-Za-z]{{{RANDOM_LENGTH}}})"
    rf"(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)
# Anything in a text that looks like a key: the mode prefix and more than the display part.
_KEY_IN_TEXT = re.compile(rf"(ek_(?:live|test)_[0-9A-Za-z]{{{DISPLAY_LENGTH}}})[0-9A-Za-z]+")


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate_key(mode: str = "live") -> str:
    if mode not in MODES:
        raise ValueError(f"Unknown key mode {mode!r}")
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"ek_{mode}_{body}{_checksum(body)}"


def is_well_formed(key: str) -> bool:
    match = KEY_PATTERN.match(key)
    return bool(match) and hmac.compare_digest(match["checksum"], _checksum(match["body"]))


def key_digest(key: str) -> str:
    return hmac.new(
        settings.API_KEY_PEPPER.encode("utf-8"), key.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def display_prefix(key: str) -> str:
    mode, body = key.split("_")[1], key.split("_")[2]
    return f"ek_{mode}_{body[:DISPLAY_LENGTH]}"


def mask_keys(value: Any) -> Any:
    """`value` (a text, or JSON data holding texts) with every key-like string cut to its
    display prefix and "…". Error messages quote what they refuse; a key a client sent in the
    wrong place (a query parameter, a field, a tool name) is not repeated back."""
    if isinstance(value, str):
        return _KEY_IN_TEXT.sub(r"\1…", value)
    if isinstance(value, dict):
        return {mask_keys(k): mask_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_keys(item) for item in value]
    return value
