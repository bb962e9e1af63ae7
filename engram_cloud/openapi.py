"""`GET /v1/openapi.json`: the /v1 contract as OpenAPI 3, public (no credential needed).

drf-spectacular describes each view's success; `error_responses` (a POSTPROCESSING_HOOK) adds
what every operation may answer besides, all in the one error envelope of ARCHITECTURE.md §4,
so a client (or schemathesis) can check every answer against the document.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.views import SpectacularJSONAPIView

from memories.api.fields import StrictSerializer
from tenants.permissions import Access, declare

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every non-2xx answer: a code, a sentence, the request id, and details.",
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. `validation_error`."},
        "message": {"type": "string"},
        "request_id": {"type": "string", "nullable": True},
        "fields": {"type": "object", "description": "With validation_error: field -> errors."},
        "retry_after": {"type": "integer", "description": "With rate_limited: seconds."},
    },
    "required": ["error", "message", "request_id"],
    "additionalProperties": True,
}

# What any authenticated /v1 operation may answer (ARCHITECTURE.md §4, errors).
COMMON_ERRORS = {
    "400": "Invalid JSON or fields, or no tenant named (`invalid_json`, `validation_error`, …).",
    "401": "Missing or invalid credentials (`unauthorized`, one body for every reason).",
    "402": "The plan's quota is used up (`quota_exceeded`).",
    "403": "The credential lacks the scope, or the tenant is suspended or another's.",
    "404": "No such resource, or no such tenant (`not_found`, `tenant_not_found`).",
    "405": "The path does not take this method (`method_not_allowed`).",
    "406": "The Accept header asks for something other than JSON (`not_acceptable`).",
    "413": "The body is over the size limit (`payload_too_large`).",
    "415": "The body's Content-Type is not one this operation reads (`unsupported_media_type`).",
    "429": "Over the plan's rate limit (`rate_limited`, header Retry-After).",
    "503": "A dependency is down; retry later (`unavailable`).",
}
IDEMPOTENCY_ERRORS = {
    "409": "The same Idempotency-Key is still being processed (`idempotency_conflict`).",
    "422": "The Idempotency-Key was used with another body (`idempotency_mismatch`).",
}


class StrictSerializerSchema(OpenApiSerializerExtension):
    """A StrictSerializer refuses fields it does not declare: `additionalProperties: false`."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


# What POST /v1/import reads as a JSON body (memories.portability: each record is checked on
# its own, a bad one is counted in `failed`, so the items are any objects here).
EXPORT_FILE_SCHEMA = {
    "type": "object",
    "description": "An Engram export file (what GET /v1/export answers).",
    "properties": {
        "version": {"type": "string", "enum": ["1.0"]},
        "memories": {"type": "array", "items": {}},
    },
    "required": ["version", "memories"],
}


# Strings the API reads never hold NUL (DRF refuses it); some must also hold a visible character.
NO_NUL = "^[^\\x00]*$"
# Spelled out rather than \s: what Python's str.strip() removes, which generators agree on.
_SPACE = (
    "\\x00\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)
NOT_BLANK = f"^[^\\x00]*[^{_SPACE}][^\\x00]*$"
NOT_BLANK_FIELDS = frozenset({"content", "query"})
SCALAR = {"nullable": True, "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


def _strings_as_read(schema: dict[str, Any], name: str = "") -> None:
    """Say in the request schemas what the serializers refuse of a string."""
    if schema.get("type") == "string" and not {"enum", "format", "pattern"} & set(schema):
        schema["pattern"] = NOT_BLANK if name in NOT_BLANK_FIELDS or name == "tags" else NO_NUL
    for property_name, child in schema.get("properties", {}).items():
        _strings_as_read(child, property_name)
    if isinstance(schema.get("items"), dict):
        _strings_as_read(schema["items"], name)


def error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Add the error envelope as a component and each error status to every operation; say
    that either credential header will do (one requirement naming both would demand both)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["ExportFile"] = EXPORT_FILE_SCHEMA
    # The upload's form fields are checked by a StrictSerializer too (ImportOptionsSerializer).
    schemas["ImportUploadRequest"]["additionalProperties"] = False
    for name, component in schemas.items():
        if name.startswith("Patched"):
            component["minProperties"] = 1  # a PATCH must change something
        if name.endswith("Request"):
            _strings_as_read(component)
    # Search filters compare metadata values with scalars only.
    schemas["SearchRequest"]["properties"]["metadata"]["additionalProperties"] = SCALAR
    reference = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            operation["security"] = [
                {name: scopes}
                for requirement in operation.get("security", [])
                for name, scopes in requirement.items()
            ]
            errors = dict(COMMON_ERRORS)
            parameters = operation.get("parameters", [])
            if any(parameter.get("name") == "Idempotency-Key" for parameter in parameters):
                errors.update(IDEMPOTENCY_ERRORS)
            if "requestBody" in operation and operation["operationId"] != "import":
                operation["requestBody"]["required"] = True  # no body: 400 validation_error
            if operation.get("operationId") == "import":
                body = operation["requestBody"]["content"]["application/json"]
                body["schema"] = {"$ref": "#/components/schemas/ExportFile"}
            if operation.get("operationId") == "export":
                answer = operation["responses"]["200"]["content"]["application/json"]
                answer["schema"] = {"$ref": "#/components/schemas/ExportFile"}
            for parameter in parameters:
                if parameter.get("in") in ("query", "header") and "schema" in parameter:
                    _strings_as_read(parameter["schema"], parameter["name"])
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result


@declare(Access.PUBLIC)
class OpenApiView(SpectacularJSONAPIView):
    authentication_classes = []
    permission_classes = []
