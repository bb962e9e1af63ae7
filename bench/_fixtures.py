"""Benchmark fixtures, run in a subprocess with the run's environment.

    python bench/_fixtures.py <command>   (arguments as a JSON object on stdin)

Commands:
  setup-tenants  provision `count` tenants `{prefix}-{n}` through tenants.services, optionally
                 with an API key and a memory each; prints the tenants and the timings.
  load-search-corpus
                 provision one tenant with an API key and bulk-load `count` generated memories
                 (varied texts over ~24 topics, tags, metadata) in batches: Memory and MemoryTag
                 rows in one transaction per batch (the triggers index them into FTS5), then
                 store_embeddings with the configured provider; progress on stderr. Returns the
                 tenant, its key, its file, the timings and the document frequency of the
                 generator's words (from the tenant's FTS vocabulary).
  setup-load     `tenants` tenants with a key each, each with the same `memories` generated
                 memories (one tenant file generated, then copied over each tenant's file).
  search-sql     the SQL that memories.search.keyword_hits runs (captured from the engine on
                 the bound tenant) and the FTS5 MATCH expression of each of `queries`.

Prints one JSON line on stdout: the result.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from memories import services as memory_services  # noqa: E402
from memories.tenant_db import bind_tenant_database  # noqa: E402
from tenants import services  # noqa: E402


def owner_email(prefix: str) -> str:
    return f"owner@{prefix}.bench.invalid"


def setup_tenants(
    prefix: str, start: int, count: int, keys: bool = True, memories: bool = False
) -> dict[str, Any]:
    owner = services.get_or_create_user(owner_email(prefix))
    provision_ms: list[float] = []
    tenants = []
    began = time.perf_counter()
    for number in range(start, start + count):
        started = time.perf_counter()
        # Enterprise: no rate limit or quota, so benchmarks measure the request path itself
        # (bench/gateway.py measures what the limits cost).
        tenant = services.provision_tenant(
            slug=f"{prefix}-{number}", owner=owner, plan="enterprise"
        )
        provision_ms.append(1000 * (time.perf_counter() - started))
        tenants.append(tenant)
    provision_seconds = time.perf_counter() - began

    began = time.perf_counter()
    rows = []
    for tenant in tenants:
        row: dict[str, Any] = {"slug": tenant.slug, "id": str(tenant.id)}
        if keys:
            _, row["key"] = services.create_api_key(tenant=tenant, name="bench", created_by=owner)
        if memories:
            with bind_tenant_database(tenant.id):
                memory = memory_services.create_memory(
                    content=f"benchmark memory of {tenant.slug}", tags=["bench"]
                )
            row["memory_id"] = memory.pk
        rows.append(row)
    extras_seconds = time.perf_counter() - began
    return {
        "tenants": rows,
        "provision_seconds": provision_seconds,
        "provision_ms": sorted(provision_ms),
        "extras_seconds": extras_seconds,
    }


# --- A search corpus: varied memories over topics (bench/search.py) ---------------------------

# Each topic: nouns, verbs, adjectives, systems, tags. Words are shared across topics now and
# then (latency, cache, release), as in real notes; customers and project code names form a
# long tail of rare words.
SEARCH_TOPICS = {
    "kubernetes": (
        "cluster pod deployment namespace ingress helm chart node container image registry "
        "rollout replica manifest kubelet autoscaler sidecar daemonset",
        "deploy rollback scale drain cordon restart redeploy promote",
        "unhealthy pending crashlooping stale canary evicted",
        "prod-eu staging-us kube-west argocd",
        "k8s deploy infra",
    ),
    "database": (
        "postgres index query replica vacuum migration schema table transaction deadlock "
        "connection pool backup snapshot partition sequence",
        "migrate vacuum reindex backfill shard restore analyze",
        "slow locked bloated replicated read-only",
        "pg-main pg-analytics orders-db pgbouncer",
        "database postgres",
    ),
    "billing": (
        "invoice subscription plan refund charge coupon tax receipt proration dunning checkout "
        "payment card ledger",
        "refund charge invoice prorate cancel upgrade downgrade",
        "overdue failed annual monthly prorated",
        "stripe billing-api chargebee",
        "billing payments",
    ),
    "auth": (
        "token session password oauth sso saml scope permission role secret certificate mfa "
        "login keypair",
        "rotate revoke encrypt audit authenticate expire",
        "expired leaked compromised scoped privileged",
        "okta vault auth-service keycloak",
        "security auth",
    ),
    "frontend": (
        "component button modal layout stylesheet theme bundle webpack hydration state router "
        "form accessibility font icon",
        "render refactor bundle memoize lazy-load restyle",
        "responsive flaky sluggish accessible dark",
        "web-app storybook design-system",
        "frontend ui",
    ),
    "ci": (
        "pipeline build test runner artifact cache job workflow lint coverage flake merge "
        "branch commit",
        "rebuild retry merge cache bisect lint",
        "flaky green red cached parallel",
        "github-actions buildkite jenkins",
        "ci testing",
    ),
    "observability": (
        "metric dashboard alert trace log span latency error-rate slo pager histogram exporter "
        "sampler",
        "alert page instrument sample aggregate silence",
        "noisy degraded missing spiky p99",
        "grafana prometheus datadog sentry",
        "monitoring oncall",
    ),
    "network": (
        "dns load-balancer certificate tls proxy firewall vpc subnet route cdn packet timeout "
        "gateway",
        "route proxy terminate allowlist resolve throttle",
        "intermittent regional misconfigured",
        "cloudflare nginx envoy",
        "network",
    ),
    "data": (
        "etl warehouse batch stream kafka topic consumer partition parquet airflow dag backfill "
        "lag",
        "ingest transform backfill replay partition compact",
        "late duplicated lagging idempotent",
        "kafka-main airflow snowflake dbt",
        "data etl",
    ),
    "ml": (
        "model embedding training dataset feature inference gpu checkpoint evaluation prompt "
        "tokenizer accuracy drift",
        "train fine-tune evaluate quantize label retrain",
        "overfit biased quantized distilled",
        "mlflow triton sagemaker",
        "ml",
    ),
    "mobile": (
        "app release build crash screen notification push store review offline sync gesture "
        "permission",
        "ship submit localize crash-test",
        "offline native laggy",
        "ios-app android-app testflight firebase",
        "mobile",
    ),
    "hiring": (
        "interview candidate offer onboarding headcount referral rubric recruiter manager mentor",
        "interview hire onboard mentor promote",
        "senior junior remote",
        "greenhouse lever",
        "hiring team",
    ),
    "docs": (
        "documentation guide tutorial reference readme changelog example snippet diagram faq "
        "glossary",
        "document publish translate review",
        "outdated missing confusing",
        "docs-site notion confluence",
        "docs",
    ),
    "performance": (
        "cache redis memcached eviction ttl hit-rate throughput profile allocation gc memory "
        "cpu hotspot latency",
        "cache evict profile optimize warm invalidate",
        "cold hot memory-bound",
        "redis-main varnish",
        "performance cache",
    ),
    "api": (
        "endpoint pagination cursor version schema webhook rate-limit idempotency payload "
        "header openapi client sdk",
        "paginate deprecate version document throttle",
        "breaking backward-compatible deprecated",
        "public-api graphql-gateway",
        "api",
    ),
    "compliance": (
        "gdpr soc2 retention consent dpa audit policy vendor pii export deletion-request "
        "encryption",
        "anonymize retain purge certify",
        "compliant regulated sensitive",
        "vanta drata",
        "compliance legal",
    ),
    "support": (
        "ticket escalation sla macro refund complaint feature-request bug workaround survey "
        "nps churn",
        "escalate triage reply close",
        "urgent angry churning",
        "zendesk intercom",
        "support customers",
    ),
    "growth": (
        "campaign newsletter signup funnel conversion landing-page experiment seo webinar trial",
        "launch experiment target",
        "viral organic paid",
        "hubspot mailchimp",
        "growth",
    ),
    "storage": (
        "bucket s3 object lifecycle archive snapshot restore replication glacier disk volume quota",
        "archive replicate restore expire",
        "encrypted versioned cold",
        "s3-backups minio",
        "storage",
    ),
    "cost": (
        "budget forecast spend reservation savings-plan instance rightsizing bill vendor "
        "contract renewal",
        "forecast negotiate rightsize renew",
        "overbudget committed",
        "aws-billing cloudhealth",
        "finance cost",
    ),
    "search": (
        "search relevance ranking bm25 vector synonym typo query index analyzer recall precision",
        "rank reindex tune boost",
        "fuzzy semantic stale",
        "elasticsearch opensearch typesense",
        "search",
    ),
    "email": (
        "email template bounce smtp digest notification unsubscribe deliverability spam queue",
        "send throttle unsubscribe retry",
        "bounced delayed transactional",
        "sendgrid postmark ses",
        "email",
    ),
    "preferences": (
        "editor shortcut terminal theme language style tabs spaces formatter linter keybinding",
        "prefer configure format",
        "concise verbose strict",
        "neovim vscode zsh",
        "preferences",
    ),
    "architecture": (
        "service monolith microservice queue event saga contract boundary dependency coupling "
        "module adr",
        "split extract decouple consolidate",
        "synchronous asynchronous eventual",
        "event-bus orders-service catalog",
        "architecture",
    ),
}

# (memory type, template). {n} {n2} {n3} nouns, {v} {v2} verbs, {a} adjective, {s} system of
# the topic; {c} customer and {proj} project (long tail), {p} person, the rest small numbers.
SEARCH_TEMPLATES = [
    ("decision", "Decided to {v} the {n} in {s} instead of patching the {n2} by hand."),
    ("note", "{S} {n} was {a} again after the {day} release; {p} will {v} the {n2}."),
    ("todo", "TODO: {v} the {n} for {c} before {day}."),
    ("learning", "Learned that the {n} of {s} needs a {a} {n2} when {n3} traffic spikes."),
    ("issue", "Customer {c} reported a {a} {n} on {s}; ticket {ticket} is assigned to {p}."),
    ("preference", "{p} prefers a {a} {n} over the {n2} when working on {s}."),
    ("issue", "Incident {ticket}: {s} {n} went {a} at {hh}:{mm} UTC, root cause was the {n2}."),
    ("checkpoint", "Checkpoint: {n} work for {c} is {pct}% done, next step is to {v} the {n2}."),
    ("procedural", "Runbook: to {v} the {n}, first {v2} the {n2}, then check the {s} dashboards."),
    ("episodic", "Met with {p}: we agreed to {v} the {n} and the {n2} by {day}, blocked on {c}."),
    ("summary", "Week {week} summary: {s} {n} stable, {n2} {a}, {count} {n3} tickets closed."),
    ("note", "Reminder: the {n} for {s} has to be renewed every {count} days."),
    ("context", "{p} said the {a} {n} in project {proj} should go through {s}."),
    ("procedural", "Release process: {v} with the {a} script, then {v2} the {n} on {s}."),
    ("learning", "The {n} on {s} is {a} because the {n2} and the {n3} share one {n4}."),
    ("note", "Question from {c}: can we {v} the {n} without touching the {n2}?"),
]
SEARCH_PEOPLE = (
    "alice bruno chen dana elif farah goran hana ivan jonas kiri lena marco nadia omar priya "
    "quinn rosa sven tomas uma victor wen yusuf zoe"
).split()
SEARCH_DAYS = "monday tuesday wednesday thursday friday".split()
SEARCH_SOURCES = ["chat", "cli", "ide", "api", "mcp"]


def made_up_words(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """Pronounceable invented names (customers, projects): the corpus's rare words."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ex", "or", "an", "ix"]
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(3, 4)))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


