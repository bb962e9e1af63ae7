"""POST /v1/mcp (and /mcp): MCP's Streamable HTTP transport, without sessions or streams.

The request pipeline (tenants.middleware) has already authenticated the caller and bound the
tenant's database; this view checks what the transport requires (POST, Origin, Accept,
Content-Type, JSON), tells the two protocol eras apart, answers each message with
mcp.protocol, and picks the HTTP status the era gives each answer. A client that accepts only
`text/event-stream` gets its answer as one SSE event; everyone else gets application/json.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from engram_cloud import parsers
from engram_cloud.errors import internal_error, note_error
from engram_cloud.outages import unavailable_error
from mcp import protocol
from mcp.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    JsonRpcError,
    RequestId,
    dumps,
    error_message,
    error_name,
    from_api_error,
    json_response,
    result_message,
)
from tenants.permissions import Access, declare

logger = logging.getLogger(__name__)

MAX_BATCH_MESSAGES = 100
JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})
SSE_TYPES = frozenset({"text/event-stream", "text/*"})

# What answers a POST: the JSON-RPC reply (a list for a batch; None: nothing, 202), the HTTP
# status and headers.
Reply = tuple[dict[str, Any] | list[dict[str, Any]] | None, int, dict[str, str]]


# Each tool's scope is in mcp.registry (the tool table).
@declare(Access.API)
@csrf_exempt
def mcp_endpoint(request: HttpRequest) -> HttpResponse:
    sse = wants_sse(request.headers.get("Accept"))
    payload, status, headers = handle(request, sse)
    if payload is None:
        return HttpResponse(status=202)
    if isinstance(payload, dict) and "error" in payload:
        note_error(request, error_name(payload["error"]))
    if status == 200 and sse:
        return sse_response(payload)
    return json_response(payload, status, headers)


def handle(request: HttpRequest, sse: bool | None) -> Reply:
    if request.method != "POST":
        # No server-sent stream to GET and no session to DELETE: the spec's answer is 405.
        return refused(INVALID_REQUEST, "The MCP endpoint takes POST only.", 405, {"Allow": "POST"})
    if not origin_allowed(request):
        return refused(INVALID_REQUEST, "This Origin may not use the MCP endpoint.", 403)
    if sse is None:
        return refused(INVALID_REQUEST, "Accept application/json or text/event-stream.", 406)
    if request.body and request.content_type != "application/json":
        return refused(INVALID_REQUEST, "Send the message as application/json.", 415)
    try:
        body = parsers.loads(request.body)
    except (ValueError, RecursionError):
        return refused(PARSE_ERROR, "Parse error: the body is not JSON.", 400)
    header_version = request.headers.get("MCP-Protocol-Version")
    if header_version is not None and header_version not in protocol.SUPPORTED_VERSIONS:
        return rejected(protocol.unsupported_version(header_version))
    if header_version in protocol.MODERN_VERSIONS or names_modern_version(body):
        return answer_modern(request, body)
    return answer_handshake(request, body, header_version or protocol.ASSUMED_VERSION)


# --- Transport checks ----------------------------------------------------------------------------


def allowed_origins() -> set[str]:
    """Origins allowed to call the API from a browser (CORS), and any allowed for MCP only."""
    extra = getattr(settings, "ENGRAM_MCP_ALLOWED_ORIGINS", ())
    if isinstance(extra, str):
        extra = extra.split(",")
    configured = [*settings.CORS_ALLOWED_ORIGINS, *extra]
    return {origin.strip().lower().rstrip("/") for origin in configured if origin.strip()}


def origin_allowed(request: HttpRequest) -> bool:
    """No Origin (not a browser), the endpoint's own origin, or one allowed by setting.

    A page elsewhere must not drive the endpoint from a user's browser (DNS rebinding): MCP
    asks servers to refuse such an Origin with 403, whatever CORS would let the browser read.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    own = f"{request.scheme}://{request.get_host()}".lower()
    return origin == own or origin in allowed_origins()


def wants_sse(accept: str | None) -> bool | None:
    """False for JSON, True for an SSE-only client, None if it accepts neither."""
    if not accept:
        return False
    media_types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if media_types & JSON_TYPES:
        return False
    if media_types & SSE_TYPES:
        return True
    return None


