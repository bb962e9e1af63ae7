"""Request parsers for the API, and the one way the API reads JSON text."""

from __future__ import annotations

import codecs
import json
import math
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def finite_float(text: str) -> float:
    """A JSON number as a float; one too large for a float (1e999) is refused, not infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"The number {text[:40]} is too large.")
    return value


def loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN or Infinity, and no number that only fits as infinity."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=finite_float)


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, strict about numbers (`loads`); a body nested too deep for Python's
    parser is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads(codecs.getreader(encoding)(stream).read())
        except RecursionError:
            raise ParseError("The JSON body is nested too deeply.") from None
        except ValueError as error:
            raise ParseError(f"The request body is not valid JSON: {error}") from None
