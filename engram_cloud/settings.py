"""Engram Cloud settings: one module, every value from the environment.

The embedded default (nothing set but DEBUG) needs no servers: an SQLite control plane and
tenant files under ENGRAM_DATA_DIR, an in-process cache. Production sets DATABASE_URL,
REDIS_URL, SECRET_KEY, API_KEY_PEPPER, ALLOWED_HOSTS and ENGRAM_BASE_DOMAIN.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    """A string from the environment, or from the file named by NAME_FILE (for secrets)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-only-secret-key-do-not-use-in-production"

# API keys are stored as HMAC-SHA256(pepper, key). Changing the pepper invalidates every key.
API_KEY_PEPPER = env_str("API_KEY_PEPPER")
if not API_KEY_PEPPER:
    if not DEBUG:
        raise ImproperlyConfigured("API_KEY_PEPPER must be set when DEBUG is off.")
    API_KEY_PEPPER = "insecure-development-only-pepper"

ENGRAM_DATA_DIR = (BASE_DIR / env_str("ENGRAM_DATA_DIR", "data")).resolve()
ENGRAM_DATA_DIR.mkdir(parents=True, exist_ok=True)
ENGRAM_BASE_DOMAIN = env_str("ENGRAM_BASE_DOMAIN", "localhost").lower().strip(".")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS",
    ["127.0.0.1", "localhost", "[::1]", "testserver"] if DEBUG else [],
)
# Tenants are addressed as {slug}.{ENGRAM_BASE_DOMAIN}.
ALLOWED_HOSTS += [ENGRAM_BASE_DOMAIN, f".{ENGRAM_BASE_DOMAIN}"]
# The names under the base domain that serve the console and the admin, like the base domain
# itself; every other host under it serves only the API (tenants.middleware.serves_api_only).
ENGRAM_CONSOLE_SUBDOMAINS = env_list(
    "ENGRAM_CONSOLE_SUBDOMAINS", ["www", "app", "console", "admin"]
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "django_ratelimit",
    "djstripe",
    "tenants",
    "billing",
    "memories",
    "mcp",
    "backups",
]

MIDDLEWARE = [
    "engram_cloud.middleware.RequestIdMiddleware",
    # Right after the request id, so it times (and logs) nearly everything, refusals included.
    "engram_cloud.observability.RequestObservabilityMiddleware",
    # The API host guard: hosts under ENGRAM_BASE_DOMAIN (a tenant's {slug}.…, api.…) serve
    # only the API (/v1, /mcp, /health, /ready); the console, /admin/ and /metrics answer 404
    # there. The base domain and ENGRAM_CONSOLE_SUBDOMAINS under it serve everything.
    "tenants.middleware.ApiHostGuardMiddleware",
    "engram_cloud.middleware.BodySizeLimitMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "engram_cloud.middleware.TenantUnavailableMiddleware",
    "tenants.middleware.TenantApiMiddleware",
]

