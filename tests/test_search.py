"""POST /v1/search: strategies, filters, explain, and what never appears."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.utils import timezone

from memories import search as search_engine
from memories import services
from memories.api.serializers import memory_representation
from memories.models import Memory
from memories.tenant_db import DATA_PLANE_ALIAS, bind_tenant_database

MEMORIES = [
    {"content": "Kubernetes deployment uses the blue-green script", "tags": ["ops"]},
    {"content": "Release process: deploy with the blue-green script", "tags": ["release"]},
    {"content": "Alice prefers dark roast coffee in the morning", "tags": ["personal"]},
    {"content": "Postgres migrations must be backwards compatible", "tags": ["db"]},
    {"content": "Rotate the API signing keys every ninety days", "tags": ["security"]},
]


def seed(api, memories=MEMORIES, **extra):
    ids = []
    for fields in memories:
        response = api.post("/v1/memories", {**fields, **extra})
        assert response.status_code == 201, response.json()
        ids.append(response.json()["id"])
    return ids


def search(api, query, **params):
    response = api.post("/v1/search", {"query": query, **params})
    assert response.status_code == 200, response.json()
    return response.json()


def ids_of(body):
    return [result["memory"]["id"] for result in body["results"]]


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_every_strategy_finds_a_memory_by_its_words(alice_api, strategy):
    ids = seed(alice_api)
    body = search(alice_api, "coffee roast", strategy=strategy)
    assert body["strategy"] == strategy
    assert ids_of(body)[0] == ids[2]


def test_fuzzy_search_tolerates_typos(alice_api):
    ids = seed(alice_api)
    assert ids_of(search(alice_api, "kuberntes deploymnet", strategy="keyword")) == []
    body = search(alice_api, "kuberntes deploymnet", strategy="fuzzy", explain=True)
    assert ids_of(body)[0] == ids[0]
    assert "kubernetes" in body["corrections"]["kuberntes"]


def test_another_form_of_a_known_word_is_found_not_corrected(alice_api):
    ids = seed(alice_api)
    body = search(alice_api, "rotating migration", strategy="fuzzy", explain=True)
    assert body["corrections"] == {}
    assert set(ids_of(body)) == {ids[3], ids[4]}


def test_auto_picks_keyword_for_short_queries_semantic_for_long_and_hybrid_between(alice_api):
    seed(alice_api)
    assert search(alice_api, "coffee")["strategy"] == "keyword"
    assert search(alice_api, '"blue-green" script')["strategy"] == "keyword"
    assert search(alice_api, "which script do we use to deploy")["strategy"] == "hybrid"
    long_query = "what does alice like to drink early in the morning before work starts"
    assert search(alice_api, long_query)["strategy"] == "semantic"


def test_results_are_truncated_to_the_limit_and_sorted_by_score(alice_api):
    seed(alice_api)
    body = search(alice_api, "blue green script deploy", strategy="hybrid", limit=1)
    assert len(body["results"]) == 1
    body = search(alice_api, "blue green script deploy", strategy="hybrid", limit=5)
    scores = [result["score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < score <= 1 for score in scores)


def test_min_score_drops_weak_results(alice_api):
    seed(alice_api)
    everything = search(alice_api, "script", strategy="semantic")["results"]
    assert len(everything) >= 2
    cut = everything[0]["score"] - 1e-9
    kept = search(alice_api, "script", strategy="semantic", min_score=cut)["results"]
    assert [r["memory"]["id"] for r in kept] == [everything[0]["memory"]["id"]]


def test_explain_says_why_each_result_matched(alice_api):
    seed(alice_api)
    body = search(alice_api, "blue green deploy", strategy="hybrid", explain=True)
    match = body["results"][0]["match"]
    assert match["strategy"] == "hybrid"
    assert match["keyword_score"] is not None
    assert match["semantic_score"] is not None
    assert "blue" in match["matched_terms"]
    assert any("**" in snippet for snippet in match["highlights"])


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_a_result_shows_the_memory_as_stored_with_every_field(alice_api, acme, strategy):
    response = alice_api.post(
        "/v1/memories",
        {
            "content": "Rotate the vault token before the release",
            "type": "decision",
            "tags": ["security", "release"],
            "metadata": {"ticket": "SEC-7", "weight": 2.5, "nested": {"ok": True}},
            "importance": 0.9,
            "workspace": "ops",
            "tier": "daily",
            "ttl_seconds": 3600,
        },
    )
    memory_id = response.json()["id"]
    assert alice_api.patch(f"/v1/memories/{memory_id}", {"importance": 0.8}).status_code == 200
    accessed = timezone.now().replace(microsecond=123456)
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.filter(pk=memory_id).update(access_count=3, last_accessed_at=accessed)
        stored = Memory.objects.get(pk=memory_id)
    body = search(alice_api, "rotate vault token release", strategy=strategy)
    assert body["results"][0]["memory"] == memory_representation(stored)
    shown = body["results"][0]["memory"]
    assert (shown["version"], shown["access_count"], shown["tier"]) == (2, 3, "daily")
    assert shown["expires_at"].endswith("Z") and shown["last_accessed_at"].endswith(".123456Z")


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_filters_are_exact_in_every_strategy(alice_api, strategy):
    seed(alice_api, workspace="alpha", type="note")
    seed(alice_api, workspace="beta", type="decision", tier="daily")
    query = "blue green script deploy"
    for params, check in [
        ({"workspace": "alpha"}, lambda m: m["workspace"] == "alpha"),
        ({"type": "decision"}, lambda m: m["type"] == "decision"),
        ({"tier": "daily"}, lambda m: m["tier"] == "daily"),
        ({"tags": ["release"]}, lambda m: "release" in m["tags"]),
    ]:
        body = search(alice_api, query, strategy=strategy, **params)
        assert body["results"], params
        assert all(check(result["memory"]) for result in body["results"]), params


@pytest.mark.parametrize("strategy", ["keyword", "hybrid"])
def test_a_filter_finds_matches_ranked_below_the_first_candidates(alice_api, strategy, monkeypatch):
    # Keyword ranking keeps a window of the best matches before filtering; the window is
    # shrunk here so that every match of the filtered workspace falls outside it.
    monkeypatch.setattr(search_engine, "KEYWORD_WINDOW", 5)
    seed(alice_api, [{"content": f"zebra zebra zebra stripes {n}"} for n in range(12)])
    wanted = seed(
        alice_api,
        [{"content": f"one zebra among many other words {n}"} for n in range(3)],
        workspace="rare",
    )
    body = search(alice_api, "zebra", strategy=strategy, workspace="rare", limit=3)
    assert sorted(ids_of(body)) == sorted(wanted)


@pytest.mark.parametrize("strategy", ["keyword", "hybrid"])
def test_expired_memories_ranked_first_leave_room_for_the_live_ones(alice_api, acme, strategy):
    # Without filters the ranking keeps a window of twice the limit before dropping expired
    # memories; here every memory of that window has expired.
    with bind_tenant_database(acme.tenant.id):
        expired = [services.create_memory(content=f"zebra zebra zebra {n}") for n in range(70)]
        Memory.objects.filter(pk__in=[m.pk for m in expired]).update(
            tier="daily", expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        live = [
            services.create_memory(content=f"one zebra among other words {n}") for n in range(3)
        ]
    body = search(alice_api, "zebra", strategy=strategy, limit=3)
    assert sorted(ids_of(body)) == sorted(m.pk for m in live)


def test_metadata_and_date_filters(alice_api):
    first = alice_api.post(
        "/v1/memories", {"content": "deploy notes", "metadata": {"repo": "infra", "n": 1}}
    ).json()
    second = alice_api.post(
        "/v1/memories", {"content": "deploy notes too", "metadata": {"repo": "web"}}
    ).json()
    assert ids_of(search(alice_api, "deploy", metadata={"repo": "infra"})) == [first["id"]]
    assert ids_of(search(alice_api, "deploy", metadata={"n": 1})) == [first["id"]]
    after = search(alice_api, "deploy", created_after=first["created_at"])
    assert ids_of(after) == [second["id"]]
    before = search(alice_api, "deploy", created_before=second["created_at"])
    assert ids_of(before) == [first["id"]]


def test_a_metadata_key_of_digits_is_a_key_like_any_other(alice_api):
    """Not an array index: "2024" names the key "2024", and "-1" is no error."""
    metadata = {"2024": "q1", "-1": "minus", "0": None, "x.y": True}
    memory = alice_api.post("/v1/memories", {"content": "year notes", "metadata": metadata})
    alice_api.post("/v1/memories", {"content": "year notes too", "metadata": {"2024": "q2"}})
    for key, value in metadata.items():
        assert ids_of(search(alice_api, "year", metadata={key: value})) == [memory.json()["id"]]


def test_a_metadata_filter_on_an_absent_key_matches_nothing(alice_api):
    alice_api.post("/v1/memories", {"content": "year notes", "metadata": {"2024": "q1"}})
    assert ids_of(search(alice_api, "year", metadata={"2025": "q1"})) == []
    assert ids_of(search(alice_api, "year", metadata={"-2": None})) == []


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_deleted_and_expired_memories_never_appear(alice_api, acme, strategy):
    ids = seed(alice_api)
    alice_api.delete(f"/v1/memories/{ids[0]}")
    with bind_tenant_database(acme.tenant.id):
        Memory.objects.filter(pk=ids[1]).update(
            tier="daily", expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
    body = search(alice_api, "kubernetes release blue green script deploy", strategy=strategy)
    assert not {ids[0], ids[1]} & set(ids_of(body))


def test_updates_are_searchable_at_once(alice_api):
    memory = alice_api.post("/v1/memories", {"content": "the first text"}).json()
    alice_api.patch(f"/v1/memories/{memory['id']}", {"content": "zebra crossing"})
    for strategy in ("keyword", "semantic", "hybrid"):
        assert ids_of(search(alice_api, "zebra crossing", strategy=strategy)) == [memory["id"]]
        assert ids_of(search(alice_api, "first text", strategy="keyword")) == []


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "deploy*",
        "a AND",
        "NEAR(",
        "((",
        ")",
        "OR OR",
        "-",
        "*",
        "^",
        ":",
        "content:deploy",
        "NOT",
        '" OR "',
        "🙂",
        "ω" * 50,
    ],
)
def test_fts_syntax_in_queries_never_fails(alice_api, query):
    seed(alice_api)
    for strategy in ("auto", "keyword", "fuzzy", "hybrid"):
        response = alice_api.post("/v1/search", {"query": query, "strategy": strategy})
        assert response.status_code == 200, (query, strategy, response.content)


def test_a_search_of_only_common_words_is_bounded(alice_api, settings):
    seed(alice_api)
    body = search(alice_api, "the and of to", strategy="keyword")
    assert body["timed_out"] is False


def test_a_search_past_its_time_budget_is_cut_short_not_failed(alice_api, acme, settings):
    with bind_tenant_database(acme.tenant.id):
        for number in range(300):
            services.create_memory(content=f"blue green script number {number}")
    settings.ENGRAM_SEARCH_TIME_BUDGET_MS = 0
    body = search(alice_api, "blue green script", strategy="keyword")
    assert body["timed_out"] is True
    assert body["results"] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "   "},
        {"query": 5},
        {"query": "x" * 1001},
        {"query": "x", "limit": 0},
        {"query": "x", "limit": 101},
        {"query": "x", "strategy": "magic"},
        {"query": "x", "min_score": 2},
        {"query": "x", "metadata": {"a": {"b": 1}}},
        {"query": "x", "workspace": "Not Valid"},
        {"query": "x", "unknown": 1},
        {"query": "nul \x00 byte"},
        {"query": "x", "explain": "yes"},
        {"query": "x", "explain": 1},
    ],
)
def test_bad_search_requests_get_400(alice_api, body):
    response = alice_api.post("/v1/search", body)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"


def test_each_search_body_is_judged_on_its_own(alice_api):
    """The search body's fields are bound once per process and shared by every request: one
    body's errors, values or defaults never carry over to the next."""
    seed(alice_api)
    bad = alice_api.post("/v1/search", {"query": "x", "limit": 0, "tier": "weekly"})
    assert set(bad.json()["fields"]) == {"limit", "tier"}
    body = search(alice_api, "coffee", strategy="keyword")
    assert len(body["results"]) == 1 and "corrections" not in body
    explained = search(alice_api, "coffee", strategy="fuzzy", limit=1, explain=True)
    assert explained["strategy"] == "fuzzy" and "corrections" in explained
    again = alice_api.post("/v1/search", {"query": "coffee", "created_after": "yesterday"})
    assert set(again.json()["fields"]) == {"created_after"}
    assert search(alice_api, "coffee")["strategy"] == "keyword"


