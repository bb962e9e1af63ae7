"""The outsider sees nothing: every route that takes a tenant or an id, called with another
tenant's credentials, is refused and gives nothing of that tenant away.

acme (A) holds memories (with a link and a previous version), two API keys, a second member,
an invite and a backup; its name, one key's name, its people and its memories carry a canary
word. The outsider holds only globex's (B's) credentials:
  - B's API key holding every scope: aimed at A's ids, and naming A by the X-Engram-Tenant
    header and by A's host `acme.<ENGRAM_BASE_DOMAIN>`;
  - a JWT of B's owner, who is a member of B only, naming A the same two ways;
  - B's owner's console session: on A's workspace pages, and on B's own pages with A's ids.
Each answer must be the contract's refusal (ARCHITECTURE.md §3-4; another workspace's console
pages answer 404, tenants/console/access.py), show nothing of A in its body, headers or
cookies, and A must be unchanged afterwards: its data, keys, members, invites, backups, audit
log and metered usage.

The matrix is generated: REST and console routes from the route table
(tests/security/routes.py), MCP tools and resources from the server's own `tools/list`,
`resources/list` and `resources/templates/list`. A route, tool or resource the matrix cannot
aim at A fails the coverage tests, naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client

from backups.models import BackupRecord
from backups.services import back_up_tenant
from billing import usage
from mcp.views import mcp_endpoint
from tenants import services
from tenants.models import ApiKey, AuditEvent, Invite, Membership, Role, Tenant, User
from tenants.permissions import ALL_SCOPES, Access
from tests.conftest import ApiClient, TenantFixture, make_tenant
from tests.security.routes import Route, all_routes
from tests.test_jwt import SigningKey, identity_provider  # noqa: F401 (a fixture)
from tests.test_mcp_isolation import (  # noqa: F401 (acme_memories: a fixture)
    ACME_WORDS,
    AIMED_AT_ACME,
    acme_memories,
    snapshot,
)
from tests.test_mcp_protocol import HANDSHAKE, MODERN, Mcp

CANARY = ACME_WORDS.split()[0]  # in all of A's memories, and put in its name, keys and people

# The route parameters that name a tenant or one of its objects: the matrix fills each with A's.
ID_PARAMETERS = frozenset({"memory_id", "key_id", "membership_id", "invite_id"})
A_PARAMETERS = ID_PARAMETERS | {"slug"}

# Routes that take parameters naming no tenant's object, and why the matrix leaves them out.
NOT_TENANT_ROUTES = {
    Access.TOKEN_LINK: "the URL's single-use token is the credential (invites, password resets)",
    Access.STAFF: "Django admin: staff see every tenant by design",
    Access.WEBHOOK: "Stripe's signed webhook carries no tenant credential",
}

MCP_VIEW = f"{mcp_endpoint.__module__}.{mcp_endpoint.__qualname__}"
ROUTES = all_routes()


def _access(route: Route) -> Access | None:
    return route.declaration.access if route.declaration is not None else None


REST_ROUTES = [r for r in ROUTES if _access(r) is Access.API and r.view != MCP_VIEW]
MCP_ROUTES = [r for r in ROUTES if _access(r) is Access.API and r.view == MCP_VIEW]
CONSOLE_ROUTES = [r for r in ROUTES if _access(r) is Access.WORKSPACE]
SIGNED_IN_ROUTES = [r for r in ROUTES if _access(r) is Access.SIGNED_IN]

# What each REST call sends beyond A's ids in its URL: A's words, ids and filters.
REST_QUERIES = {("memories", "GET"): {"limit": 100, "tag": "acme", "workspace": "acme-only"}}
REST_BODIES = {
    ("memories", "POST"): {"content": "globex was here"},
    ("memory-detail", "PATCH"): {"content": "overwritten by globex", "importance": 0.1},
    ("search", "POST"): {"query": ACME_WORDS, "min_score": 0, "limit": 100},
    ("import", "POST"): {"version": "1.0", "memories": [{"id": 3, "content": "globex's 3"}]},
}


@dataclass
class World:
    a: TenantFixture
    b: TenantFixture
    a_keys: tuple[str, ...]
    outsider_key: str  # B's key with every scope
    outsider_jwt: str  # B's owner, a member of B only
    outsider_user: User
    ids: dict[str, int]  # A's object for each of ID_PARAMETERS
    backup: BackupRecord
    secrets: tuple[str, ...]  # none may reach the outsider

    def url(self, route: Route, slug: str) -> str:
        return route.url(slug=slug, **self.ids)

    def leaks(self, response: Any) -> list[str]:
        text = exposed(response)
        return [secret for secret in self.secrets if secret in text]


def exposed(response: Any) -> str:
    """All the outsider receives: headers, cookies and body."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    headers = "".join(f"{name}: {value}\n" for name, value in response.items())
    cookies = "".join(f"{morsel.key}={morsel.value}\n" for morsel in response.cookies.values())
    return headers + cookies + body.decode("utf-8", "replace")


