"""MCP's methods over JSON-RPC, in both protocol eras.

The handshake era (2024-11-05 to 2025-11-25) opens with `initialize`; the client then names the
negotiated version in the MCP-Protocol-Version header. The 2026-07-28 era has no handshake:
every request carries its version and client capabilities in `params._meta`, repeats its method
(and tool or resource name) in the Mcp-Method / Mcp-Name headers, and every result says its
`resultType`. Engram Cloud keeps no session in either era: each request stands alone.

METHODS is the one table of what each era serves; `answer` runs one request against it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from billing.quotas import require_monthly_quota
from engram_cloud.errors import ApiError

# Importing the tools registers them in TOOLS.
from mcp import resources, tools  # noqa: F401
from mcp.jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNAUTHORIZED,
    UNSUPPORTED_PROTOCOL_VERSION,
    JsonRpcError,
    RequestId,
    from_api_error,
)
from mcp.registry import TOOLS, Call, Hint, Tool, ToolFailed, as_text
from tenants.authentication import Principal, TenantRef
from tenants.permissions import Scope, grants

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
SUPPORTED_VERSIONS = (*HANDSHAKE_VERSIONS, *MODERN_VERSIONS)
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
# What the spec says to assume of a request without an MCP-Protocol-Version header.
ASSUMED_VERSION = "2025-03-26"
# JSON-RPC batches arrived in 2025-03-26 and left in 2025-06-18.
BATCH_VERSIONS = frozenset({"2025-03-26"})
ANNOTATIONS_SINCE = "2025-03-26"
STRUCTURED_CONTENT_SINCE = "2025-06-18"

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
# Methods whose target the Mcp-Name header repeats, and the parameter it repeats.
NAME_PARAMS = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}

# HTTP status of a JSON-RPC error in the 2026-07-28 era. In the handshake era an error that
# answers a well-formed request travels with 200: a 404 there means "session expired".
MODERN_ERROR_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}

CAPABILITIES = {
    "tools": {"listChanged": False},
    "resources": {"subscribe": False, "listChanged": False},
}
INSTRUCTIONS = (
    "Engram Cloud is this team's long-term memory. Search it before answering "
    "(memory_search), store what is worth keeping (memory_create), and link memories that "
    "belong together (memory_link)."
)
# ttlMs for the 2026-07-28 cache hints of what does not change between deploys.
STATIC_TTL_MS = 5 * 60 * 1000


def is_at_least(version: str, minimum: str) -> bool:
    return SUPPORTED_VERSIONS.index(version) >= SUPPORTED_VERSIONS.index(minimum)


def server_info() -> dict[str, str]:
    return {"name": "engram-cloud", "version": settings.SPECTACULAR_SETTINGS["VERSION"]}


def unsupported_version(requested: Any) -> JsonRpcError:
    return JsonRpcError(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(SUPPORTED_VERSIONS), "requested": requested},
        status=400,
    )


# --- Messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A JSON-RPC request or notification (id None) from the client."""

    method: str
    params: dict[str, Any]
    id: RequestId | None = None

    @property
    def is_notification(self) -> bool:
        return self.id is None