def test_a_key_without_the_search_scope_cannot_search(acme):
    key = acme.issue_key(scopes=["memories:read"])
    response = acme.client().__class__(key).post("/v1/search", {"query": "x"})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_an_outsider_finds_nothing_of_another_tenant(alice_api, bob_api):
    seed(alice_api)
    seed(bob_api, [{"content": "Bob's own note about gardening"}])
    for strategy in ("keyword", "fuzzy", "semantic", "hybrid"):
        body = search(bob_api, "kubernetes blue green coffee gardening", strategy=strategy)
        assert all("Bob" in result["memory"]["content"] for result in body["results"])


def in_another_thread(tenant_id, write):
    """Run `write` against the tenant's file on another thread's own connection, as another
    worker process would: this process's caches learn of it only through the tenant's file."""

    def run():
        try:
            with bind_tenant_database(tenant_id):
                return write()
        finally:
            connections[DATA_PLANE_ALIAS].close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_a_write_elsewhere_shows_in_the_next_search(alice_api, acme, strategy):
    seed(alice_api)
    # Searched once first: this process now holds the tenant's vectors and vocabulary.
    search(alice_api, "zebra crossing", strategy=strategy)
    memory = in_another_thread(
        acme.tenant.id, lambda: services.create_memory(content="zebra crossing near the station")
    )
    assert ids_of(search(alice_api, "zebra crossing", strategy=strategy))[0] == memory.pk

    in_another_thread(
        acme.tenant.id,
        lambda: services.update_memory(memory.pk, {"content": "giraffe enclosure maintenance"}),
    )
    assert memory.pk not in ids_of(search(alice_api, "zebra crossing", strategy=strategy))
    assert ids_of(search(alice_api, "giraffe enclosure", strategy=strategy))[0] == memory.pk

    in_another_thread(acme.tenant.id, lambda: services.delete_memory(memory.pk))
    assert memory.pk not in ids_of(search(alice_api, "giraffe enclosure", strategy=strategy))