def names_modern_version(body: Any) -> bool:
    """A body carrying the 2026-07-28 envelope: `_meta` names a protocol version."""
    params = body.get("params") if isinstance(body, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and protocol.PROTOCOL_VERSION_META in meta


# --- Answering -----------------------------------------------------------------------------------


def answer_handshake(request: HttpRequest, body: Any, version: str) -> Reply:
    if not isinstance(body, list):
        return answer_message(request, body, version)
    if version not in protocol.BATCH_VERSIONS:
        return rejected(
            JsonRpcError(
                INVALID_REQUEST,
                f"MCP {version} has no JSON-RPC batches (only 2025-03-26 had them).",
                status=400,
            )
        )
    if not body or len(body) > MAX_BATCH_MESSAGES:
        return rejected(
            JsonRpcError(
                INVALID_REQUEST,
                f"A batch holds 1 to {MAX_BATCH_MESSAGES} messages.",
                status=400,
            )
        )
    replies = [
        reply
        for item in body
        if (reply := answer_message(request, item, version, in_batch=True)[0]) is not None
    ]
    # Each message of a batch carries its own error; the batch as a whole succeeded.
    return (replies or None), 200, {}


def answer_message(
    request: HttpRequest, raw: Any, version: str, *, in_batch: bool = False
) -> Reply:
    request_id = protocol.request_id_of(raw)
    try:
        message = protocol.read_message(raw)
    except JsonRpcError as error:
        return rejected(error, request_id)
    if message is None or message.is_notification:
        return None, 202, {}
    if in_batch and message.method == "initialize":
        return rejected(
            JsonRpcError(INVALID_REQUEST, "initialize cannot be part of a batch."), request_id
        )
    return run(request, message, version)


def answer_modern(request: HttpRequest, body: Any) -> Reply:
    request_id = protocol.request_id_of(body)
    try:
        if not isinstance(body, dict):
            raise JsonRpcError(INVALID_REQUEST, "Send one JSON-RPC message per request.")
        message = protocol.read_message(body)
        if message is None:
            raise JsonRpcError(INVALID_REQUEST, "The server sends no requests to answer.")
        if message.is_notification:
            return None, 202, {}
        version = protocol.modern_version(message, request.headers)
    except JsonRpcError as error:
        return rejected(error, request_id, modern=True)
    return run(request, message, version)


def run(request: HttpRequest, message: protocol.Message, version: str) -> Reply:
    assert message.id is not None
    exchange = protocol.Exchange(
        version=version, principal=request.principal, tenant=request.tenant, usage=request.usage
    )
    try:
        result = protocol.answer(exchange, message)
    except JsonRpcError as error:
        return rejected(error, message.id, modern=exchange.modern)
    except Exception as error:
        outage = unavailable_error(error)
        if outage is not None:
            return rejected(from_api_error(outage, request), message.id, modern=exchange.modern)
        # Nothing about the failure reaches the client; the log has it, with the request id.
        logger.exception(
            "MCP %s failed (request %s)", message.method, getattr(request, "request_id", None)
        )
        failure = from_api_error(internal_error(), request)
        return rejected(failure, message.id, modern=exchange.modern)
    return result_message(message.id, result), 200, {}


def rejected(
    error: JsonRpcError, request_id: RequestId | None = None, *, modern: bool = False
) -> Reply:
    return error_message(request_id, error), protocol.http_status(error, modern), error.headers


# --- Responses -----------------------------------------------------------------------------------


def refused(code: int, message: str, status: int, headers: dict[str, str] | None = None) -> Reply:
    """A refusal by the transport, before any message was read."""
    return error_message(None, JsonRpcError(code, message)), status, headers or {}


def sse_response(payload: dict[str, Any] | list[dict[str, Any]]) -> HttpResponse:
    """The answer as server-sent events, one per JSON-RPC message, then the stream ends."""
    messages = payload if isinstance(payload, list) else [payload]
    events = "".join(f"event: message\ndata: {dumps(message)}\n\n" for message in messages)
    response = HttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response