class SearchCorpus:
    """A deterministic stream of varied memories (same seed, same texts)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.topics = {
            name: [part.split() for part in parts] for name, parts in SEARCH_TOPICS.items()
        }
        taken = {word for parts in self.topics.values() for part in parts for word in part}
        self.customers = made_up_words(self.rng, 20_000, taken)
        self.projects = made_up_words(self.rng, 600, taken)
        # Zipf-like popularity: a few customers appear everywhere, most a handful of times.
        self.customer_weights = list(
            itertools.accumulate(1.0 / (rank + 1) ** 1.1 for rank in range(len(self.customers)))
        )
        self.names = list(self.topics)

    def sentence(self, topic: str) -> tuple[str, str, str]:
        """(type, sentence, customer or "") of one template filled from one topic."""
        rng = self.rng
        nouns, verbs, adjectives, systems, _ = self.topics[topic]
        kind, template = rng.choice(SEARCH_TEMPLATES)
        customer = rng.choices(self.customers, cum_weights=self.customer_weights)[0]
        system = rng.choice(systems)
        n1, n2, n3, n4 = rng.sample(nouns, 4)
        text = template.format(
            n=n1,
            n2=n2,
            n3=n3,
            n4=n4,
            v=rng.choice(verbs),
            v2=rng.choice(verbs),
            a=rng.choice(adjectives),
            s=system,
            S=system.capitalize(),
            c=customer,
            proj=rng.choice(self.projects),
            p=rng.choice(SEARCH_PEOPLE),
            day=rng.choice(SEARCH_DAYS),
            ticket=f"ENG-{rng.randint(100, 9999)}",
            hh=f"{rng.randint(0, 23):02d}",
            mm=f"{rng.randint(0, 59):02d}",
            pct=rng.randint(5, 95),
            week=rng.randint(1, 52),
            count=rng.randint(2, 90),
        )
        return kind, text, customer if "{c}" in template else ""

    def record(self, number: int, now: dt.datetime) -> dict[str, Any]:
        rng = self.rng
        topic = rng.choice(self.names)
        topics = [topic] + ([rng.choice(self.names)] if rng.random() < 0.2 else [])
        sentences = []
        kinds = []
        customers = []
        for index in range(rng.choice((1, 1, 2, 2, 2, 3))):
            kind, text, customer = self.sentence(topics[index % len(topics)])
            sentences.append(text)
            kinds.append(kind)
            if customer:
                customers.append(customer)
        tags = sorted({rng.choice(self.topics[name][4]) for name in topics})
        if customers and rng.random() < 0.3:
            tags.append(customers[0])
        created = now - dt.timedelta(seconds=rng.randint(60, 400 * 86400))
        roll = rng.random()
        # 4% daily memories still live, 1% already expired (the live filter drops them).
        tier = "daily" if roll < 0.05 else "permanent"
        expires_at = None
        if roll < 0.01:
            expires_at = now - dt.timedelta(hours=rng.randint(1, 48))
        elif roll < 0.05:
            expires_at = now + dt.timedelta(hours=rng.randint(1, 24))
        metadata: dict[str, Any] = {"source": rng.choice(SEARCH_SOURCES), "topic": topic}
        if customers:
            metadata["customer"] = customers[0]
        return {
            "content": " ".join(sentences),
            "type": kinds[0],
            "tags": tags,
            "metadata": metadata,
            "importance": round(rng.random(), 2),
            "workspace": f"ws-{number % 8}",
            "tier": tier,
            "expires_at": expires_at,
            "created_at": created,
        }

    def words(self) -> dict[str, Any]:
        """The generator's searchable words, by kind, for building queries."""
        parts = ("nouns", "verbs", "adjectives", "systems")
        return {
            "topics": {
                name: {
                    part: sorted(w for w in words if "-" not in w)
                    for part, words in zip(parts, topic, strict=False)
                }
                for name, topic in self.topics.items()
            },
            "customers": self.customers,
            "projects": self.projects,
            "people": SEARCH_PEOPLE,
        }


