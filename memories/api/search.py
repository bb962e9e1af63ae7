"""POST /v1/search: parse the request, call memories.search, explain the results."""

from __future__ import annotations

import re
import time
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memories import search
from memories.api.fields import (
    SharedFieldsSerializer,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
)
from memories.api.serializers import (
    MAX_TAG_CHARS,
    MemorySerializer,
    row_representation,
    workspace_validator,
)
from memories.models import MemoryType, Tier
from memories.services import MemoryFilters, memory_rows_by_id
from tenants.permissions import Access, Scope, declare

MAX_QUERY_CHARS = 1000
MAX_RESULTS = 100
HIGHLIGHT_RADIUS = 60
# Engram's MCP names for two strategies.
STRATEGY_ALIASES = {"keyword_only": "keyword", "semantic_only": "semantic"}


# Every search validates its body: its plain fields are bound once, not per request.
@extend_schema_serializer(component_name="Search")
class SearchRequestSerializer(SharedFieldsSerializer):
    """A search: the query, how many results and how to rank them, and filters."""

    query = StrictCharField(max_length=MAX_QUERY_CHARS, trim_whitespace=False)
    limit = StrictIntegerField(min_value=1, max_value=MAX_RESULTS, default=10)
    strategy = serializers.ChoiceField(
        choices=[*search.STRATEGIES, *STRATEGY_ALIASES], default="auto"
    )
    min_score = StrictFloatField(min_value=0.0, max_value=1.0, default=0.0)
    explain = StrictBooleanField(default=False)
    workspace = StrictCharField(required=False, validators=[workspace_validator])
    type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    memory_type = serializers.ChoiceField(choices=MemoryType.choices, required=False)
    tags = serializers.ListField(
        child=StrictCharField(max_length=MAX_TAG_CHARS), max_length=10, required=False
    )
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    metadata = serializers.DictField(required=False)

    def validate_query(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The query cannot be empty.")
        return value

    def validate_tags(self, value: list[str]) -> list[str]:
        tags = [tag.strip() for tag in value]
        if not all(tags):
            raise serializers.ValidationError("Tags cannot be empty.")
        return tags

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, dict | list):
                raise serializers.ValidationError(
                    {key: ["Metadata filters compare strings, numbers, booleans or null."]}
                )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        memory_type = attrs.pop("memory_type", None)
        if memory_type is not None and attrs.setdefault("type", memory_type) != memory_type:
            raise serializers.ValidationError(
                {"memory_type": ["Conflicts with 'type'; send one of them."]}
            )
        attrs["strategy"] = STRATEGY_ALIASES.get(attrs["strategy"], attrs["strategy"])
        return attrs


class MatchSerializer(serializers.Serializer):
    strategy = serializers.CharField()
    keyword_score = serializers.FloatField(allow_null=True)
    semantic_score = serializers.FloatField(allow_null=True)
    matched_terms = serializers.ListField(child=serializers.CharField(), required=False)
    highlights = serializers.ListField(child=serializers.CharField(), required=False)


class SearchResultSerializer(serializers.Serializer):
    memory = MemorySerializer()
    score = serializers.FloatField()
    match = MatchSerializer()


class SearchResponseSerializer(serializers.Serializer):
    results = SearchResultSerializer(many=True)
    strategy = serializers.CharField()
    took_ms = serializers.FloatField()
    timed_out = serializers.BooleanField()
    corrections = serializers.DictField(required=False)


def matched_terms(content: str, terms: list[str]) -> list[str]:
    """Query terms (or their typo corrections) found in the content, allowing word forms."""
    words = set(search.query_terms(content))
    found = []
    for term in terms:
        stem = term[:5] if len(term) > 5 else term
        if term in words or any(word.startswith(stem) for word in words):
            found.append(term)
    return found


def highlights(content: str, terms: list[str]) -> list[str]:
    """Short snippets of the content around each matched term, the term in **bold**."""
    snippets = []
    folded = search.fold(content)
    for term in terms:
        stem = term[:5] if len(term) > 5 else term
        match = re.search(rf"\b{re.escape(stem)}\w*", folded)
        if match is None:
            continue
        start = max(0, match.start() - HIGHLIGHT_RADIUS)
        end = min(len(content), match.end() + HIGHLIGHT_RADIUS)
        snippet = (
            content[start : match.start()]
            + "**"
            + content[match.start() : match.end()]
            + "**"
            + content[match.end() : end]
        )
        snippets.append(("…" if start else "") + snippet + ("…" if end < len(content) else ""))
    return snippets


def explained_results(
    outcome: search.SearchOutcome, *, explain: bool, match_key: str = "match"
) -> list[dict[str, Any]]:
    """Each hit as `{"memory", "score", <match_key>}`; `explain` adds matched terms and
    highlights. REST calls the match `match`, Engram's MCP tool `match_info`."""
    rows = memory_rows_by_id([hit.memory_id for hit in outcome.hits])
    terms = [*outcome.terms, *(word for words in outcome.corrections.values() for word in words)]
    results = []
    for hit in outcome.hits:
        row = rows.get(hit.memory_id)
        if row is None:  # deleted between ranking and loading
            continue
        memory = row_representation(row)
        match: dict[str, Any] = {
            "strategy": outcome.strategy,
            "keyword_score": hit.keyword_score,
            "semantic_score": hit.semantic_score,
        }
        if explain:
            found = matched_terms(memory["content"] + " " + " ".join(memory["tags"]), terms)
            match["matched_terms"] = found
            match["highlights"] = highlights(memory["content"], found)
        results.append({"memory": memory, "score": hit.score, match_key: match})
    return results


@declare(Access.API)
class SearchView(APIView):
    required_scopes = {"POST": Scope.SEARCH}

    @extend_schema(request=SearchRequestSerializer, responses=SearchResponseSerializer)
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        serializer = SearchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        params = serializer.validated_data
        filters = MemoryFilters(
            workspace=params.get("workspace"),
            type=params.get("type"),
            tags=tuple(params.get("tags", ())),
            tier=params.get("tier"),
            created_after=params.get("created_after"),
            created_before=params.get("created_before"),
            metadata=tuple(params.get("metadata", {}).items()),
        )
        outcome = search.search(
            params["query"],
            strategy=params["strategy"],
            filters=filters,
            limit=params["limit"],
            min_score=params["min_score"],
        )
        results = explained_results(outcome, explain=params["explain"])
        body: dict[str, Any] = {
            "results": results,
            "strategy": outcome.strategy,
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
            "timed_out": outcome.timed_out,
        }
        if params["explain"]:
            body["corrections"] = outcome.corrections
        return Response(body)
