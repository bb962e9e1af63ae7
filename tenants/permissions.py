"""What a credential may do: API-key scopes, and the one table mapping roles to scopes.

Every `/v1` view declares `required_scopes` per HTTP method; a method it does not list is
refused (fail closed). A JWT-authenticated member gets the scopes of their role.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission

from tenants.models import Role


class Scope(StrEnum):
    MEMORIES_READ = "memories:read"
    MEMORIES_WRITE = "memories:write"
    SEARCH = "search"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)
DEFAULT_KEY_SCOPES = frozenset({Scope.MEMORIES_READ, Scope.MEMORIES_WRITE, Scope.SEARCH})

ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    Role.OWNER: ALL_SCOPES,
    Role.ADMIN: ALL_SCOPES,
    Role.MEMBER: frozenset({Scope.MEMORIES_READ, Scope.MEMORIES_WRITE, Scope.SEARCH}),
    Role.VIEWER: frozenset({Scope.MEMORIES_READ, Scope.SEARCH}),
}


def grants(scopes: frozenset[str], required: Scope) -> bool:
    """`admin` includes every other scope."""
    return required in scopes or Scope.ADMIN in scopes


class HasRequiredScope(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        principal = request.auth
        if principal is None:
            raise NotAuthenticated()
        method = "GET" if request.method == "HEAD" else request.method
        if method.lower() not in view.http_method_names or not hasattr(view, method.lower()):
            return True  # the view answers 405 Method Not Allowed
        if method == "OPTIONS":
            return True  # describes the endpoint, reads nothing
        required = getattr(view, "required_scopes", {}).get(method)
        if required is None:
            self.message = f"{request.method} needs a permission this endpoint does not declare."
            return False
        if not grants(principal.scopes, required):
            self.message = f"This credential lacks the {required} scope."
            return False
        return True