def request_id_of(raw: Any) -> RequestId | None:
    """The message's id if it is a usable one (MCP forbids null; JSON-RPC forbids fractions)."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def read_message(raw: Any) -> Message | None:
    """The request or notification in a decoded body (None for a response the client posted).

    Raises JsonRpcError: -32600 for what is not a JSON-RPC message, -32602 for params that are
    not an object.
    """
    if not isinstance(raw, dict):
        raise JsonRpcError(INVALID_REQUEST, "A message must be a JSON-RPC object.", status=400)
    if "method" not in raw and "id" in raw and ("result" in raw or "error" in raw):
        return None
    if raw.get("jsonrpc") != "2.0" or not isinstance(raw.get("method"), str):
        raise JsonRpcError(
            INVALID_REQUEST, 'A message needs "jsonrpc": "2.0" and a string "method".', status=400
        )
    request_id = request_id_of(raw)
    if "id" in raw and request_id is None:
        raise JsonRpcError(INVALID_REQUEST, "A request id is a string or an integer.", status=400)
    params = raw.get("params")
    if params is not None and not isinstance(params, dict):
        raise JsonRpcError(INVALID_PARAMS, "params must be an object.")
    return Message(method=raw["method"], params=params or {}, id=request_id)


def modern_version(message: Message, headers: Mapping[str, str]) -> str:
    """The version a 2026-07-28-era request names, once its envelope and headers agree.

    Raises JsonRpcError: -32602 without the `_meta` envelope, -32020 when a header is missing
    or disagrees with the body, -32022 for a version not served.
    """
    meta = message.params.get("_meta")
    if not isinstance(meta, dict) or not {PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META} <= set(
        meta
    ):
        raise JsonRpcError(
            INVALID_PARAMS,
            f"params._meta must carry {PROTOCOL_VERSION_META} and {CLIENT_CAPABILITIES_META}.",
        )
    version = meta[PROTOCOL_VERSION_META]
    if headers.get("MCP-Protocol-Version") != version:
        raise header_mismatch("MCP-Protocol-Version", "the request's protocol version")
    if headers.get("Mcp-Method") != message.method:
        raise header_mismatch("Mcp-Method", "the request's method")
    name_param = NAME_PARAMS.get(message.method)
    target = message.params.get(name_param) if name_param else None
    if target is not None and header_value(headers.get("Mcp-Name")) != target:
        raise header_mismatch("Mcp-Name", f"the request's {name_param!r}")
    if version not in MODERN_VERSIONS:
        raise unsupported_version(version)
    return version


_BASE64_VALUE = re.compile(r"=\?base64\?(.*)\?=")


def header_value(raw: str | None) -> str | None:
    """A header value, decoded if the client wrapped it as `=?base64?…?=` (how MCP sends a name
    that is not plain printable ASCII); a malformed wrapping matches nothing."""
    match = _BASE64_VALUE.fullmatch(raw or "")
    if match is None:
        return raw
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def header_mismatch(header: str, what: str) -> JsonRpcError:
    return JsonRpcError(HEADER_MISMATCH, f"The {header} header is missing or differs from {what}.")


# --- Answering requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request being answered: in which version, and for whom."""

    version: str
    principal: Principal
    tenant: TenantRef
    # The request's metering counters (tenants.middleware), which tool calls add to.
    usage: dict[str, int]

    @property
    def modern(self) -> bool:
        return self.version in MODERN_VERSIONS

    def require(self, scope: Scope) -> None:
        if not grants(self.principal.scopes, scope):
            raise missing_scope(scope)


def missing_scope(scope: Scope) -> JsonRpcError:
    """MCP's scope challenge: 403 with `insufficient_scope`, naming the scope that is needed."""
    return JsonRpcError(
        UNAUTHORIZED,
        f"This credential lacks the {scope} scope.",
        {"error": "forbidden", "required_scope": str(scope)},
        status=403,
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
    )


def invalid_params(message: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS, message)


