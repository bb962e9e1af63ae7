"""What a credential may do: API-key scopes, and the one table mapping roles to scopes.

Every `/v1` view declares `required_scopes` per HTTP method; a method it does not list is
refused (fail closed). A JWT-authenticated member gets the scopes of their role, and the web
console asks the same table what a member may do there (`membership_scopes`): a member
without a seat on the workspace's plan (billing.seats) holds only the read-only scopes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

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


# ---------------------------------------------------------------------------------------------
# Route declarations: every URL of the project says who may call it (tests/security checks
# that none is missing and that each one behaves as declared).


class Access(StrEnum):
    """Who may call a route, before any per-scope check."""

    PUBLIC = "public"  # anyone: probes, landing page, sign-up/in, password reset, OpenAPI
    TOKEN_LINK = "token_link"  # anyone holding a single-use token in the URL (invite links)
    SIGNED_IN = "signed_in"  # any signed-in console user, outside a workspace
    WORKSPACE = "workspace"  # a member of the workspace whose role allows `scope`, else 404/403
    API = "api"  # an API key or member JWT of the tenant, holding the method's scope
    OPERATOR = "operator"  # the monitoring scraper: bearer token or loopback (`/metrics`)
    STAFF = "staff"  # Django admin: staff users only
    WEBHOOK = "webhook"  # a request signed with a shared secret (Stripe)


@dataclass(frozen=True)
class Declaration:
    access: Access
    # HTTP method -> scope; "*" for every method the route answers. Empty: no scope asked.
    scopes: Mapping[str, Scope] = field(default_factory=dict)

    def scope_for(self, method: str) -> Scope | None:
        method = "GET" if method.upper() == "HEAD" else method.upper()
        return self.scopes.get(method, self.scopes.get("*"))


DECLARATION_ATTR = "engram_access"

# Every declared view by dotted name (what the security tests read and print).
DECLARATIONS: dict[str, Declaration] = {}

# Routes of third-party apps, declared by URL namespace since their views cannot be decorated.
DECLARED_NAMESPACES: dict[str, Declaration] = {
    "admin": Declaration(Access.STAFF),
    "djstripe": Declaration(Access.WEBHOOK),
}

V = TypeVar("V")


def declare(access: Access, scope: Scope | None = None) -> Callable[[V], V]:
    """Declare who may call a view: `@declare(Access.PUBLIC)` on a function or class view.

    A /v1 APIView declares `Access.API`; its per-method scopes are its `required_scopes`.
    Workspace pages get their declaration from `tenants.console.access.workspace_view`.
    """

    def mark(view: V) -> V:
        scopes: dict[str, Scope] = {"*": scope} if scope is not None else {}
        if access is Access.API and isinstance(view, type):
            scopes = dict(getattr(view, "required_scopes", {}))
        declaration = Declaration(access, scopes)
        setattr(view, DECLARATION_ATTR, declaration)
        DECLARATIONS[f"{view.__module__}.{view.__qualname__}"] = declaration  # type: ignore[attr-defined]
        return view

    return mark


def declaration_of(view: Any) -> Declaration | None:
    """The declaration of a URL pattern's callback (function, `as_view()` or decorated)."""
    declaration = getattr(view, DECLARATION_ATTR, None)
    for view_class in (getattr(view, "view_class", None), getattr(view, "cls", None)):
        # A class's own declaration only: a subclass does not inherit its parent's.
        if declaration is None and view_class is not None:
            declaration = vars(view_class).get(DECLARATION_ATTR)
    return declaration if isinstance(declaration, Declaration) else None