ROOT_URLCONF = "engram_cloud.urls"
WSGI_APPLICATION = "engram_cloud.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases -------------------------------------------------------------------------------
# `default` is the control plane. `memories` is the data plane: one alias whose backend opens
# the SQLite file of the tenant bound to the current context (memories.tenant_db).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{ENGRAM_DATA_DIR / 'control.db'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    ),
    "memories": {
        "ENGINE": "memories.db_backend",
        # The file is chosen per request; NAME is only a label for messages.
        "NAME": "tenant-bound",
        # Kept open across requests of the same tenant; closed before another tenant is bound.
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": env_int("ENGRAM_SQLITE_BUSY_TIMEOUT_SECONDS", 5),
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
        },
        "TEST": {"NAME": "tenant-bound"},
    },
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
DATABASE_ROUTERS = ["memories.routers.TenantDatabaseRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenants.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Console: sessions, email, sign-in throttling ------------------------------------------------
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "console:home"
LOGOUT_REDIRECT_URL = "landing"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Password reset and invite mails; the console backend prints them (set EMAIL_BACKEND and
# EMAIL_HOST... for real delivery).
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Engram Cloud <no-reply@engram.cloud>")
# django-ratelimit rates for sign-in, sign-up and password reset, per client IP and per account
# (the email typed), counted in the default cache.
ENGRAM_ACCOUNT_RATE_PER_IP = env_str("ENGRAM_ACCOUNT_RATE_PER_IP", "20/m")
ENGRAM_ACCOUNT_RATE_PER_ACCOUNT = env_str("ENGRAM_ACCOUNT_RATE_PER_ACCOUNT", "5/m")
# The embedded default's cache is per process: its limits hold per process (django-ratelimit
# warns about that; with REDIS_URL they are shared).
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]
# Behind a proxy: the META key (e.g. HTTP_X_REAL_IP) of the header holding the client's
# address; its last entry is used (tenants.console.accounts.client_ip), else the connection's.
ENGRAM_CLIENT_IP_META_KEY = env_str("RATELIMIT_IP_META_KEY")
RATELIMIT_IP_META_KEY = "tenants.console.accounts.client_ip"

# --- Cache -------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
else:
    # Room for every tenant's counters: the default (300 entries) would evict them past a
    # hundred tenants and send each request back to the rollups.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": env_int("ENGRAM_LOCAL_CACHE_ENTRIES", 50_000)},
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- API ---------------------------------------------------------------------------------------
ENGRAM_MAX_BODY_BYTES = env_int("ENGRAM_MAX_BODY_BYTES", 5 * 1024 * 1024)
ENGRAM_IMPORT_MAX_BODY_BYTES = env_int("ENGRAM_IMPORT_MAX_BODY_BYTES", 50 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = ENGRAM_IMPORT_MAX_BODY_BYTES
ENGRAM_KEY_ROTATION_GRACE_SECONDS = env_int("ENGRAM_KEY_ROTATION_GRACE_SECONDS", 24 * 3600)
# With REDIS_URL, each process keeps an API key's principal this long at most; a revocation or
# suspension reaches every process on the next request anyway (tenants/key_cache.py). 0: off.
ENGRAM_KEY_CACHE_SECONDS = env_int("ENGRAM_KEY_CACHE_SECONDS", 5)
ENGRAM_DAILY_TTL_SECONDS = env_int("ENGRAM_DAILY_TTL_SECONDS", 24 * 3600)

# --- CORS: browsers may call the API only from the origins configured here ---------------------
CORS_ALLOWED_ORIGINS = env_list("ENGRAM_CORS_ALLOWED_ORIGINS", [])
CORS_URLS_REGEX = r"^/(v1/.*|mcp)$"
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "x-api-key",
    "x-request-id",
    "x-engram-tenant",
    "idempotency-key",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
]
CORS_EXPOSE_HEADERS = ["X-Request-Id", "RateLimit", "RateLimit-Policy", "Retry-After"]

# --- Plans, quotas and usage ----------------------------------------------------------------------
# Where a 402 `quota_exceeded` sends people; `{slug}` becomes the tenant's slug.
ENGRAM_UPGRADE_URL = env_str("ENGRAM_UPGRADE_URL", "/console/w/{slug}/billing")
# The embedded default flushes buffered usage events from each process this often (0: never;
# with REDIS_URL the Celery beat task flushes instead).
ENGRAM_USAGE_FLUSH_SECONDS = env_int("ENGRAM_USAGE_FLUSH_SECONDS", 5)
# With Redis, each process sends its requests' usage events to Redis this often, in one round
# trip, instead of one trip per request (an event waits at most this long in the process).
ENGRAM_USAGE_SEND_MS = env_int("ENGRAM_USAGE_SEND_MS", 50)
# Off: /v1 requests skip rate limiting, quota checks and metering (the gateway stages of
# tenants.middleware). For benchmarks (bench/gateway.py) and emergencies; on in production.
ENGRAM_GATEWAY_ENABLED = env_bool("ENGRAM_GATEWAY_ENABLED", True)
# Off: requests are rate limited and quota-checked but not metered (bench/gateway.py).
ENGRAM_METERING_ENABLED = env_bool("ENGRAM_METERING_ENABLED", True)

# --- Billing (Stripe through dj-stripe) ---------------------------------------------------------
# No STRIPE_SECRET_KEY: billing is off; every tenant stays on Free or the plan staff set.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_PUBLISHABLE_KEY = env_str("STRIPE_PUBLISHABLE_KEY")
# The signing secret of the webhook endpoint (`whsec_…`); `manage.py stripe_webhook_endpoint`
# stores it on dj-stripe's WebhookEndpoint row, which is what verifies the signatures.
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
# Tests point the SDK at a local fake Stripe; unset in production.
STRIPE_API_BASE = env_str("STRIPE_API_BASE")
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# After a failed payment the tenant keeps its plan this many days, then drops to Free.
ENGRAM_BILLING_GRACE_DAYS = env_int("ENGRAM_BILLING_GRACE_DAYS", 7)
# Stripe Billing Meter event names usage is reported under.
ENGRAM_STRIPE_METER_API_CALLS = env_str("ENGRAM_STRIPE_METER_API_CALLS", "engram_api_calls")
ENGRAM_STRIPE_METER_SEARCHES = env_str("ENGRAM_STRIPE_METER_SEARCHES", "engram_searches")
ENGRAM_STRIPE_METER_MEMORIES = env_str("ENGRAM_STRIPE_METER_MEMORIES", "engram_memories_created")

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or "memory://"
# No broker in the embedded default: a task called there runs at once, in the caller.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BEAT_SCHEDULE = {
    "flush-usage": {"task": "billing.tasks.flush_usage", "schedule": 10.0},
    "end-billing-grace": {"task": "billing.tasks.end_billing_grace", "schedule": 3600.0},
    "report-usage-to-stripe": {"task": "billing.tasks.report_usage_to_stripe", "schedule": 3600.0},
    "reconcile-stripe-usage": {"task": "billing.tasks.reconcile_stripe_usage", "schedule": 86400.0},
    "back-up-changed-tenants": {
        "task": "backups.tasks.back_up_changed_tenants",
        "schedule": float(env_int("ENGRAM_BACKUP_INTERVAL_SECONDS", 3600)),
    },
    "back-up-all-tenants": {
        "task": "backups.tasks.back_up_all_tenants",
        "schedule": crontab(minute=0, hour=env_int("ENGRAM_BACKUP_DAILY_HOUR_UTC", 3)),
    },
    "prune-backups": {"task": "backups.tasks.prune_backups", "schedule": 3600.0},
    "purge-expired-memories": {"task": "memories.tasks.purge_expired_memories", "schedule": 3600.0},
}