@pytest.fixture
def acme(db: None) -> TenantFixture:
    """A, on the Team plan so that it has room for a second member and an invite."""
    return make_tenant("acme", "alice@example.com", plan="team")


@pytest.fixture
def globex(db: None) -> TenantFixture:
    """B, on the Team plan so that the outsider's few hundred calls stay under its rate limit."""
    return make_tenant("globex", "bob@example.com", plan="team")


@pytest.fixture
def world(
    acme: TenantFixture,
    globex: TenantFixture,
    acme_memories: Any,  # noqa: F811 (memories 1-3, a link 2 -> 3, a second version of 2)
    identity_provider: dict[str, SigningKey],  # noqa: F811
) -> World:
    alice = User.objects.get(email=acme.owner_email)
    services.rename_workspace(acme.tenant, f"Acme {CANARY}", actor=alice)
    agent, agent_secret = services.create_api_key(
        tenant=acme.tenant, name=f"{CANARY} agent", created_by=alice
    )
    carol = User.objects.create_user(f"carol-{CANARY}@example.com", password=None)
    membership = Membership.objects.create(user=carol, tenant=acme.tenant, role=Role.ADMIN)
    invite, _ = services.invite_member(
        acme.tenant, email=f"{CANARY}-invitee@example.com", role=Role.MEMBER, invited_by=alice
    )
    backup = back_up_tenant(acme.tenant)
    # B has had memories 1-3 and keeps 1. A new memory never reuses an id, so A's memory 2
    # stays missing in B while the matrix creates memories there (an import keeps a file's
    # free ids: the REST import below names 3).
    bob = globex.client()
    for content in ("globex note", "globex draft", "globex draft"):
        bob.post("/v1/memories", {"content": content})
    for memory_id in (2, 3):
        assert bob.delete(f"/v1/memories/{memory_id}").status_code == 204
    ids = {
        "memory_id": 2,
        "key_id": agent.pk,
        "membership_id": membership.pk,
        "invite_id": invite.pk,
    }
    assert set(ids) == ID_PARAMETERS
    return World(
        a=acme,
        b=globex,
        a_keys=(acme.key, agent_secret),
        outsider_key=globex.issue_key(scopes=ALL_SCOPES),
        outsider_jwt=identity_provider["rsa"].sign(email=globex.owner_email),
        outsider_user=User.objects.get(email=globex.owner_email),
        ids=ids,
        backup=backup,
        secrets=(
            CANARY,
            "acme-only",  # the memory workspace of A's memories
            acme.key,
            agent_secret,
            acme.api_key.prefix,
            agent.prefix,
            str(acme.tenant.id),
            acme.owner_email,
            backup.storage_key,
        ),
    )


def a_state(world: World) -> dict[str, Any]:
    tenant = world.a.tenant
    return {
        "data": snapshot(world.a),
        "tenant": list(Tenant.objects.filter(pk=tenant.pk).values()),
        "keys": list(ApiKey.objects.filter(tenant=tenant).order_by("pk").values()),
        "members": list(Membership.objects.filter(tenant=tenant).order_by("pk").values()),
        "invites": list(Invite.objects.filter(tenant=tenant).order_by("pk").values()),
        "backups": list(BackupRecord.objects.filter(tenant=tenant).order_by("pk").values()),
        "audit": list(AuditEvent.objects.filter(tenant=tenant).values_list("pk", flat=True)),
        "usage": {metric: usage.month_usage(str(tenant.id), metric) for metric in usage.METRICS},
    }


def assert_a_untouched(world: World, before: dict[str, Any]) -> None:
    assert a_state(world) == before
    for key in world.a_keys:  # still active, and A itself does see what the outsider must not
        response = ApiClient(key).get(f"/v1/memories/{world.ids['memory_id']}")
        assert response.status_code == 200
        assert CANARY in response.json()["content"]


def error_code(response: Any) -> object:
    """The contract's error code: REST's `error`, JSON-RPC's `error.code`."""
    if response.streaming or "json" not in response.get("Content-Type", ""):
        return None
    error = response.json().get("error")
    return error.get("code") if isinstance(error, dict) else error


# --- the coverage of the matrix -------------------------------------------------------------


