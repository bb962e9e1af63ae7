"""What a credential may do: API-key scopes, and the one table mapping roles to scopes.

Every `/v1` view declares `required_scopes` per HTTP method; a method it does not list is
refused (fail closed). A JWT-authenticated member gets the scopes of their role, and the web
console asks the same table what a member may do there (`membership_scopes`): a member
without a seat on the workspace's plan (billing.seats) holds only the read-only scopes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import BasePermission

from billing.seats import has_seat
from tenants.models import Membership, Role


class Scope(StrEnum):
    MEMORIES_READ = "memories:read"
    MEMORIES_WRITE = "memories:write"
    SEARCH = "search"
    ADMIN = "admin"
    # Console actions: held by roles only, never by an API key.
    MEMBERS_MANAGE = "members:manage"
    KEYS_MANAGE = "keys:manage"
    WORKSPACE_MANAGE = "workspace:manage"
    AUDIT_VIEW = "audit:view"
    BILLING = "billing"
    WORKSPACE_DELETE = "workspace:delete"


# What an API key may hold (ARCHITECTURE.md §4).
ALL_SCOPES = frozenset({Scope.MEMORIES_READ, Scope.MEMORIES_WRITE, Scope.SEARCH, Scope.ADMIN})
DEFAULT_KEY_SCOPES = frozenset({Scope.MEMORIES_READ, Scope.MEMORIES_WRITE, Scope.SEARCH})

_VIEWER = frozenset({Scope.MEMORIES_READ, Scope.SEARCH})
_MEMBER = _VIEWER | {Scope.MEMORIES_WRITE}
_ADMIN = _MEMBER | {
    Scope.ADMIN,
    Scope.MEMBERS_MANAGE,
    Scope.KEYS_MANAGE,
    Scope.WORKSPACE_MANAGE,
    Scope.AUDIT_VIEW,
}
_OWNER = _ADMIN | {Scope.BILLING, Scope.WORKSPACE_DELETE}

# The one role → permission table: the API (JWT members) and the console both read it.
ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    Role.OWNER: _OWNER,
    Role.ADMIN: _ADMIN,
    Role.MEMBER: _MEMBER,
    Role.VIEWER: _VIEWER,
}


def grants(scopes: frozenset[str], required: Scope) -> bool:
    """`admin` includes every API scope (not the console actions, which only roles hold)."""
    return required in scopes or (Scope.ADMIN in scopes and required in ALL_SCOPES)


# What a member beyond the plan's member limit keeps.
READ_ONLY_SCOPES = _VIEWER


def membership_scopes(membership: Membership, plan_code: str) -> frozenset[Scope]:
    """A member's scopes in their workspace: their role's, read-only without a seat."""
    scopes = ROLE_SCOPES.get(membership.role, frozenset())
    if not has_seat(membership, plan_code):
        return scopes & READ_ONLY_SCOPES
    return scopes


def role_allows(role: str, action: Scope) -> bool:
    """May a member with this role do this (in the console or the API)?"""
    return grants(ROLE_SCOPES.get(role, frozenset()), action)


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
