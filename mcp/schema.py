"""The JSON Schema subset the tools declare, and the one validator that enforces it.

A tool's inputSchema is both what `tools/list` shows and what `tools/call` checks, so a tool
cannot accept an argument its schema does not describe, nor refuse one the schema's types
allow. Keywords understood: type (a name or a list of names), description, enum, default,
properties, required, additionalProperties (false), items, minimum, maximum, minLength,
maxLength, minItems, maxItems, pattern. The schemas use nothing else (tests check them with a
full Draft 2020-12 validator too).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

Schema = dict[str, Any]

_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


class SchemaError(ValueError):
    """Arguments that do not fit the schema; `problems` are readable, one per argument."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- Building schemas ----------------------------------------------------------------------------


def string(description: str, **keywords: Any) -> Schema:
    return {"type": "string", "description": description, **keywords}


def integer(description: str, **keywords: Any) -> Schema:
    return {"type": "integer", "description": description, **keywords}


def number(description: str, **keywords: Any) -> Schema:
    return {"type": "number", "description": description, **keywords}


def boolean(description: str, **keywords: Any) -> Schema:
    return {"type": "boolean", "description": description, **keywords}


def array(items: Schema, description: str, **keywords: Any) -> Schema:
    return {"type": "array", "items": items, "description": description, **keywords}


def free_object(description: str) -> Schema:
    """A JSON object whose keys the tool checks itself (metadata, filters, an export file)."""
    return {"type": "object", "description": description}


def closed_object(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these properties: unknown ones are refused, as the REST API does."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


# --- Validating ----------------------------------------------------------------------------------


def validate(schema: Schema, value: Any) -> Any:
    """The value, checked against the schema, with integral floats (1.0) turned into ints.

    Raises SchemaError listing every problem found.
    """
    problems: list[str] = []
    cleaned = _check(schema, value, "", problems)
    if problems:
        raise SchemaError(problems)
    return cleaned


def _describe(path: str) -> str:
    return path or "arguments"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number:,} {noun}s"


def _type_matches(name: str, value: Any) -> bool:
    if name == "integer":
        return _is_number(value) and float(value).is_integer()
    if name == "number":
        return _is_number(value)
    return isinstance(value, _PYTHON_TYPES[name]) and not (
        name != "boolean" and isinstance(value, bool)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # ECMA-262 `$` (what JSON Schema means) ends the string; Python's also matches before a
    # final newline, so a trailing `$` becomes `\Z`.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _check(schema: Schema, value: Any, path: str, problems: list[str]) -> Any:
    names = schema.get("type")
    if names is not None:
        names = [names] if isinstance(names, str) else names
        matched = next((name for name in names if _type_matches(name, value)), None)
        if matched is None:
            problems.append(f"{_describe(path)}: must be {' or '.join(names)}")
            return value
        if matched == "integer" and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(str(choice) for choice in schema["enum"])
        problems.append(f"{_describe(path)}: must be one of {choices}")
        return value
    if isinstance(value, str):
        _check_string(schema, value, path, problems)
    elif _is_number(value):
        _check_number(schema, value, path, problems)
    elif isinstance(value, list):
        value = _check_array(schema, value, path, problems)
    elif isinstance(value, dict):
        value = _check_object(schema, value, path, problems)
    return value


def _check_string(schema: Schema, value: str, path: str, problems: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(
            f"{_describe(path)}: must be at least {_count(schema['minLength'], 'character')}"
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(
            f"{_describe(path)}: must be at most {_count(schema['maxLength'], 'character')}"
        )
    if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
        problems.append(f"{_describe(path)}: must match {schema['pattern']}")


def _check_number(schema: Schema, value: float, path: str, problems: list[str]) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{_describe(path)}: must be at least {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{_describe(path)}: must be at most {schema['maximum']}")


def _check_array(schema: Schema, value: list[Any], path: str, problems: list[str]) -> list[Any]:
    if "minItems" in schema and len(value) < schema["minItems"]:
        problems.append(
            f"{_describe(path)}: must have at least {_count(schema['minItems'], 'item')}"
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(
            f"{_describe(path)}: must have at most {_count(schema['maxItems'], 'item')}"
        )
        return value
    items = schema.get("items")
    if items is None:
        return value
    return [_check(items, item, f"{path}[{index}]", problems) for index, item in enumerate(value)]


def _check_object(
    schema: Schema, value: dict[str, Any], path: str, problems: list[str]
) -> dict[str, Any]:
    properties = schema.get("properties", {})
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            problems.append(f"{prefix}{name}: is required")
    cleaned = {}
    for name, item in value.items():
        if name in properties:
            cleaned[name] = _check(properties[name], item, f"{prefix}{name}", problems)
        elif schema.get("additionalProperties", True) is False:
            problems.append(f"{prefix}{name}: is not an argument of this tool")
        else:
            cleaned[name] = item
    return cleaned