def test_every_route_with_a_tenant_or_an_id_is_in_the_matrix() -> None:
    uncovered = []
    for route in ROUTES:
        access = _access(route)
        if access is Access.SIGNED_IN and route.params:
            uncovered.append(f"{route} ({route.name}): a signed-in page naming {route.params}")
        elif access in (Access.API, Access.WORKSPACE):
            unknown = sorted(set(route.params) - A_PARAMETERS)
            if unknown:
                uncovered.append(f"{route} ({route.name}): no object of A for {unknown}")
            if route in REST_ROUTES and not route.declaration.scopes:
                uncovered.append(f"{route} ({route.name}): declares no method to call")
        elif route.params and access not in NOT_TENANT_ROUTES:
            uncovered.append(f"{route} ({route.name}, {access}): takes {list(route.params)}")
    assert not uncovered, (
        "Routes the cross-tenant matrix cannot aim at tenant A; give A an object for the "
        f"parameter (ID_PARAMETERS and World.ids) or say why it names no tenant: {uncovered}"
    )
    assert {"memory-detail", "search", "export", "usage"} <= {r.name for r in REST_ROUTES}
    assert {"console:key_revoke", "console_api:usage_daily"} <= {r.name for r in CONSOLE_ROUTES}
    assert {route.pattern for route in MCP_ROUTES} == {"v1/mcp", "mcp"}


TEMPLATE_VARIABLE = re.compile(r"\{([^}]+)\}")


def mcp_calls(key: str, memory_id: int) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """A `tools/call` for every tool the server lists and a `resources/read` for every resource
    and template, aimed at A; and what the matrix has no aim for."""
    mcp = Mcp(key)
    calls: list[tuple[str, dict[str, Any]]] = []
    uncovered = []
    for tool in mcp.result("tools/list")["tools"]:
        if tool["name"] in AIMED_AT_ACME:
            arguments = AIMED_AT_ACME[tool["name"]]
            calls.append(("tools/call", {"name": tool["name"], "arguments": arguments}))
        else:
            uncovered.append(f"tool {tool['name']} (add it to AIMED_AT_ACME)")
    uris = [resource["uri"] for resource in mcp.result("resources/list")["resources"]]
    for template in mcp.result("resources/templates/list")["resourceTemplates"]:
        unknown = set(TEMPLATE_VARIABLE.findall(template["uriTemplate"])) - {"id"}
        if unknown:
            uncovered.append(f"resource template {template['uriTemplate']}: {sorted(unknown)}")
        else:
            uris.append(template["uriTemplate"].replace("{id}", str(memory_id)))
    calls += [("resources/read", {"uri": uri}) for uri in uris]
    return calls, uncovered


def test_every_mcp_tool_and_resource_is_in_the_matrix(globex: TenantFixture) -> None:
    calls, uncovered = mcp_calls(globex.issue_key(scopes=ALL_SCOPES), memory_id=2)
    assert not uncovered, f"MCP tools and resources the matrix cannot aim at A: {uncovered}"
    assert {params["name"] for method, params in calls if method == "tools/call"} == set(
        AIMED_AT_ACME
    )
    assert "engram://memory/2" in {params.get("uri") for _, params in calls}


# --- the matrix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outsider:
    credential: str  # "key" (B's API key) or "jwt" (B's owner)
    names_a_by: str | None  # "header", "host", or None: B's own tenant, aimed at A's ids

    def __str__(self) -> str:
        aim = f"naming A by {self.names_a_by}" if self.names_a_by else "with A's ids"
        return f"B's {self.credential} {aim}"

    def headers(self, world: World) -> dict[str, str]:
        token = world.outsider_key if self.credential == "key" else world.outsider_jwt
        headers = {"Authorization": f"Bearer {token}"}
        if self.names_a_by == "header":
            headers["X-Engram-Tenant"] = world.a.tenant.slug
        elif self.names_a_by == "host":
            headers["Host"] = f"{world.a.tenant.slug}.{settings.ENGRAM_BASE_DOMAIN}"
        return headers

    @property
    def refusal(self) -> tuple[int, str] | None:
        """A key is bound to its tenant; a person must be a member of the tenant named."""
        if self.names_a_by is None:
            return None
        return (403, "tenant_mismatch") if self.credential == "key" else (403, "forbidden")


OUTSIDERS = [
    Outsider("key", "header"),
    Outsider("key", "host"),
    Outsider("jwt", "header"),
    Outsider("jwt", "host"),
    Outsider("key", None),
]


def rest_call(world: World, route: Route, method: str) -> tuple[str, Any]:
    """The URL (with A's ids, and A's filters for a list) and the body of one REST call."""
    url = world.url(route, world.a.tenant.slug)
    query = REST_QUERIES.get((route.name, method))
    if query:
        url += f"?{urlencode(query, doseq=True)}"
    default = {} if method in ("POST", "PATCH") else None
    return url, REST_BODIES.get((route.name, method), default)


