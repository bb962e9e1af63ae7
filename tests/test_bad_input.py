"""Bad input never yields a 500: each gets its documented 4xx and changes nothing."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

ENVELOPE = {"error", "message", "request_id"}


@pytest.fixture
def api(alice_api):
    """alice's client, with three memories in place so updates and cursors have a target."""
    for n in range(3):
        response = alice_api.post("/v1/memories", {"content": f"memory {n}", "tags": ["kept"]})
        assert response.status_code == 201
    return alice_api


def everything(api):
    """All the tenant's memories as the API shows them (listing does not count as access)."""
    listed = api.get("/v1/memories", {"limit": 100}).json()["data"]
    assert api.get("/v1/stats").json()["total_memories"] == len(listed)
    return listed


@contextmanager
def nothing_changes(api):
    before = everything(api)
    yield
    assert everything(api) == before


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= ENVELOPE
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response["X-Request-Id"]
    if field is not None:
        assert field in body["fields"], body
    return body


def send(api, method, path, body):
    if method == "POST":
        return api.post(path, body)
    return api.patch(path, body)


WRITES = [("POST", "/v1/memories"), ("PATCH", "/v1/memories/1")]
WRITE_IDS = ["create", "update"]

# --- The body is not JSON, or not a JSON object ---------------------------------------------------

NOT_JSON = {
    "truncated": '{"content": ',
    "trailing comma": '{"content": "x",}',
    "single quotes": "{'content': 'x'}",
    "trailing garbage": '{"content": "x"} and more',
    "NaN": '{"content": "x", "importance": NaN}',
    "Infinity": '{"content": "x", "importance": Infinity}',
    "not utf-8": b'{"content": "\xff\xfe"}',
    "a 5000-digit number": '{"content": "x", "ttl_seconds": 1' + "0" * 5000 + "}",
    "a number only infinity holds": '{"content": "x", "metadata": {"n": 1e999}}',
    "a negative one": '{"content": "x", "importance": -1e999}',
}


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_body_that_is_not_json_is_invalid_json(api, method, path, body):
    with nothing_changes(api):
        assert_error(send(api, method, path, body), 400, "invalid_json")


