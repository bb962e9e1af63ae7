"""Bookkeeping writes wait until the response has been sent (engram_cloud.after_response).

Driven through the WSGI application as a server drives it: the body is read first, the
response closed after; what a request deferred must not have run before the close.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from engram_cloud import after_response
from engram_cloud.wsgi import application
from memories.models import Memory
from memories.tenant_db import bind_tenant_database
from tenants.models import ApiKey


def wsgi_request(method: str, path: str, key: str, body: bytes = b"") -> tuple[str, Any]:
    """Send a request to the WSGI app; (status, the response iterable, not yet closed)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    status: list[str] = []
    iterable = application(environ, lambda s, headers, exc_info=None: status.append(s))
    return status[0], iterable


def last_used_at(fixture: Any) -> Any:
    return ApiKey.objects.get(pk=fixture.api_key.pk).last_used_at


@pytest.mark.django_db(transaction=True)
def test_a_keys_last_use_is_written_after_the_response_is_sent(acme):
    status, iterable = wsgi_request("GET", "/v1/memories", acme.key)
    body = b"".join(iterable)
    assert status.startswith("200") and b'"data"' in body
    assert last_used_at(acme) is None  # the client has its answer; the write has not run yet
    iterable.close()
    assert last_used_at(acme) is not None


@pytest.mark.django_db(transaction=True)
def test_access_counts_due_are_written_after_the_read_is_answered(acme, alice_api, monkeypatch):
    from memories import access

    created = alice_api.post("/v1/memories", {"content": "read me"}).json()
    alice_api.get(f"/v1/memories/{created['id']}")  # counted, not yet due
    monkeypatch.setattr(access, "FLUSH_SECONDS", 0.0)
    status, iterable = wsgi_request("GET", f"/v1/memories/{created['id']}", acme.key)
    b"".join(iterable)
    assert status.startswith("200")
    with bind_tenant_database(acme.tenant.id):
        assert Memory.objects.get(pk=created["id"]).access_count == 0
    iterable.close()
    with bind_tenant_database(acme.tenant.id):
        assert Memory.objects.get(pk=created["id"]).access_count == 2


@pytest.mark.django_db(transaction=True)
def test_work_left_by_a_response_never_closed_runs_when_the_next_request_starts(acme):
    _, iterable = wsgi_request("GET", "/v1/memories", acme.key)
    b"".join(iterable)  # and never closed
    assert last_used_at(acme) is None
    _, following = wsgi_request("GET", "/health", acme.key)
    following.close()
    assert last_used_at(acme) is not None


def test_outside_a_request_deferred_work_runs_at_once():
    ran: list[str] = []
    after_response.defer(lambda: ran.append("now"))
    assert ran == ["now"]


def test_a_failing_task_is_logged_and_the_others_still_run(caplog):
    ran: list[str] = []

    def fails() -> None:
        raise RuntimeError("boom")

    after_response._request_started()
    after_response.defer(fails)
    after_response.defer(lambda: ran.append("second"))
    with caplog.at_level(logging.ERROR, logger="engram_cloud.after_response"):
        after_response._request_finished()
    assert ran == ["second"]
    assert "deferred until after a response failed" in caplog.text