class TimedProvider:
    """The configured embedding provider, with the time spent in embed() added up."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.name = provider.name
        self.dimension = provider.dimension
        self.seconds = 0.0

    def embed(self, texts: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.provider.embed(texts)
        finally:
            self.seconds += time.perf_counter() - started


SEARCH_WORD = re.compile(r"\w+")


def load_search_corpus(
    prefix: str, label: str, count: int, batch: int = 2000, seed: int = 20261122
) -> dict[str, Any]:
    """Provision a tenant and bulk-load `count` generated memories into it (see the docstring)."""
    from collections import Counter

    from django.db import connections, transaction
    from django.utils import timezone

    from memories.embeddings import get_provider
    from memories.models import Memory, MemoryTag, content_hash
    from memories.tenant_db import DATA_PLANE_ALIAS, tenant_database_path
    from memories.vector_index import store_embeddings

    setup = setup_tenants(f"{prefix}-{label}", 1, 1, keys=True)
    tenant = setup["tenants"][0]
    # setup_tenants provisions on the Enterprise plan: no rate limit or quota in the measured
    # path (bench/gateway.py measures those); metering still runs on every request.
    from tenants.models import Tenant

    plan = str(Tenant.objects.get(pk=tenant["id"]).plan_id)
    provider = TimedProvider(get_provider())
    corpus = SearchCorpus(seed)
    # Documents per word, over what memories_fts indexes (content, tags, metadata values).
    frequency: Counter[str] = Counter()
    now = timezone.now()
    rows_seconds = embed_store_seconds = 0.0
    began = time.perf_counter()
    with bind_tenant_database(tenant["id"]):
        for start in range(0, count, batch):
            records = [corpus.record(n, now) for n in range(start, min(count, start + batch))]
            for record in records:
                indexed = [
                    record["content"],
                    *record["tags"],
                    *map(str, record["metadata"].values()),
                ]
                frequency.update(set(SEARCH_WORD.findall(" ".join(indexed).lower())))
            memories = [
                Memory(
                    content_hash=content_hash(record["content"]),
                    updated_at=record["created_at"],
                    **record,
                )
                for record in records
            ]
            started = time.perf_counter()
            with transaction.atomic(using=DATA_PLANE_ALIAS):
                Memory.objects.bulk_create(memories)
                MemoryTag.objects.bulk_create(
                    [
                        MemoryTag(memory=memory, tag=tag)
                        for memory in memories
                        for tag in memory.tags
                    ]
                )
            rows_seconds += time.perf_counter() - started
            started = time.perf_counter()
            with transaction.atomic(using=DATA_PLANE_ALIAS):
                if not store_embeddings(memories, provider):
                    raise RuntimeError("store_embeddings failed")
            embed_store_seconds += time.perf_counter() - started
            done = start + len(memories)
            elapsed = time.perf_counter() - began
            print(
                f"{label}: {done:,}/{count:,} memories, {done / elapsed:,.0f}/s, "
                f"~{(count - done) * elapsed / done:,.0f} s to go",
                file=sys.stderr,
                flush=True,
            )
        with connections[DATA_PLANE_ALIAS].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM memories_words_vocab")
            (vocabulary_size,) = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM memories_memory")
            (stored,) = cursor.fetchone()
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connections[DATA_PLANE_ALIAS].close()
    total_seconds = time.perf_counter() - began
    path = tenant_database_path(tenant["id"])
    words = corpus.words()
    known = {
        *(word for topic in words["topics"].values() for part in topic.values() for word in part),
        *words["customers"],
        *words["projects"],
        *words["people"],
    }
    return {
        "tenant": tenant,
        "plan": plan,
        "path": str(path),
        "file_mb": path.stat().st_size / 1024 / 1024,
        "memories": stored,
        "provider": provider.name,
        "seconds": total_seconds,
        "rows_seconds": rows_seconds,
        "embed_store_seconds": embed_store_seconds,
        "embed_seconds": provider.seconds,
        "words": words,
        "document_frequency": {word: frequency[word] for word in known if frequency[word]},
        "vocabulary_size": vocabulary_size,
    }


def search_sql(tenant_id: str, queries: list[str], limit: int = 10) -> dict[str, Any]:
    """The SQL of memories.search.keyword_hits, captured as the engine runs it, and each query's
    MATCH expression (memories.search.query_terms + fts_expression)."""
    from django.db import connections

    from memories import search
    from memories.services import MemoryFilters
    from memories.tenant_db import DATA_PLANE_ALIAS

    captured: list[tuple[str, list[Any]]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append((sql, list(params or [])))
        return execute(sql, params, many, context)

    expressions = [search.fts_expression([[t] for t in search.query_terms(q)]) for q in queries]
    with bind_tenant_database(tenant_id):
        connection = connections[DATA_PLANE_ALIAS]
        with connection.execute_wrapper(capture):
            search.keyword_hits(
                [[t] for t in search.query_terms(queries[0])],
                search.filter_clause(MemoryFilters()),
                limit,
            )
        connection.close()
    sql, params = next((s, p) for s, p in captured if "memories_fts MATCH" in s)
    if params[0] != expressions[0] or params[-1] != limit:
        raise RuntimeError(f"unexpected parameters of the keyword SQL: {params!r}")
    return {
        # Django's SQLite cursor turns %s into ? the same way.
        "sql": sql.replace("%s", "?"),
        "middle_params": [str(value) for value in params[1:-1]],
        "expressions": expressions,
    }


def setup_load(prefix: str, tenants: int, memories: int) -> dict[str, Any]:
    """`tenants` tenants with an API key each, every one holding `memories` memories: one
    tenant file is generated (load_search_corpus) and copied over each new tenant's file."""
    import shutil

    from django.db import connections

    from memories.tenant_db import DATA_PLANE_ALIAS, tenant_database_path

    golden = load_search_corpus(prefix, "golden", memories)
    began = time.perf_counter()
    setup = setup_tenants(f"{prefix}-load", 1, tenants, keys=True)
    connections[DATA_PLANE_ALIAS].close()
    source = Path(golden["path"])
    for row in setup["tenants"]:
        target = tenant_database_path(row["id"])
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(source, target)
    frequency = golden["document_frequency"]
    from memories.models import Memory

    with bind_tenant_database(golden["tenant"]["id"]):
        live_ids = list(Memory.objects.live().values_list("id", flat=True))
    connections[DATA_PLANE_ALIAS].close()
    return {
        "ids": live_ids,
        "tenants": setup["tenants"],
        "memories": golden["memories"],
        "file_mb": golden["file_mb"],
        "load_seconds": golden["seconds"],
        "setup_seconds": time.perf_counter() - began,
        # Query words: present in 0.5-20% of the memories (neither noise nor everywhere).
        "words": sorted(
            word
            for word, count in frequency.items()
            if 0.005 * golden["memories"] <= count <= 0.2 * golden["memories"]
        ),
    }


COMMANDS = {
    "setup-tenants": setup_tenants,
    "setup-load": setup_load,
    "load-search-corpus": load_search_corpus,
    "search-sql": search_sql,
}


def main() -> None:
    command = sys.argv[1]
    arguments = json.loads(sys.stdin.read() or "{}")
    result = COMMANDS[command](**arguments)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
