"""MCP resources: read-only views of the tenant's stats and of each memory."""

from __future__ import annotations

import re
from typing import Any

from mcp.jsonrpc import INVALID_PARAMS, JsonRpcError
from mcp.registry import as_text
from mcp.tools import MAX_ID, stats_with_plan
from memories import services
from memories.api.serializers import memory_representation
from memories.models import Memory
from tenants.authentication import TenantRef

STATS_URI = "engram://stats"
MEMORY_URI_TEMPLATE = "engram://memory/{id}"
_MEMORY_URI = re.compile(r"engram://memory/([1-9][0-9]{0,18})")
JSON = "application/json"

RESOURCES = [
    {
        "uri": STATS_URI,
        "name": "stats",
        "description": "Counts by type, workspace and tier, storage used, and the plan's limits.",
        "mimeType": JSON,
    }
]
RESOURCE_TEMPLATES = [
    {
        "uriTemplate": MEMORY_URI_TEMPLATE,
        "name": "memory",
        "description": "One memory by id, as memory_get returns it.",
        "mimeType": JSON,
    }
]


def resource_not_found(uri: str) -> JsonRpcError:
    # -32602, as MCP asks (SEP-2164); Engram's -32002 means "tenant not found" here.
    return JsonRpcError(INVALID_PARAMS, "Resource not found", {"uri": uri})


def read_resource(uri: str, tenant: TenantRef) -> list[dict[str, Any]]:
    """The contents of a resource. Raises JsonRpcError for a URI that names nothing."""
    if uri == STATS_URI:
        payload = stats_with_plan(tenant)
    else:
        match = _MEMORY_URI.fullmatch(uri)
        if match is None or int(match.group(1)) > MAX_ID:
            raise resource_not_found(uri)
        try:
            payload = memory_representation(services.get_memory(int(match.group(1))))
        except Memory.DoesNotExist:
            raise resource_not_found(uri) from None
    return [{"uri": uri, "mimeType": JSON, "text": as_text(payload)}]