def test_the_api_refuses_the_outsider_on_every_route(world: World) -> None:
    before = a_state(world)
    problems = []
    for outsider in OUTSIDERS:
        client = ApiClient(**outsider.headers(world))
        for route in REST_ROUTES:
            expected = outsider.refusal
            if expected is None and ID_PARAMETERS & set(route.params):
                expected = (404, "not_found")
            for method in route.declaration.scopes:
                url, body = rest_call(world, route, method)
                response = client.request(method, url, body)
                leaked = world.leaks(response)
                got = (response.status_code, error_code(response))
                if expected is None and response.status_code >= 300:
                    problems.append(f"{outsider}: {method} {url}: {got}, expected B's own answer")
                elif expected is not None and got != expected:
                    problems.append(f"{outsider}: {method} {url}: {got}, expected {expected}")
                if leaked:
                    problems.append(f"{outsider}: {method} {url} shows {leaked}")
    assert not problems, "\n".join(problems)
    assert_a_untouched(world, before)


@pytest.mark.parametrize("version", [HANDSHAKE, MODERN])
def test_mcp_refuses_the_outsider_on_every_tool_and_resource(world: World, version: str) -> None:
    before = a_state(world)
    calls, uncovered = mcp_calls(world.outsider_key, world.ids["memory_id"])
    assert not uncovered
    problems = []
    for route in MCP_ROUTES:
        for outsider in OUTSIDERS:
            headers = outsider.headers(world)
            token = headers.pop("Authorization").removeprefix("Bearer ")
            mcp = Mcp(token, version, world.url(route, world.a.tenant.slug))
            for method, params in calls:
                what = f"{outsider}: {route} {method} {params.get('name') or params['uri']}"
                response = mcp.send(method, params, **headers)
                leaked = world.leaks(response)
                if leaked:
                    problems.append(f"{what} shows {leaked}")
                got = (response.status_code, error_code(response))
                if outsider.refusal is not None:
                    if got != (403, -32001):  # Engram's code for every refused credential
                        problems.append(f"{what}: {got}, expected (403, -32001)")
                # B's own answer: a result (a tool's isError included) or "not found" (-32602).
                # That an id of A is missing in B: tests/test_mcp_isolation.py.
                elif got[0] != 200 or ("result" not in response.json() and got[1] != -32602):
                    problems.append(f"{what}: {response.content!r}, expected B's own answer")
    assert not problems, "\n".join(problems)
    assert_a_untouched(world, before)


# What a console form posts: what would change A if a page let the outsider through.
def console_form(route: Route, world: World) -> dict[str, Any]:
    return {
        "console:workspace_rename": {"name": "globex was here"},
        "console:workspace_delete": {"confirm_slug": world.a.tenant.slug},
        "console:member_invite": {"email": "mallory@example.com", "role": Role.ADMIN},
        "console:member_role": {"role": Role.VIEWER},
        "console:key_create": {"name": "globex's", "scopes": ["admin"]},
        "console:backup_restore": {"backup": world.backup.pk},
        "console:billing_checkout": {"plan": "pro"},
    }.get(route.name, {})


@pytest.mark.usefixtures("tasks_inline")  # a restore let through would replace data at once
def test_the_console_refuses_the_outsider_on_every_workspace_page(world: World) -> None:
    before = a_state(world)
    client = Client()
    client.force_login(world.outsider_user)
    problems = []

    def visit(method: str, url: str, data: dict[str, Any] | None = None) -> int:
        response = getattr(client, method)(url, data or {})
        leaked = world.leaks(response)
        if leaked:
            problems.append(f"{method.upper()} {url} shows {leaked}")
        if response.status_code in (301, 302, 303):  # the page a redirect leads to
            visit("get", response["Location"])
        if response.status_code >= 500:
            problems.append(f"{method.upper()} {url}: {response.status_code}")
        return response.status_code

    def refused(route: Route, slug: str) -> None:
        """Another workspace's page, or B's own with A's object: 404 (405: wrong method)."""
        url = world.url(route, slug)
        statuses = {visit("get", url), visit("post", url, console_form(route, world))}
        if not statuses <= {404, 405} or 404 not in statuses:
            problems.append(f"{url}: {sorted(statuses)}, expected 404")

    for route in CONSOLE_ROUTES:
        refused(route, "acme")
    for route in CONSOLE_ROUTES:
        if ID_PARAMETERS & set(route.params):
            refused(route, "globex")
    # B's own pages: none shows A's data. A form naming A's objects (a backup) finds nothing.
    restore = next(route for route in CONSOLE_ROUTES if route.name == "console:backup_restore")
    visit("post", world.url(restore, "globex"), console_form(restore, world))
    for route in CONSOLE_ROUTES + SIGNED_IN_ROUTES:
        if not ID_PARAMETERS & set(route.params):
            visit("get", world.url(route, "globex"))
    assert not problems, "\n".join(problems)
    assert_a_untouched(world, before)