# --- Backups and exports (backups/) -------------------------------------------------------------
# Where backups and exports are stored: the local filesystem (ENGRAM_DATA_DIR/objects) unless a
# bucket is set, then S3 or any S3-compatible store (R2: set the endpoint URL).
ENGRAM_STORAGE_BUCKET = env_str("ENGRAM_STORAGE_BUCKET")
ENGRAM_STORAGE_ENDPOINT_URL = env_str("ENGRAM_STORAGE_ENDPOINT_URL")
ENGRAM_STORAGE_REGION = env_str("ENGRAM_STORAGE_REGION", "auto")
ENGRAM_STORAGE_ACCESS_KEY_ID = env_str("ENGRAM_STORAGE_ACCESS_KEY_ID")
ENGRAM_STORAGE_SECRET_ACCESS_KEY = env_str("ENGRAM_STORAGE_SECRET_ACCESS_KEY")


def _s3_transfer_config() -> object:
    from boto3.s3.transfer import TransferConfig  # imported only when a bucket is configured

    return TransferConfig(max_concurrency=2)


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "backups": (
        {
            "BACKEND": "backups.s3.S3BackupStorage",
            "OPTIONS": {
                "bucket_name": ENGRAM_STORAGE_BUCKET,
                "endpoint_url": ENGRAM_STORAGE_ENDPOINT_URL or None,
                "region_name": ENGRAM_STORAGE_REGION,
                "access_key": ENGRAM_STORAGE_ACCESS_KEY_ID or None,
                "secret_key": ENGRAM_STORAGE_SECRET_ACCESS_KEY or None,
                "default_acl": None,
                "file_overwrite": False,
                # Bounded memory (bench/backup.py): downloads spill to disk past 8 MiB (the
                # default keeps a whole file in memory), two 8 MiB parts in flight at once.
                # Backups themselves are streamed (backups/s3.py).
                "max_memory_size": 8 * 1024 * 1024,
                "transfer_config": _s3_transfer_config(),
            },
        }
        if ENGRAM_STORAGE_BUCKET
        else {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": ENGRAM_DATA_DIR / "objects"},
        }
    ),
}
# The key-encryption key wrapping each backup's random data key: 32 bytes, base64. Losing it
# loses every backup; changing it makes older backups unreadable. Unset with DEBUG off:
# backups and restores refuse to run (the rest of the service does).
ENGRAM_BACKUP_KEY = env_str("ENGRAM_BACKUP_KEY") or (
    "ZGV2ZWxvcG1lbnQtb25seS1iYWNrdXAta2V5LTMyYiE=" if DEBUG else ""
)
# The frequent pass backs up tenants changed since their last backup; the daily pass all.
ENGRAM_BACKUP_INTERVAL_SECONDS = env_int("ENGRAM_BACKUP_INTERVAL_SECONDS", 3600)
ENGRAM_BACKUP_DAILY_HOUR_UTC = env_int("ENGRAM_BACKUP_DAILY_HOUR_UTC", 3)
# Kept by the pruning task: the newest backup of each of the last N hours, days and weeks.
ENGRAM_BACKUP_KEEP_HOURLY = env_int("ENGRAM_BACKUP_KEEP_HOURLY", 24)
ENGRAM_BACKUP_KEEP_DAILY = env_int("ENGRAM_BACKUP_KEEP_DAILY", 14)
ENGRAM_BACKUP_KEEP_WEEKLY = env_int("ENGRAM_BACKUP_KEEP_WEEKLY", 8)
# A restore's maintenance marker expires after this long, even if the restore was killed.
ENGRAM_RESTORE_MAX_SECONDS = env_int("ENGRAM_RESTORE_MAX_SECONDS", 900)

