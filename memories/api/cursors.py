"""Opaque, signed list cursors: the sort and where the previous page ended."""

from __future__ import annotations

import datetime as dt

from django.core import signing
from rest_framework.exceptions import ValidationError

from memories.services import Position

_SALT = "memories.list.cursor"
_DATE_FIELDS = frozenset({"created_at", "updated_at"})


def encode_cursor(sort: str, position: Position) -> str:
    value = (
        position.value.isoformat() if isinstance(position.value, dt.datetime) else position.value
    )
    return signing.dumps({"s": sort, "v": value, "i": position.id}, salt=_SALT)


def decode_cursor(token: str, sort: str) -> Position:
    invalid = ValidationError({"cursor": ["Invalid cursor; start again without one."]})
    try:
        data = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        raise invalid from None
    if not isinstance(data, dict) or data.get("s") != sort or not isinstance(data.get("i"), int):
        raise invalid
    value = data.get("v")
    if sort.lstrip("-") in _DATE_FIELDS:
        try:
            value = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise invalid from None
    return Position(value=value, id=data["i"])
