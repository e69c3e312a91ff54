"""Candor settings: one module, two modes.

Embedded default (nothing set): SQLite file, in-process channel layer, presence and tasks.
Production: `DATABASE_URL` (PostgreSQL) and `REDIS_URL` (presence, fan-out, channel layer,
Celery broker). The two act independently. Every variable is listed in docs/operations.md.
"""

from pathlib import Path

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from .env import BASE_DIR, DATABASE_URL, DEBUG, REDIS_URL, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off.")
    # Only with DJANGO_DEBUG on (the embedded demo); production refuses to start without a key.
    SECRET_KEY = "insecure-embedded-demo-key-never-use-in-production"  # noqa: S105  # nosec B105  # debug only
# Rotating DJANGO_SECRET_KEY: put the old key here (comma-separated) until sessions, signed values
# and the stored secrets (`candor_reencrypt_secrets`) have moved to the new one
# (docs/integrating.md, "Secrets").
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "notifications",
    "storefront_demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

if DATABASE_URL:
    DATABASES = {"default": env.db_url("DATABASE_URL")}
    if env.bool("DJANGO_DB_POOL", default=True):
        # A connection pool per process (psycopg-pool, Django 5.1+). Not persistent connections:
        # under ASGI each request's sync code runs on a thread of its own, so CONN_MAX_AGE > 0
        # leaves one idle connection per finished request thread and exhausts PostgreSQL's
        # max_connections within a second of load (bench/ingest.py found it); without either,
        # every request pays a new connection (≈5 ms of PostgreSQL CPU).
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DJANGO_DB_POOL_MIN", default=2),
            "max_size": env.int("DJANGO_DB_POOL_MAX", default=20),
            "timeout": env.float("DJANGO_DB_POOL_TIMEOUT_S", default=10.0),
        }
        # With a pool, Django checks a connection when it is taken (psycopg-pool's check): after
        # a database restart a pooled connection is dead, and a request would fail on it.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=0)
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("CANDOR_SQLITE_PATH", default=str(BASE_DIR / "db.sqlite3")),
            # The demo's shoppers write concurrently: wait for the lock instead of failing, take
            # it when a transaction starts (no deadlock on upgrade), and let readers go on (WAL).
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# SQLite (the embedded demo) cannot make IngestRefusal's NULLS NOT DISTINCT constraint; there a
# concurrent first refusal of the day may start a second row for its bucket, which the admin
# simply lists twice. PostgreSQL enforces it. W005/W021: see SECURE_HSTS_INCLUDE_SUBDOMAINS below.
SILENCED_SYSTEM_CHECKS = ["models.W047", "security.W005", "security.W021"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
# The shipped notification wording (notifications/policy/decision.py) is translated into these;
# a shopper's locale picks one of them (decision.shopper_language), anything else reads English.
LANGUAGES = [
    ("en", "English"),
    ("de", "Deutsch"),
    ("fr", "Français"),
    ("es", "Español"),
    ("it", "Italiano"),
    ("nl", "Nederlands"),
]
# `python manage.py compilemessages` turns the .po files here into .mo (bin/demo and bin/test run
# it; the .mo files are build output and not committed).
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
try:  # WhiteNoise warns at every start when the folder is missing
    STATIC_ROOT.mkdir(exist_ok=True)
except OSError:
    pass
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the source folders so the embedded demo needs no collectstatic;
# production may run `collectstatic` and leave this on, it only adds a lookup at start.
WHITENOISE_USE_FINDERS = True

# The widget is loaded cross-origin by stores: allow it, and nothing else, from anywhere.
WHITENOISE_ALLOW_ALL_ORIGINS = True

# --- Security (SPEC 5, "Environment") ------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
# Candor is served over TLS in production (a widget on an https store must be): tell browsers so.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
# Whether every subdomain is HTTPS-only, and preload-list submission, are decisions about the
# operator's whole domain that Candor cannot make for them: off unless set (so their two
# deployment-check warnings are silenced below, on purpose).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False) else None
)

# --- Real-time layer -------------------------------------------------------------------
# A burst of connects must not exhaust a pool: redis-py 8 caps a pool at 100 connections
# by default and then raises MaxConnectionsError (docs/conventions.md, "Known traps").
CANDOR_REDIS_MAX_CONNECTIONS = env.int("CANDOR_REDIS_MAX_CONNECTIONS", default=1000)

