"""Fuzzing /v1 with schemathesis, from the OpenAPI document the API serves.

Every operation gets generated requests, valid and invalid, sent with one of two tenants' keys;
every answer must pass all of schemathesis's checks (no 5xx, status, content type, headers and
body as the document says, invalid input refused, auth enforced), and neither tenant may ever
see the other's data. The normal suite runs a small sample; `make test-slow` runs thousands.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from memories import services as memory_services
from memories.tenant_db import bind_tenant_database
from tests.conftest import TenantFixture, make_tenant

schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())
# The tests send a real key (Authorization); generated credential headers would only collide.
schema.config.generation.update(with_security_parameters=False)
load_all_checks()
ALL_CHECKS = CHECKS.get_all()

# Examples per operation (10 operations): ~100 cases in the sample, ~3,000 in the slow run,
# which must send at least SLOW_MINIMUM_CASES (hypothesis may stop an operation early when it
# has tried everything its inputs allow).
SAMPLE_EXAMPLES = 10
SLOW_EXAMPLES = 400
SLOW_MINIMUM_CASES = 2_000
sent: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def keep_the_tests_connection() -> Iterator[None]:
    """The cases go through Django's WSGI handler, whose request signals run
    close_old_connections: that closes a connection in the test's transaction (on PostgreSQL;
    SQLite's in-memory test database ignores it). Django's test client unhooks it likewise."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def enough_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the last operation of the slow run: at least SLOW_MINIMUM_CASES were sent in all.

    Checked after each test, not at module teardown: pytest-xdist may tear a module's fixtures
    down and set them up again between tests of the same file."""
    yield
    if request.node.originalname != "test_api_fuzz":
        return
    operations_done[request.node.nodeid] = True
    operations = [i for i in request.session.items if i.originalname == "test_api_fuzz"]
    if len(operations_done) == len(operations):
        assert sent["test_api_fuzz"] >= SLOW_MINIMUM_CASES, sent


operations_done: dict[str, bool] = {}


@dataclass
class Tenant:
    fixture: TenantFixture
    secret: str  # a memory only this tenant wrote: the other must never see it

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.fixture.key}"}


def _tenant(slug: str, email: str) -> Tenant:
    fixture = make_tenant(slug, email, plan="team")
    secret = f"only {slug} may read this: {fixture.api_key.pk}-{slug}-canary"
    with bind_tenant_database(fixture.tenant.id):
        memory_services.create_memory(content=secret, tags=[f"{slug}-tag"])
    return Tenant(fixture, secret)


@pytest.fixture
def tenants(db: None) -> list[Tenant]:
    return [_tenant("acme", "alice@example.com"), _tenant("globex", "bob@example.com")]


# Rules between fields, or about opaque values, that OpenAPI 3.0 cannot state: a request the
# document allows may still break one, and is refused with 400 validation_error naming it.
RULES_THE_SCHEMA_CANNOT_STATE = {
    "memory_type",  # Engram's alias of `type`: both may be sent only with the same value
    "ttl_seconds",  # only a daily memory takes a TTL
    "metadata",  # at most 32 levels, 64 KB of JSON, and integers of 64 bits (Engram's)
    "cursor",  # opaque: only a cursor the API issued is valid
    "file",  # an upload must hold an Engram export file
    "version",  # ... of a version this service reads
}


def _broke_an_unstated_rule(response: Any) -> bool:
    if response.status_code not in (400, 422):
        return False
    body = response.json()
    if body["error"] == "idempotency_mismatch":
        return True  # a key generated again for another request: keys are one per write
    fields = set(body.get("fields", {"file": None}))
    if body["error"] == "invalid_json":
        fields = {"file"}  # an uploaded file that is not JSON
    return body["error"] in ("validation_error", "invalid_json") and fields <= (
        RULES_THE_SCHEMA_CANNOT_STATE
    )


def exercise(case: schemathesis.Case, tenants: list[Tenant], who: int, run: str) -> None:
    sent[run] += 1
    caller, other = tenants[who], tenants[1 - who]
    response = case.call(headers=caller.headers)
    excluded = [positive_data_acceptance] if _broke_an_unstated_rule(response) else []
    case.validate_response(
        response, checks=ALL_CHECKS, excluded_checks=excluded, headers=caller.headers
    )
    body = response.content.decode("utf-8", "replace")
    assert other.secret not in body and json.dumps(other.secret)[1:-1] not in body, (
        f"{case.operation.label} with {caller.fixture.tenant.slug}'s key showed the other "
        "tenant's memory"
    )


fuzz_settings = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "phases": [Phase.explicit, Phase.generate],
    "derandomize": True,
    "database": None,
}


@schema.parametrize()
@schema.given(who=st.sampled_from([0, 1]))
@settings(max_examples=SAMPLE_EXAMPLES, **fuzz_settings)
def test_api_sample(case: schemathesis.Case, who: int, tenants: list[Tenant]) -> None:
    exercise(case, tenants, who, "test_api_sample")


@pytest.mark.slow
@schema.parametrize()
@schema.given(who=st.sampled_from([0, 1]))
@settings(max_examples=SLOW_EXAMPLES, **fuzz_settings)
def test_api_fuzz(case: schemathesis.Case, who: int, tenants: list[Tenant]) -> None:
    exercise(case, tenants, who, "test_api_fuzz")
