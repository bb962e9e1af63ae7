"""The one table of tools: name -> schema, hints, scope and handler.

`tools/list` shows what is in TOOLS and `tools/call` runs only what is in TOOLS, so every tool
listed works and nothing works that is not listed. A tool's scope follows from its hint (a
read-only tool needs `memories:read`, any other `memories:write`) unless it names one (the
search tools need `search`), so a mutating tool cannot be declared readable by a read key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp import schema
from mcp.jsonrpc import dumps
from tenants.authentication import TenantRef
from tenants.permissions import Scope

Payload = dict[str, Any] | list[Any]


@dataclass(frozen=True)
class Call:
    """What a tool runs for: the tenant, and the request's usage counters, to which a tool adds
    what it did (searches made, memories created) for metering, as the REST views do."""

    tenant: TenantRef
    usage: dict[str, int]

    def count(self, metric: str, amount: int = 1) -> None:
        self.usage[metric] = self.usage.get(metric, 0) + amount


Handler = Callable[[dict[str, Any], Call], Payload]


class Hint(enum.Enum):
    """Engram's hint for each tool (ENGRAM_TOOLS.md)."""

    READ_ONLY = "read-only"
    MUTATING = "mutating"
    DESTRUCTIVE = "destructive"


class ToolFailed(Exception):
    """The tool could not do what it was asked (bad input, a missing memory): the caller gets
    a result with `isError: true` and this message, which the agent can read and act on."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: schema.Schema
    hint: Hint
    idempotent: bool
    handler: Handler
    # A tool whose Engram result is a list: the key that list goes under in structuredContent,
    # which MCP requires to be an object.
    list_key: str | None = None
    scope_override: Scope | None = None

    @property
    def scope(self) -> Scope:
        if self.scope_override is not None:
            return self.scope_override
        return Scope.MEMORIES_READ if self.hint is Hint.READ_ONLY else Scope.MEMORIES_WRITE

    def annotations(self) -> dict[str, bool]:
        return {
            "readOnlyHint": self.hint is Hint.READ_ONLY,
            "destructiveHint": self.hint is Hint.DESTRUCTIVE,
            "idempotentHint": self.idempotent,
            # Memories stay inside the tenant: no tool reaches anything outside it.
            "openWorldHint": False,
        }

    def run(self, arguments: Any, call: Call) -> Payload:
        """Check the arguments against the schema, then run. Raises ToolFailed."""
        try:
            checked = schema.validate(self.input_schema, {} if arguments is None else arguments)
        except schema.SchemaError as error:
            raise ToolFailed(f"Invalid arguments: {error}") from None
        return self.handler(checked, call)

    def structured(self, payload: Payload) -> dict[str, Any]:
        if isinstance(payload, list):
            return {self.list_key or "items": payload}
        return payload


def as_text(payload: Payload) -> str:
    """Engram returns every result as one text item holding JSON; so does Engram Cloud."""
    return dumps(payload)


TOOLS: dict[str, Tool] = {}


def tool(
    name: str,
    *,
    description: str,
    properties: dict[str, schema.Schema],
    hint: Hint,
    idempotent: bool,
    required: tuple[str, ...] = (),
    list_key: str | None = None,
    scope: Scope | None = None,
) -> Callable[[Handler], Handler]:
    """Register a tool under Engram's name; its arguments are exactly `properties`."""

    def register(handler: Handler) -> Handler:
        if name in TOOLS:
            raise RuntimeError(f"tool {name} is registered twice")
        if scope is not None and hint is not Hint.READ_ONLY:
            raise RuntimeError(f"tool {name} changes memories: it needs {Scope.MEMORIES_WRITE}")
        TOOLS[name] = Tool(
            name=name,
            description=description,
            input_schema=schema.closed_object(properties, required),
            hint=hint,
            idempotent=idempotent,
            handler=handler,
            list_key=list_key,
            scope_override=scope,
        )
        return handler

    return register
