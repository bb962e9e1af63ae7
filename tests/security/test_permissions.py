"""Every route declares who may call it, and each behaves as the one permission table says.

The role x endpoint matrix is generated: every workspace route (console pages and the
console's JSON API) and every /v1 route, for every role, expecting what `ROLE_SCOPES` grants.
"""

from __future__ import annotations

import pytest
from django.test import Client

from memories import services as memory_services
from memories.tenant_db import bind_tenant_database
from tenants import services
from tenants.models import Membership, Role, Tenant, User
from tenants.permissions import ROLE_SCOPES, Access, grants, role_allows
from tests.security.routes import Route, all_routes, routes_with
from tests.test_jwt import SigningKey, identity_provider  # noqa: F401 (a fixture)

HOW_TO_DECLARE = (
    "declare who may call it: decorate the view with @declare(Access.<WHO>[, Scope.<WHAT>]) "
    "from tenants.permissions (a workspace page: @workspace_view(Scope.<WHAT>) from "
    "tenants.console.access; a /v1 APIView: @declare(Access.API) plus required_scopes); "
    "a third-party app's routes: add its URL namespace to DECLARED_NAMESPACES"
)

WORKSPACE_ROUTES = routes_with(Access.WORKSPACE)
API_ROUTES = [route for route in routes_with(Access.API) if route.declaration.scopes]
ROLES = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]


def test_every_route_declares_who_may_call_it() -> None:
    missing = [
        f"{route} ({route.name}, view {route.view})"
        for route in all_routes()
        if route.declaration is None
    ]
    assert not missing, f"Routes without a permission declaration: {missing}; {HOW_TO_DECLARE}"


def test_workspace_routes_name_the_scope_they_need() -> None:
    unscoped = [
        str(route) for route in WORKSPACE_ROUTES if route.declaration.scope_for("GET") is None
    ]
    assert not unscoped, f"Workspace routes without a scope: {unscoped}"


def test_api_views_declare_a_scope_for_every_method_they_answer() -> None:
    from django.urls import resolve

    for route in routes_with(Access.API):
        view_class = getattr(resolve(route.url(memory_id=1, slug="x")).func, "view_class", None)
        if view_class is None:
            continue  # MCP: each tool's scope is in the tool table (tests/test_mcp_tools.py)
        answered = {
            method.upper()
            for method in view_class.http_method_names
            if hasattr(view_class, method) and method not in ("options", "head")
        }
        assert answered <= set(route.declaration.scopes), (route, answered)


def test_the_matrix_covers_console_and_api() -> None:
    names = {route.name for route in WORKSPACE_ROUTES + API_ROUTES}
    assert {"console:keys", "console:audit", "console_api:usage_daily", "memories"} <= names


# --- the matrix ----------------------------------------------------------------------------


def _member(tenant: Tenant, role: str) -> User:
    user = User.objects.create_user(f"{role}-{tenant.slug}@example.com", password=None)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def _values(tenant: Tenant, owner: User, route: Route) -> dict[str, object]:
    """A fresh object of the tenant for each id the route takes, so an allowed action has one."""
    values: dict[str, object] = {"slug": tenant.slug}
    if "membership_id" in route.params:
        number = Membership.objects.count()
        target = User.objects.create_user(f"target{number}@example.com", password=None)
        values["membership_id"] = Membership.objects.create(
            user=target, tenant=tenant, role=Role.VIEWER
        ).pk
    if "key_id" in route.params:
        key, _ = services.create_api_key(tenant=tenant, name="target", created_by=owner)
        values["key_id"] = key.pk
    if "invite_id" in route.params:
        invite, _ = services.invite_member(
            tenant, email="invitee@example.com", role=Role.MEMBER, invited_by=owner
        )
        values["invite_id"] = invite.pk
    if "memory_id" in route.params:
        with bind_tenant_database(tenant.id):
            values["memory_id"] = memory_services.create_memory(content="the matrix target").pk
    return values


def _call(client: Client, route: Route, values: dict[str, object], **headers: str) -> int:
    """GET the route; a route that takes POST only is POSTed (an empty form)."""
    url = route.url(**values)
    status = client.get(url, headers=headers).status_code
    if status == 405:
        status = client.post(url, headers=headers).status_code
    return status


@pytest.fixture
def workspace(db: None) -> tuple[Tenant, User]:
    owner = User.objects.create_user("owner@example.com", password=None)
    tenant = services.provision_tenant(slug="matrix", name="Matrix", owner=owner, plan="team")
    return tenant, owner


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", WORKSPACE_ROUTES, ids=str)
def test_console_role_matrix(workspace: tuple[Tenant, User], route: Route, role: str) -> None:
    tenant, owner = workspace
    user = owner if role == Role.OWNER else _member(tenant, role)
    client = Client()
    client.force_login(user)
    status = _call(client, route, _values(tenant, owner, route))
    scope = route.declaration.scope_for("GET")
    if role_allows(role, scope):
        assert status not in (401, 403, 404) and status < 500, (route, role, status)
    else:
        assert status == 403, (route, role, status)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", API_ROUTES, ids=str)
def test_api_role_matrix(
    workspace: tuple[Tenant, User],
    identity_provider: dict[str, SigningKey],  # noqa: F811
    route: Route,
    role: str,
) -> None:
    """A member's JWT carries their role's scopes; each method of each /v1 route agrees."""
    tenant, owner = workspace
    user = owner if role == Role.OWNER else _member(tenant, role)
    token = identity_provider["rsa"].sign(email=user.email)
    client = Client()
    headers = {"Authorization": f"Bearer {token}", "X-Engram-Tenant": tenant.slug}
    for method, scope in route.declaration.scopes.items():
        send = getattr(client, method.lower())
        status = send(route.url(**_values(tenant, owner, route)), headers=headers).status_code
        if grants(ROLE_SCOPES[role], scope):
            assert status not in (401, 403, 404) and status < 500, (route, method, role, status)
        else:
            assert status == 403, (route, method, role, status)


@pytest.mark.parametrize("route", API_ROUTES, ids=str)
def test_api_key_scope_matrix(workspace: tuple[Tenant, User], route: Route) -> None:
    """A key holding one scope reaches exactly the methods that scope (or `admin`) grants."""
    from tenants.permissions import ALL_SCOPES

    tenant, owner = workspace
    client = Client()
    for held in sorted(ALL_SCOPES):
        _, secret = services.create_api_key(tenant=tenant, name=held, scopes=[held])
        for method, scope in route.declaration.scopes.items():
            send = getattr(client, method.lower())
            url = route.url(**_values(tenant, owner, route))
            status = send(url, headers={"Authorization": f"Bearer {secret}"})
            status = status.status_code
            if grants(frozenset({held}), scope):
                assert status not in (401, 403, 404) and status < 500, (route, method, held, status)
            else:
                assert status == 403, (route, method, held, status)