def initialize(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    requested = params.get("protocolVersion")
    if not isinstance(requested, str):
        raise invalid_params("initialize needs a protocolVersion string.")
    return {
        "protocolVersion": requested
        if requested in HANDSHAKE_VERSIONS
        else LATEST_HANDSHAKE_VERSION,
        "capabilities": CAPABILITIES,
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }


def ping(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    return {}


def discover(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "supportedVersions": list(SUPPORTED_VERSIONS),
        "capabilities": CAPABILITIES,
        "instructions": INSTRUCTIONS,
    }


def only_page(params: dict[str, Any]) -> None:
    """Every list fits in one page, so any cursor is one this server never gave out."""
    if params.get("cursor") is not None:
        raise invalid_params("Unknown cursor.")


def tool_definition(tool: Tool, version: str) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
    }
    if is_at_least(version, ANNOTATIONS_SINCE):
        definition["annotations"] = tool.annotations()
    return definition


def list_tools(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    """The tools this credential may call: a read-only key is not offered what it cannot do."""
    only_page(params)
    return {
        "tools": [
            tool_definition(tool, exchange.version)
            for tool in TOOLS.values()
            if grants(exchange.principal.scopes, tool.scope)
        ]
    }


def call_tool(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    name, arguments = params.get("name"), params.get("arguments")
    if not isinstance(name, str):
        raise invalid_params("tools/call needs the tool's name.")
    if arguments is not None and not isinstance(arguments, dict):
        raise invalid_params("A tool's arguments are an object.")
    tool = TOOLS.get(name)
    if tool is None:
        raise JsonRpcError(INVALID_PARAMS, f"Unknown tool: {name}", {"tool": name})
    exchange.require(tool.scope)
    if tool.hint is not Hint.READ_ONLY:
        # As over REST: reads are never refused by the monthly API-call quota, writes are.
        require_monthly_quota(exchange.tenant, "api_calls")
    try:
        payload = tool.run(arguments, Call(exchange.tenant, exchange.usage))
    except ToolFailed as failure:
        return {"content": [{"type": "text", "text": str(failure)}], "isError": True}
    result: dict[str, Any] = {"content": [{"type": "text", "text": as_text(payload)}]}
    if is_at_least(exchange.version, STRUCTURED_CONTENT_SINCE):
        result["structuredContent"] = tool.structured(payload)
    result["isError"] = False
    return result


def list_resources(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    only_page(params)
    readable = grants(exchange.principal.scopes, Scope.MEMORIES_READ)
    return {"resources": resources.RESOURCES if readable else []}


def list_resource_templates(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    only_page(params)
    readable = grants(exchange.principal.scopes, Scope.MEMORIES_READ)
    return {"resourceTemplates": resources.RESOURCE_TEMPLATES if readable else []}


def read_resource(exchange: Exchange, params: dict[str, Any]) -> dict[str, Any]:
    uri = params.get("uri")
    if not isinstance(uri, str):
        raise invalid_params("resources/read needs the resource's uri.")
    exchange.require(Scope.MEMORIES_READ)
    return {"contents": resources.read_resource(uri, exchange.tenant)}


HANDSHAKE, MODERN = "handshake", "modern"
BOTH = frozenset({HANDSHAKE, MODERN})
Method = Callable[[Exchange, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MethodSpec:
    handler: Method
    eras: frozenset[str]
    # The 2026-07-28 cache hint (ttlMs, cacheScope) of a cacheable result. Tool lists depend on
    # the credential's scopes and everything else on the tenant's data: all are private.
    cache: tuple[int, str] | None = None


METHODS: dict[str, MethodSpec] = {
    "initialize": MethodSpec(initialize, frozenset({HANDSHAKE})),
    "ping": MethodSpec(ping, frozenset({HANDSHAKE})),
    "server/discover": MethodSpec(discover, frozenset({MODERN}), (STATIC_TTL_MS, "public")),
    "tools/list": MethodSpec(list_tools, BOTH, (STATIC_TTL_MS, "private")),
    "tools/call": MethodSpec(call_tool, BOTH),
    "resources/list": MethodSpec(list_resources, BOTH, (STATIC_TTL_MS, "private")),
    "resources/templates/list": MethodSpec(
        list_resource_templates, BOTH, (STATIC_TTL_MS, "private")
    ),
    "resources/read": MethodSpec(read_resource, BOTH, (0, "private")),
}


def answer(exchange: Exchange, message: Message) -> dict[str, Any]:
    """The result of one request. Raises JsonRpcError (a request's own errors included)."""
    spec = METHODS.get(message.method)
    if spec is None or (MODERN if exchange.modern else HANDSHAKE) not in spec.eras:
        raise JsonRpcError(METHOD_NOT_FOUND, "Method not found", {"method": message.method})
    try:
        result = spec.handler(exchange, message.params)
    except ApiError as error:
        raise from_api_error(error) from None
    if exchange.modern:
        result["resultType"] = "complete"
        if spec.cache is not None:
            result["ttlMs"], result["cacheScope"] = spec.cache
        result["_meta"] = {SERVER_INFO_META: server_info()}
    return result


def http_status(error: JsonRpcError, modern: bool) -> int:
    if error.status is not None:
        return error.status
    if error.code == INTERNAL_ERROR:
        return 500
    return MODERN_ERROR_STATUS.get(error.code, 200) if modern else 200