# --- JWT (console users and SDKs) ---------------------------------------------------------------
# Tokens are verified against the identity provider's JWKS; unset URL = JWTs are refused.
ENGRAM_JWT_JWKS_URL = env_str("ENGRAM_JWT_JWKS_URL")
ENGRAM_JWT_ISSUER = env_str("ENGRAM_JWT_ISSUER")
ENGRAM_JWT_AUDIENCE = env_str("ENGRAM_JWT_AUDIENCE", "engram-cloud")
ENGRAM_JWT_EMAIL_CLAIM = env_str("ENGRAM_JWT_EMAIL_CLAIM", "email")
ENGRAM_JWT_LEEWAY_SECONDS = env_int("ENGRAM_JWT_LEEWAY_SECONDS", 60)
ENGRAM_JWT_JWKS_TIMEOUT_SECONDS = env_int("ENGRAM_JWT_JWKS_TIMEOUT_SECONDS", 5)

# --- Search ------------------------------------------------------------------------------------
ENGRAM_EMBEDDING_PROVIDER = env_str("ENGRAM_EMBEDDING_PROVIDER", "hashed")  # hashed|minilm|openai
ENGRAM_HASHED_EMBEDDING_DIMENSION = env_int("ENGRAM_HASHED_EMBEDDING_DIMENSION", 256)
ENGRAM_OPENAI_EMBEDDINGS_URL = env_str("ENGRAM_OPENAI_EMBEDDINGS_URL")
ENGRAM_OPENAI_EMBEDDINGS_MODEL = env_str("ENGRAM_OPENAI_EMBEDDINGS_MODEL")
ENGRAM_OPENAI_EMBEDDINGS_API_KEY = env_str("ENGRAM_OPENAI_EMBEDDINGS_API_KEY")
ENGRAM_OPENAI_EMBEDDINGS_DIMENSION = env_int("ENGRAM_OPENAI_EMBEDDINGS_DIMENSION", 0)
ENGRAM_OPENAI_EMBEDDINGS_TIMEOUT_SECONDS = env_int("ENGRAM_OPENAI_EMBEDDINGS_TIMEOUT_SECONDS", 10)
# Longest a keyword query may run before it is cut short.
ENGRAM_SEARCH_TIME_BUDGET_MS = env_int("ENGRAM_SEARCH_TIME_BUDGET_MS", 250)
# Vectors of recently searched tenants kept in memory, per process.
ENGRAM_VECTOR_CACHE_MB = env_int("ENGRAM_VECTOR_CACHE_MB", 128)
# Tenant files each thread keeps open between requests, least recently used closed first
# (memories/db_backend/base.py): a tenant's next request skips opening its file.
ENGRAM_OPEN_TENANT_FILES = env_int("ENGRAM_OPEN_TENANT_FILES", 1000)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.PrincipalAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasRequiredScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["engram_cloud.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "engram_cloud.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": [],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Engram Cloud API",
    "DESCRIPTION": "Hosted memory for AI agents: store memories and find them again.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/v1",
    "ENUM_NAME_OVERRIDES": {"MemoryType": "memories.models.MemoryType"},
    # Every operation also lists its error answers (the one envelope): engram_cloud.openapi.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "engram_cloud.openapi.error_responses",
    ],
}

# --- Logging and metrics ------------------------------------------------------------------------
# Every line is one JSON object (engram_cloud.observability.JsonFormatter), tracebacks included.
# Django's own loggers lose their plain-text handlers and go through the root logger instead;
# Python's warnings become log records too.
LOGGING_CONFIG = "engram_cloud.observability.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "engram_cloud.observability.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json"},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": [], "propagate": True},
        "py.warnings": {"handlers": [], "propagate": True},
        "django.request": {"level": "ERROR"},
        # runserver's access lines repeat the request log, with query strings: dropped.
        "django.server": {"handlers": ["null"], "propagate": False},
        # One line per request, whatever LOG_LEVEL says.
        "engram.requests": {"level": "INFO"},
    },
}
# GET /metrics needs `Authorization: Bearer <token>`; unset = only direct loopback callers.
ENGRAM_METRICS_TOKEN = env_str("ENGRAM_METRICS_TOKEN")

# --- Production hardening (on whenever DEBUG is off) --------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Health probes and metric scrapes come over plain HTTP from inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