@pytest.mark.parametrize("strategy", ["keyword", "fuzzy", "semantic", "hybrid"])
def test_two_tenants_never_share_a_cache(alice_api, bob_api, strategy):
    # The same ids in both files, each id with another text: only the file tells them apart.
    alice_ids = seed(alice_api)
    bob_ids = seed(bob_api, list(reversed(MEMORIES)))
    assert alice_ids == bob_ids
    for _ in range(2):  # the second round is served from this process's caches
        for api in (alice_api, bob_api):
            top = search(api, "kubernetes deployment", strategy=strategy)["results"][0]
            assert "Kubernetes" in top["memory"]["content"]
            top = search(api, "dark roast coffee", strategy=strategy)["results"][0]
            assert "coffee" in top["memory"]["content"]
    kubernetes = bob_ids[len(MEMORIES) - 1]
    bob_api.delete(f"/v1/memories/{kubernetes}")
    assert kubernetes not in ids_of(search(bob_api, "kubernetes deployment", strategy=strategy))
    top = search(alice_api, "kubernetes deployment", strategy=strategy)["results"][0]
    assert "Kubernetes" in top["memory"]["content"]


def test_hybrid_finds_the_rare_words_memory_among_memories_full_of_the_common_ones(alice_api, acme):
    # Hybrid's keyword half leaves out words found in more than 5% of the memories when the
    # query has rarer ones (they would have it score most of the tenant); when all are
    # common, it keeps the rarest.
    with bind_tenant_database(acme.tenant.id):
        for n in range(40):
            services.create_memory(content=f"steps before release number {n}")
    [rubric] = seed(alice_api, [{"content": "promote the rubric to the graders"}])
    body = search(alice_api, "steps to promote the rubric before release", strategy="hybrid")
    assert ids_of(body)[0] == rubric
    assert body["results"][0]["match"]["keyword_score"] is not None
    body = search(alice_api, "steps before release", strategy="hybrid")
    assert len(body["results"]) == 10
    assert any(result["match"]["keyword_score"] is not None for result in body["results"])
