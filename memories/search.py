"""Finding memories again: keyword (BM25), fuzzy, semantic and hybrid search.

Every strategy returns ids of live memories of the bound tenant that pass the filters, with a
score in [0, 1] and what matched. Keyword search lets FTS5 rank first (a materialised CTE) and
joins the memory table afterwards, so filters never turn into a scan per row; each query has
a time budget (ENGRAM_SEARCH_TIME_BUDGET_MS) past which it is interrupted, not left to run.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import OperationalError, connections
from django.utils import timezone
from rapidfuzz import process
from rapidfuzz.distance import OSA

from memories.embeddings import STOP_WORDS, get_provider
from memories.models import Memory
from memories.services import MemoryFilters
from memories.tenant_db import DATA_PLANE_ALIAS, current_database_path
from memories.vector_index import SemanticRanking

STRATEGIES = ("auto", "keyword", "fuzzy", "semantic", "hybrid")
RRF_K = 60
KEYWORD_WEIGHT = 0.4
SEMANTIC_WEIGHT = 0.6
MAX_QUERY_TERMS = 32
FUZZY_MAX_DISTANCE = 2
# Column weights of bm25(): content counts most, then tags, then metadata values.
BM25_WEIGHTS = (1.0, 0.75, 0.5)
_TERM = re.compile(r"\w+", re.UNICODE)
_OPERATOR_HINT = re.compile(r'"|\b(AND|OR|NOT)\b|\w\*')


@dataclass
class Hit:
    memory_id: int
    score: float
    keyword_score: float | None = None
    semantic_score: float | None = None


@dataclass
class SearchOutcome:
    strategy: str
    hits: list[Hit]
    terms: list[str] = field(default_factory=list)
    timed_out: bool = False
    corrections: dict[str, list[str]] = field(default_factory=dict)


class SearchTimeout(Exception):
    """The query ran past its time budget."""


# --- Query text ----------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower-case and strip accents, as the FTS5 tokenizer does."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def query_terms(query: str) -> list[str]:
    """The query's searchable words; stop words are kept only if there is nothing else."""
    terms = list(dict.fromkeys(_TERM.findall(fold(query))))[:MAX_QUERY_TERMS]
    meaningful = [term for term in terms if term not in STOP_WORDS]
    return meaningful or terms


def pick_strategy(query: str) -> str:
    """Engram's `auto`: operators or up to 2 words → keyword, 8 or more → semantic, else hybrid."""
    words = query.split()
    if _OPERATOR_HINT.search(query) or len(words) <= 2:
        return "keyword"
    if len(words) >= 8:
        return "semantic"
    return "hybrid"


def fts_expression(groups: list[list[str]]) -> str:
    """An FTS5 MATCH expression: any group may match, any spelling within a group.

    Every term is quoted, so nothing a client types is parsed as FTS5 syntax.
    """
    parts = []
    for group in groups:
        quoted = [f'"{term}"' for term in group]
        parts.append(quoted[0] if len(quoted) == 1 else "(" + " OR ".join(quoted) + ")")
    return " OR ".join(parts)


# --- Running SQL within a time budget ------------------------------------------------------------


@contextmanager
def time_budget(milliseconds: int) -> Iterator[None]:
    """Interrupt the data-plane connection's statements that run past the budget."""
    connection = connections[DATA_PLANE_ALIAS]
    connection.ensure_connection()
    deadline = time.monotonic() + milliseconds / 1000
    raw = connection.connection
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 2000)
    try:
        yield
    except OperationalError as error:
        if "interrupted" in str(error):
            raise SearchTimeout() from error
        raise
    finally:
        raw.set_progress_handler(None, 0)


def filter_clause(filters: MemoryFilters) -> tuple[str, list[Any]]:
    """The WHERE clause of the filters (and liveness) on "memories_memory", from the ORM."""
    if filters == _NO_FILTERS:  # most searches: liveness only, compiled once per process
        expires_at = Memory._meta.get_field("expires_at")
        return _liveness_sql(), [
            expires_at.get_db_prep_value(timezone.now(), connections[DATA_PLANE_ALIAS])
        ]
    return _compiled(filters)


