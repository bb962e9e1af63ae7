"""JSON-RPC 2.0 as MCP uses it: error codes, message envelopes, and errors as HTTP responses.

An error carries the HTTP status it must be sent with when the transport fixes one (a body
that is not JSON, a credential refused by the request pipeline); otherwise the protocol era
decides the status (mcp/protocol.py), because the handshake era and the 2026-07-28 era map
the same JSON-RPC error to different statuses.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse

from engram_cloud.errors import ApiError, error_response, note_error
from tenants.api_keys import mask_keys

JSONRPC_VERSION = "2.0"
# The MCP endpoint: Engram Cloud's path and the one Engram OSS serves.
MCP_PATHS = frozenset({"/v1/mcp", "/mcp"})

# JSON-RPC 2.0.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP 2026-07-28.
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022
# Engram's own codes, kept so that agents written for Engram read Engram Cloud's errors alike.
UNAUTHORIZED = -32001
TENANT_NOT_FOUND = -32002
TENANT_SUSPENDED = -32003
QUOTA_EXCEEDED = -32004
RATE_LIMITED = -32005

# The pipeline's error codes (ARCHITECTURE.md §4) that have an Engram JSON-RPC code. Any other
# refusal is the client's malformed request (4xx) or our failure (5xx).
_ENGRAM_CODES = {
    "unauthorized": UNAUTHORIZED,
    "forbidden": UNAUTHORIZED,
    "tenant_mismatch": UNAUTHORIZED,
    "tenant_not_found": TENANT_NOT_FOUND,
    "tenant_suspended": TENANT_SUSPENDED,
    "quota_exceeded": QUOTA_EXCEEDED,
    "rate_limited": RATE_LIMITED,
}

RequestId = int | str


class JsonRpcError(Exception):
    """Raise while handling a message to answer it with this JSON-RPC error.

    `status` is the HTTP status when it does not depend on the protocol era; `headers` go on
    the HTTP response (WWW-Authenticate, Retry-After) when the error answers a single message.
    """

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status
        self.headers = headers or {}

    def as_object(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": mask_keys(self.message)}
        if self.data is not None:
            error["data"] = mask_keys(self.data)
        return error


def error_message(request_id: RequestId | None, error: JsonRpcError) -> dict[str, Any]:
    # `id` stays present (null) when the request's id could not be read, as JSON-RPC requires.
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error.as_object()}


def result_message(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result}


_NAMES = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
    INTERNAL_ERROR: "internal_error",
    HEADER_MISMATCH: "header_mismatch",
    UNSUPPORTED_PROTOCOL_VERSION: "unsupported_protocol_version",
}


def error_name(error: dict[str, Any]) -> str:
    """What the request log and metrics record for a JSON-RPC error: the pipeline's own code
    when the error came from there (quota_exceeded, forbidden), else the JSON-RPC one's name."""
    data = error.get("data")
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return _NAMES.get(error["code"], f"jsonrpc_{error['code']}")


def from_api_error(error: ApiError, request: HttpRequest | None = None) -> JsonRpcError:
    """The pipeline's error (ARCHITECTURE.md §4) as a JSON-RPC error with the same HTTP status.

    `data` keeps the REST error code and details, so nothing the REST body says is lost.
    """
    code = _ENGRAM_CODES.get(error.code)
    if code is None:
        code = INTERNAL_ERROR if error.status >= 500 else INVALID_REQUEST
    data = {"error": error.code, "request_id": getattr(request, "request_id", None)}
    data.update(error.details)
    return JsonRpcError(code, error.message, data, status=error.status, headers=error.headers)


def dumps(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = HttpResponse(dumps(payload), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def api_error_response(request: HttpRequest, error: ApiError) -> HttpResponse:
    """What the request pipeline answers on an MCP path instead of the REST error body."""
    note_error(request, error.code)
    rpc_error = from_api_error(error, request)
    return json_response(
        error_message(None, rpc_error), status=error.status, headers=rpc_error.headers
    )


def render_error(request: HttpRequest, error: ApiError) -> HttpResponse:
    """A refusal by middleware before any view: MCP clients read JSON-RPC errors (with Engram's
    codes), REST clients the error envelope."""
    if request.path_info in MCP_PATHS:
        return api_error_response(request, error)
    return error_response(request, error)