# Nothing in Candor uses the channel layer today: the widget consumer opts out of it
# (`channel_layer_alias` in consumers.py) and fan-out goes through each process's hub
# (streaming.py), since `group_send` costs 3.6-5.8x more per update. It stays configured because
# SPEC 6 names a channel layer in both modes and Channels' consumers, tests and any future
# consumer (an admin live view, say) expect one; channels-redis is part of the fixed stack.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "max_connections": CANDOR_REDIS_MAX_CONNECTIONS}],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Rate limits and view de-duplication live in the cache: Redis in production, so every
# process shares them; process memory in the embedded default.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "candor:cache",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Candor ------------------------------------------------------------------------------
CANDOR_REDIS_URL = REDIS_URL
CANDOR_PRESENCE_TTL_S = env.int("CANDOR_PRESENCE_TTL_S", default=30)
# Leading-edge coalescing of per-product updates (SPEC 5: at most one a second).
CANDOR_UPDATE_INTERVAL_MS = env.int("CANDOR_UPDATE_INTERVAL_MS", default=1000)
# A socket-holding process freezes its long-lived objects as sockets come and go, and runs one
# full garbage collection every this many seconds (notifications/gcpace.py); 0 turns the pacing
# off (CPython's own schedule: frequent pauses of up to a second at 10,000 sockets).
CANDOR_GC_FULL_S = env.int("CANDOR_GC_FULL_S", default=900)
# Peers whose X-Forwarded-For we believe (IPs or CIDRs). Empty: the socket peer is the client.
CANDOR_TRUSTED_PROXIES = env.list("CANDOR_TRUSTED_PROXIES", default=[])
# SPEC 7, "One address, few visitors": at most this many distinct visitor hashes of one client
# address (IPv4 address, IPv6 /64) count toward `viewing_now`, `shoppers_on_site_now` and the
# distinct shoppers of `add_to_cart_in_window`. Shoppers behind one NAT are undercounted, never
# overcounted; one machine rotating User-Agents adds at most this many.
CANDOR_VISITORS_PER_ADDRESS = env.int("CANDOR_VISITORS_PER_ADDRESS", default=2)
# SPEC 7, "Sockets cost something": open widget sockets per address per process (more: HTTP 429
# at the handshake), and how long a socket may stay open without sending its `page` (then 1008).
CANDOR_SOCKETS_PER_ADDRESS = env.int("CANDOR_SOCKETS_PER_ADDRESS", default=20)
CANDOR_PAGE_TIMEOUT_S = env.float("CANDOR_PAGE_TIMEOUT_S", default=10.0)
# A request header your CDN sets to the visitor's country (e.g. CF-IPCountry); unset = none trusted.
CANDOR_COUNTRY_HEADER = env.str("CANDOR_COUNTRY_HEADER", default="")
# Minimum true count before any aggregate is shown (SPEC 2.7 and 3).
CANDOR_MIN_COUNT = env.int("CANDOR_MIN_COUNT", default=3)
# Browser events: limits per visitor and per client address (`120/m` style rates), and the
# interval within which a visitor's repeated view of one product is one view.
CANDOR_RATE_PER_VISITOR = env.str("CANDOR_RATE_PER_VISITOR", default="120/m")
CANDOR_RATE_PER_IP = env.str("CANDOR_RATE_PER_IP", default="1200/m")
CANDOR_VIEW_DEDUPE_S = env.int("CANDOR_VIEW_DEDUPE_S", default=1800)
# Ledger events older than this are refused on arrival (and purged, with the live engine).
CANDOR_RETENTION_DAYS = env.int("CANDOR_RETENTION_DAYS", default=90)
# Where the demo shop's backend reports orders; empty = the server that served the page.
CANDOR_DEMO_API_BASE = env.str("CANDOR_DEMO_API_BASE", default="")
CANDOR_DEMO_ORIGINS = env.list(
    "CANDOR_DEMO_ORIGINS", default=["http://127.0.0.1:8000", "http://localhost:8000"]
)
# Salts older than this are deleted (SPEC 2.7; issue 3).
CANDOR_SALT_KEEP_H = env.int("CANDOR_SALT_KEEP_H", default=48)

# --- Celery ------------------------------------------------------------------------------
# Embedded default: tasks run in-process, no broker. Production: Redis is the broker.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# With acks_late on Redis, a task whose worker died unacknowledged is delivered again once it has
# been unacknowledged this long (a pool child that dies is requeued at once: reject_on_worker_lost).
# It must exceed the longest task and the longest retry countdown, or a task runs twice meanwhile.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CANDOR_CELERY_VISIBILITY_TIMEOUT_S", default=3600),
}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    # Make today's and tomorrow's salt ahead of time and drop the ones past their keep.
    "salts-rotate": {"task": "candor.salts_rotate", "schedule": 15 * 60.0},
    # Hourly rollups of the last three hours (late events land in their hour).
    "rollups-build": {"task": "candor.rollups_build", "schedule": crontab(minute=5)},
    # Presence of products whose every server process died (live processes prune their own).
    "presence-sweep": {"task": "candor.presence_sweep", "schedule": 60.0},
    "retention-purge": {"task": "candor.retention_purge", "schedule": crontab(hour=3, minute=17)},
    # Re-check a sample of emitted claims against the ledger; alarms show in the admin.
    "claims-audit": {"task": "candor.claims_audit", "schedule": 10 * 60.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}