_NO_FILTERS = MemoryFilters()


def _compiled(filters: MemoryFilters) -> tuple[str, list[Any]]:
    queryset = filters.apply(Memory.objects.live())
    compiler = queryset.query.get_compiler(using=DATA_PLANE_ALIAS)
    sql, params = compiler.compile(queryset.query.where)
    return sql, list(params)


@cache
def _liveness_sql() -> str:
    sql, params = _compiled(_NO_FILTERS)
    assert len(params) == 1, "liveness compares expires_at with one value: now"
    return sql


def filtered_ids(clause: tuple[str, list[Any]], ids: list[int]) -> set[int]:
    """Which of these ids are live memories passing the filters (their `filter_clause`)."""
    if not ids:
        return set()
    where, params = clause
    table = Memory._meta.db_table
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(
            f'SELECT "{table}"."id" FROM "{table}" '
            f'WHERE "{table}"."id" IN (SELECT value FROM json_each(%s)) AND {where}',
            [json.dumps(ids), *params],
        )
        return {row[0] for row in cursor.fetchall()}


# --- Keyword and fuzzy ---------------------------------------------------------------------------


# Keyword search ranks inside FTS5 and keeps the best KEYWORD_WINDOW (or limit * 4) matches
# before joining the memory table for the filters: joining every match costs more than the
# ranking. Without filters only expired memories drop out, so twice the limit is kept (hybrid's
# 30 candidates: 0.9 ms less per search at 100k). When the filters leave fewer than `limit`
# of them, the whole ranking is joined instead, so the result is always the true top `limit`.
KEYWORD_WINDOW = 200


def keyword_rows(
    expression: str, clause: tuple[str, list[Any]], limit: int, window: int | None
) -> list[tuple[int, float]]:
    """(id, score) of the best `limit` matches passing the filters, best first; `window`: rank
    only that many of the best matches before the join (None: all of them)."""
    where, params = clause
    table = Memory._meta.db_table
    weights = ", ".join(str(weight) for weight in BM25_WEIGHTS)
    top = "ORDER BY score DESC, id DESC LIMIT %s" if window is not None else ""
    sql = (
        "WITH ranked AS MATERIALIZED ("
        f"  SELECT rowid AS id, -bm25(memories_fts, {weights}) AS score"
        f"   FROM memories_fts WHERE memories_fts MATCH %s {top}"
        ") "
        f'SELECT ranked.id, ranked.score FROM ranked JOIN "{table}" '
        f'ON "{table}"."id" = ranked.id WHERE {where} '
        "ORDER BY ranked.score DESC, ranked.id DESC LIMIT %s"
    )
    window_params = [] if window is None else [window]
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(sql, [expression, *window_params, *params, limit])
        return cursor.fetchall()


def keyword_hits(groups: list[list[str]], clause: tuple[str, list[Any]], limit: int) -> list[Hit]:
    if not groups:
        return []
    expression = fts_expression(groups)
    filtered = clause[0] != _liveness_sql()
    window = max(limit * 4, KEYWORD_WINDOW) if filtered else limit * 2
    rows = keyword_rows(expression, clause, limit, window)
    if len(rows) < limit:
        rows = keyword_rows(expression, clause, limit, None)
    if not rows:
        return []
    best = rows[0][1] or 1.0
    return [Hit(memory_id=row[0], score=row[1] / best, keyword_score=row[1] / best) for row in rows]


# Hybrid's keyword half only proposes candidates for the fusion, and BM25 over an OR of common
# words would score most of the tenant (a query's filler words, "steps … before release", are
# each in 10-20% of the memories). So it leaves out the words found in more than this share of
# the memories when the query has rarer ones: their IDF is low, and the rows scored drop from
# ~45,000 to a few thousand at 100k memories. Keyword and fuzzy search score every word.
COMMON_WORD_SHARE = 0.02


