"""Every URL pattern of the project, read from Django's resolver, with what it declares.

A route's declaration comes from its view (`tenants.permissions.declare`, which
`workspace_view` applies for workspace pages) or, for a third-party app's routes, from its URL
namespace in `DECLARED_NAMESPACES`. django-ninja serves each path through a wrapper of its own;
the declaration is on the endpoint functions that wrapper dispatches to.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver
from ninja.openapi.views import default_home

from tenants.permissions import DECLARED_NAMESPACES, Access, Declaration, declaration_of

PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


@dataclass(frozen=True)
class Route:
    pattern: str  # as the resolver joins it, without the leading slash: "v1/memories/<…>"
    name: str  # "namespace:name", what the failure messages print
    view: str  # the callback's dotted name
    declaration: Declaration | None
    namespace: str

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(match["name"] for match in PARAMETER.finditer(self.pattern))

    def url(self, **values: Any) -> str:
        """The path with each `<param>` filled from `values`."""
        return "/" + PARAMETER.sub(lambda match: str(values[match["name"]]), self.pattern)

    def __str__(self) -> str:
        return f"/{self.pattern}"


def _dotted(callback: Any) -> str:
    target = getattr(callback, "view_class", None) or getattr(callback, "func", callback)
    for cell in getattr(callback, "__closure__", None) or ():
        operations = getattr(cell.cell_contents, "operations", None)
        if operations:  # django-ninja: the endpoint function, not ninja's wrapper
            target = operations[0].view_func
    return f"{target.__module__}.{target.__qualname__}"


def _ninja_declaration(callback: Any) -> Declaration | None:
    """The declaration shared by the endpoint functions behind a django-ninja path."""
    if isinstance(callback, functools.partial) and callback.func is default_home:
        # The API root ninja adds to find its docs; with docs off it only ever raises 404.
        return Declaration(Access.PUBLIC)
    for cell in getattr(callback, "__closure__", None) or ():
        path_view = cell.cell_contents
        operations = getattr(path_view, "operations", None)
        if operations is None:
            continue
        found = [declaration_of(operation.view_func) for operation in operations]
        return found[0] if all(declaration == found[0] for declaration in found) else None
    return None


def _walk(patterns: list[Any], prefix: str, namespace: str) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = entry.namespace or namespace
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner)
            continue
        assert isinstance(entry, URLPattern)
        callback = entry.callback
        declaration = DECLARED_NAMESPACES.get(namespace.split(":")[0]) if namespace else None
        if declaration is None:
            declaration = declaration_of(callback) or _ninja_declaration(callback)
        yield Route(
            pattern=prefix + str(entry.pattern).lstrip("^").rstrip("$"),
            name=f"{namespace}:{entry.name}" if namespace else str(entry.name),
            view=_dotted(callback),
            declaration=declaration,
            namespace=namespace,
        )


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns, "", ""))


def routes_with(access: Any) -> list[Route]:
    return [
        route
        for route in all_routes()
        if route.declaration is not None and route.declaration.access == access
    ]