NOT_AN_OBJECT = {"list": "[]", "list of objects": '[{"content": "x"}]', "string": '"x"'}
NOT_AN_OBJECT |= {"number": "3", "true": "true", "null": "null"}


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("body", NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
def test_json_that_is_not_an_object_is_a_validation_error(api, method, path, body):
    with nothing_changes(api):
        assert_error(send(api, method, path, body), 400, "validation_error")


def nested(depth, leaf="1"):
    return '{"a": ' * depth + leaf + "}" * depth


DEEP = {
    "arrays 5000 deep": "[" * 5000 + "]" * 5000,
    "objects 5000 deep": nested(5000),
    "metadata 900 deep": '{"content": "x", "metadata": ' + nested(900) + "}",
}


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("body", DEEP.values(), ids=DEEP.keys())
def test_deeply_nested_json_is_refused(api, method, path, body):
    with nothing_changes(api):
        response = send(api, method, path, body)
        assert response.status_code == 400, response.content
        assert response.json()["error"] in {"invalid_json", "validation_error"}
        assert set(response.json()) >= ENVELOPE


# --- Fields of the wrong type or out of range -----------------------------------------------------

BAD_FIELDS = [
    ("content", 123),
    ("content", None),
    ("content", True),
    ("content", ["x"]),
    ("content", {"text": "x"}),
    ("content", ""),
    ("content", "   "),
    ("content", "\n\t "),
    ("content", "x" * 100_001),
    ("content", "nul \x00 inside"),
    ("type", "nope"),
    ("type", "NOTE"),
    ("type", 1),
    ("type", None),
    ("memory_type", "nope"),
    ("tags", "x"),
    ("tags", {"x": 1}),
    ("tags", None),
    ("tags", [1]),
    ("tags", [None]),
    ("tags", [["x"]]),
    ("tags", [""]),
    ("tags", ["   "]),
    ("tags", ["x" * 65]),
    ("tags", [f"tag{n}" for n in range(51)]),
    ("metadata", []),
    ("metadata", "x"),
    ("metadata", 1),
    ("metadata", None),
    ("metadata", {"big": "x" * (64 * 1024)}),
    ("metadata", {"n": 2**63}),
    ("metadata", {"deep": [{"n": -(2**63)}]}),
    ("importance", "0.5"),
    ("importance", True),
    ("importance", None),
    ("importance", 2),
    ("importance", -0.1),
    ("importance", 10**400),
    ("workspace", "Bad Space"),
    ("workspace", "UPPER"),
    ("workspace", ""),
    ("workspace", "x" * 65),
    ("workspace", "a/b"),
    ("workspace", 5),
    ("tier", "forever"),
    ("tier", 1),
    ("ttl_seconds", "10"),
    ("ttl_seconds", 0),
    ("ttl_seconds", -1),
    ("ttl_seconds", 1.5),
    ("ttl_seconds", True),
    ("ttl_seconds", 10**12),
]


def field_id(value):
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize(
    "field, value", BAD_FIELDS, ids=[f"{f}={field_id(v)}" for f, v in BAD_FIELDS]
)
def test_a_bad_field_is_a_validation_error_naming_it(api, method, path, field, value):
    body = {"content": "valid content", field: value} if method == "POST" else {field: value}
    with nothing_changes(api):
        assert_error(send(api, method, path, body), 400, "validation_error", field=field)


def test_content_of_exactly_the_maximum_length_is_accepted(api):
    response = api.post("/v1/memories", {"content": "x" * 100_000})
    assert response.status_code == 201
    assert len(response.json()["content"]) == 100_000


def test_a_ttl_on_a_permanent_memory_is_refused(api):
    with nothing_changes(api):
        body = {"content": "x", "tier": "permanent", "ttl_seconds": 60}
        assert_error(api.post("/v1/memories", body), 400, "validation_error", "ttl_seconds")


def test_type_and_memory_type_that_disagree_are_refused(api):
    with nothing_changes(api):
        body = {"content": "x", "type": "note", "memory_type": "todo"}
        assert_error(api.post("/v1/memories", body), 400, "validation_error", "memory_type")


# --- Fields a client may not send ----------------------------------------------------------------

UNKNOWN_FIELDS = ["colour", "Content", "memory", "tenant", "tenant_id", "tag"]
READ_ONLY_FIELDS = {
    "id": 999,
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
    "version": 42,
    "access_count": 1000,
    "content_hash": "0" * 64,
    "expires_at": "2000-01-01T00:00:00Z",
    "last_accessed_at": "2000-01-01T00:00:00Z",
}


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("field", UNKNOWN_FIELDS)
def test_an_unknown_field_is_refused(api, method, path, field):
    with nothing_changes(api):
        body = {"content": "valid content", field: "x"}
        assert_error(send(api, method, path, body), 400, "validation_error", field=field)


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("field, value", READ_ONLY_FIELDS.items(), ids=READ_ONLY_FIELDS)
def test_a_read_only_field_is_refused_and_never_stored(api, method, path, field, value):
    with nothing_changes(api):
        body = {"content": "valid content", field: value}
        error = assert_error(send(api, method, path, body), 400, "validation_error", field)
        assert "read-only" in str(error["fields"][field])
    assert api.get("/v1/memories/999").status_code == 404


def test_an_empty_update_is_refused(api):
    with nothing_changes(api):
        assert_error(api.patch("/v1/memories/1", {}), 400, "validation_error")


def test_an_empty_body_is_refused(api):
    with nothing_changes(api):
        assert_error(api.post("/v1/memories", ""), 400, "validation_error", "content")
        assert_error(api.patch("/v1/memories/1", ""), 400, "validation_error")


# --- List query parameters ------------------------------------------------------------------------

BAD_QUERIES = [
    ({"limit": "-1"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "99999999999999999999999"}, "limit"),
    ({"limit": "abc"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"limit": "1e2"}, "limit"),
    ({"sort": "random"}, "sort"),
    ({"sort": "content"}, "sort"),
    ({"sort": "id"}, "sort"),
    ({"sort": "--created_at"}, "sort"),
    ({"sort": "created_at,importance"}, "sort"),
    ({"cursor": "garbage"}, "cursor"),
    ({"cursor": "x" * 600}, "cursor"),
    ({"colour": "red"}, "colour"),
    ({"page": "2"}, "page"),
    ({"offset": "10"}, "offset"),
    ({"tags": "kept"}, "tags"),
    ({"workspace": "Bad Space"}, "workspace"),
    ({"type": "nope"}, "type"),
    ({"tier": "forever"}, "tier"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_before": "2024-13-45"}, "created_before"),
    ({"tag": "x" * 65}, "tag"),
    ({"tag": [f"t{n}" for n in range(11)]}, "tag"),
]


@pytest.mark.parametrize(
    "params, field",
    BAD_QUERIES,
    ids=[f"{k}={field_id(v)}" for params, _ in BAD_QUERIES for k, v in params.items()],
)
def test_a_bad_list_query_is_a_validation_error_naming_the_parameter(api, params, field):
    with nothing_changes(api):
        assert_error(api.get("/v1/memories", params), 400, "validation_error", field=field)


def next_cursor(api, sort="-created_at"):
    cursor = api.get("/v1/memories", {"limit": 1, "sort": sort}).json()["next_cursor"]
    assert cursor
    return cursor


def flip(text, index):
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_a_cursor_works_only_with_the_sort_it_came_from(api):
    cursor = next_cursor(api, sort="-created_at")
    ok = api.get("/v1/memories", {"limit": 1, "sort": "-created_at", "cursor": cursor})
    assert ok.status_code == 200
    for sort in ("created_at", "-importance", "access_count"):
        response = api.get("/v1/memories", {"sort": sort, "cursor": cursor})
        assert_error(response, 400, "validation_error", field="cursor")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_tampered_cursor_is_refused(api, where):
    cursor = next_cursor(api)
    index = {"first": 0, "middle": len(cursor) // 2, "last": len(cursor) - 1}[where]
    with nothing_changes(api):
        response = api.get("/v1/memories", {"cursor": flip(cursor, index)})
        assert_error(response, 400, "validation_error", field="cursor")


def test_a_cursor_cut_short_is_refused(api):
    cursor = next_cursor(api)
    response = api.get("/v1/memories", {"cursor": cursor[: len(cursor) // 2]})
    assert_error(response, 400, "validation_error", field="cursor")


# --- Ids in the path ------------------------------------------------------------------------------

BAD_IDS = [
    "99999999999999999999999",
    "9223372036854775808",
    "999999999999999999",
    "0",
    "-1",
    "1.5",
    "1e3",
    "abc",
    "%20",
    "\u0663",
]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("memory_id", BAD_IDS)
def test_an_id_that_names_no_memory_is_404(api, method, memory_id):
    body = {"content": "changed"} if method == "PATCH" else None
    with nothing_changes(api):
        response = api.request(method, f"/v1/memories/{memory_id}", body)
        assert_error(response, 404, "not_found")


# --- Body size and media type ---------------------------------------------------------------------


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
def test_a_body_over_the_limit_is_413_before_it_is_parsed(api, settings, method, path):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    with nothing_changes(api):
        for body in ({"content": "x" * 2000}, "{" * 2000):
            assert_error(send(api, method, path, body), 413, "payload_too_large")


def test_a_body_at_the_limit_is_accepted(api, settings):
    settings.ENGRAM_MAX_BODY_BYTES = 1000
    body = '{"content": "' + "x" * (1000 - len('{"content": ""}')) + '"}'
    assert len(body.encode()) == 1000
    assert api.post("/v1/memories", body).status_code == 201


def test_the_default_limit_is_five_megabytes(api):
    with nothing_changes(api):
        response = api.post("/v1/memories", {"content": "x" * (5 * 1024 * 1024)})
        assert_error(response, 413, "payload_too_large")


def test_a_content_length_that_is_not_a_number_is_refused(api):
    with nothing_changes(api):
        response = api.post("/v1/memories", {"content": "x"}, CONTENT_LENGTH="lots")
        assert_error(response, 400, "validation_error")


MEDIA_TYPES = {
    "form": ("application/x-www-form-urlencoded", "content=hello"),
    "multipart": (
        "multipart/form-data; boundary=b",
        '--b\r\nContent-Disposition: form-data; name="content"\r\n\r\nhello\r\n--b--\r\n',
    ),
    "text": ("text/plain", "hello"),
    "xml": ("application/xml", "<memory><content>hello</content></memory>"),
}


@pytest.mark.parametrize("method, path", WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("media_type, body", MEDIA_TYPES.values(), ids=MEDIA_TYPES.keys())
def test_a_body_that_is_not_json_by_media_type_is_415(api, method, path, media_type, body):
    send_raw = getattr(api.client, method.lower())
    with nothing_changes(api):
        response = send_raw(path, body, content_type=media_type, headers=api.headers)
        assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", ["/v1/memories", "/v1/memories/1", "/v1/stats"])
def test_a_method_the_endpoint_does_not_have_gets_405(api, path):
    with nothing_changes(api):
        response = api.request("PUT", path, {"content": "x"})
        assert_error(response, 405, "method_not_allowed")