def informative_groups(groups: list[list[str]]) -> list[list[str]]:
    """The groups (a word and its typo corrections) that are not in more than
    COMMON_WORD_SHARE of the memories; the rarest group when every one is."""
    if len(groups) < 2:
        return groups
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute("SELECT value FROM memories_counter WHERE name = 'memories'")
        row = cursor.fetchone()
    common = int(COMMON_WORD_SHARE * (row[0] if row else 0))
    # Counting stops past `common`: a common word's 20,000 matches are not walked.
    group_rows = _group_rows(groups, common + 1)
    kept = [group for group, rows in zip(groups, group_rows, strict=True) if rows <= common]
    if kept:
        return kept
    group_rows = _group_rows(groups, None)
    return [groups[group_rows.index(min(group_rows))]]


def _group_rows(groups: list[list[str]], at_most: int | None) -> list[int]:
    """Per group, how many memories match each of its words, added up (counted up to
    `at_most` per word)."""
    phrases = [phrase for group in groups for phrase in group]
    limit = "" if at_most is None else f" LIMIT {int(at_most)}"
    counts = ", ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH %s{limit}))"
        for _ in phrases
    )
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(f"SELECT {counts}", [f'"{phrase}"' for phrase in phrases])
        found = iter(cursor.fetchone())
    return [sum(next(found) for _ in group) for group in groups]


class Vocabulary:
    """Per process and tenant: the words of the tenant's memories, refreshed at most every 30 s.

    Read only to correct a typo (18,000 words at 100k memories: reading them walks the whole
    index), never to tell whether a word is known: `_known_in_some_form` does that.
    """

    REFRESH_SECONDS = 30.0

    def __init__(self) -> None:
        self._words: dict[Path, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def words(self) -> list[str]:
        path = current_database_path()
        assert path is not None, "bind a tenant database first"
        with self._lock:
            cached = self._words.get(path)
        if cached is not None and time.monotonic() - cached[0] < self.REFRESH_SECONDS:
            return cached[1]
        with connections[DATA_PLANE_ALIAS].cursor() as cursor:
            cursor.execute("SELECT term FROM memories_words_vocab")
            words = [row[0] for row in cursor.fetchall()]
        with self._lock:
            self._words[path] = (time.monotonic(), words)
            while len(self._words) > 64:
                self._words.pop(next(iter(self._words)))
        return words

    def clear(self) -> None:
        with self._lock:
            self._words.clear()


vocabulary = Vocabulary()


def _known_in_some_form(terms: list[str]) -> set[str]:
    """Which of these terms the keyword index matches, which stems words: "steps" is known
    where the memories say "step". One lookup of each term's first match."""
    found = ", ".join(
        "(SELECT 1 FROM memories_fts WHERE memories_fts MATCH %s LIMIT 1)" for _ in terms
    )
    with connections[DATA_PLANE_ALIAS].cursor() as cursor:
        cursor.execute(f"SELECT {found}", [f'"{term}"' for term in terms])
        return {term for term, hit in zip(terms, cursor.fetchone(), strict=True) if hit}


def corrections_for(terms: list[str]) -> dict[str, list[str]]:
    """For each term the tenant never used in any form, its known words within edit distance 2.

    A term the index matches in another form is not corrected: its corrections would be
    that word's other forms, which the stemmer already matches, or noise.
    """
    candidates = [term for term in terms if len(term) >= 4]
    if not candidates:
        return {}
    known = _known_in_some_form(candidates)
    unknown = [term for term in candidates if term not in known]
    if not unknown:
        return {}
    words = vocabulary.words()
    corrections: dict[str, list[str]] = {}
    for term in unknown:
        # Short words tolerate one edit, longer ones two; swapping two letters is one edit.
        # Optimal string alignment, the restricted Damerau-Levenshtein distance: it differs
        # only when a letter is edited twice, and is 3.5x faster over 18,000 words (1.3 ms).
        allowed = 1 if len(term) < 6 else FUZZY_MAX_DISTANCE
        nearest = process.extract(term, words, scorer=OSA.distance, score_cutoff=allowed, limit=3)
        if nearest:
            corrections[term] = [word for word, _, _ in nearest]
    return corrections


# --- Semantic and hybrid -------------------------------------------------------------------------


def semantic_hits(ranking: SemanticRanking, clause: tuple[str, list[Any]], limit: int) -> list[Hit]:
    # Take the best candidates, keep those that are live and pass the filters, and look
    # further down the ranking only if too few passed.
    wanted = max(limit * 4, 50)
    while True:
        candidates = ranking.top(wanted)
        allowed = filtered_ids(clause, [memory_id for memory_id, _ in candidates])
        hits = [
            Hit(memory_id=memory_id, score=score, semantic_score=score)
            for memory_id, score in candidates
            if memory_id in allowed
        ][:limit]
        if len(hits) == limit or wanted >= len(ranking):
            return hits
        wanted *= 4


def fuse(keyword: list[Hit], semantic: list[Hit], limit: int) -> list[Hit]:
    """Weighted reciprocal-rank fusion (k = 60; keyword 0.4, semantic 0.6), as Engram does."""
    fused: dict[int, Hit] = {}
    for weight, hits in ((KEYWORD_WEIGHT, keyword), (SEMANTIC_WEIGHT, semantic)):
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(hit.memory_id, Hit(memory_id=hit.memory_id, score=0.0))
            entry.score += weight / (RRF_K + rank)
            if hit.keyword_score is not None:
                entry.keyword_score = hit.keyword_score
            if hit.semantic_score is not None:
                entry.semantic_score = hit.semantic_score
    best_possible = (KEYWORD_WEIGHT + SEMANTIC_WEIGHT) / (RRF_K + 1)
    ordered = sorted(fused.values(), key=lambda hit: (-hit.score, -hit.memory_id))[:limit]
    for hit in ordered:
        hit.score /= best_possible
    return ordered


# --- The one entry point -------------------------------------------------------------------------


def search(
    query: str,
    *,
    strategy: str = "auto",
    filters: MemoryFilters | None = None,
    limit: int = 10,
    min_score: float = 0.0,
) -> SearchOutcome:
    """Search the bound tenant's memories. Never raises for what a client can type."""
    filters = filters or MemoryFilters()
    used = pick_strategy(query) if strategy == "auto" else strategy
    terms = query_terms(query)
    outcome = SearchOutcome(strategy=used, hits=[], terms=terms)
    candidates = max(limit * 3, 30)
    ranking = None
    if used in ("semantic", "hybrid"):
        # Outside the time budget, which interrupts SQL statements: the provider (a model loads
        # once per process), the tenant's vectors (a first load, or catching up with writes),
        # the query's embedding and its similarity to every vector (numpy). Inside, a slow
        # load or embedding would only get the next statement interrupted: the search would
        # answer nothing, and a cut-short first load would start over on the next search.
        ranking = SemanticRanking(query, get_provider())
    try:
        with time_budget(settings.ENGRAM_SEARCH_TIME_BUDGET_MS):
            clause = filter_clause(filters)
            groups = [[term] for term in terms]
            if used in ("fuzzy", "hybrid"):
                outcome.corrections = corrections_for(terms)
                groups = [[term, *outcome.corrections.get(term, [])] for term in terms]
            keyword = []
            if used in ("keyword", "fuzzy"):
                keyword = keyword_hits(groups, clause, limit)
            elif used == "hybrid":
                keyword = keyword_hits(informative_groups(groups), clause, candidates)
            if used == "semantic":
                outcome.hits = semantic_hits(ranking, clause, limit)
            elif used == "hybrid":
                outcome.hits = fuse(keyword, semantic_hits(ranking, clause, candidates), limit)
            else:
                outcome.hits = keyword
    except SearchTimeout:
        outcome.timed_out = True
        outcome.hits = []
    outcome.hits = [hit for hit in outcome.hits if hit.score >= min_score][:limit]
    return outcome
