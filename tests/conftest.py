import os

import pytest
from django.conf import settings

from notifications.consumers import socket_slots
from notifications.identity import salt_cache_clear
from notifications.limits import limits_forget
from notifications.selectors import policy_catalogs_forget, widget_targets_forget

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(service: str, available: bool, how: str) -> None:
    if available:
        return
    message = f"{service} is not configured ({how}); this test needs the real service."
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(f"SKIPPED LOUDLY: {message}")


def _cache_clear():
    """Rate-limit and de-duplication state must not leak between tests. With Redis, delete only
    Candor's keys: REDIS_URL may point at a database with other data in it."""
    from django.core.cache import cache

    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        import redis

        client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
        try:
            keys = list(client.scan_iter("candor:cache:*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.exceptions.ConnectionError:
            pass
        finally:
            client.close()
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    socket_slots.__init__()  # sockets a test's communicators left open hold no slot in the next
    salt_cache_clear()
    widget_targets_forget()
    policy_catalogs_forget()
    limits_forget()
    _cache_clear()
    yield
    salt_cache_clear()
    widget_targets_forget()
    policy_catalogs_forget()


@pytest.fixture
def redis_url():
    """The real Redis from REDIS_URL, with Candor's keys cleared before and after."""
    url = settings.CANDOR_REDIS_URL
    _require("Redis", bool(url), "set REDIS_URL")
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        _require("Redis", False, f"{url} does not answer: {exc}")

    def clear():
        keys = list(client.scan_iter("candor:*", count=1000))
        if keys:
            client.delete(*keys)

    clear()
    yield url
    clear()
    client.close()


@pytest.fixture
def postgres():
    _require(
        "PostgreSQL",
        settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        "set DATABASE_URL=postgres://…",
    )


@pytest.fixture(params=["memory", "redis"])
def realtime_mode(request, settings):
    """Run a socket test on the embedded in-process layer and on the real Redis."""
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    else:
        settings.CANDOR_REDIS_URL = ""
    settings.CANDOR_UPDATE_INTERVAL_MS = 50
    return request.param


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """At the end of the run, end the sessions that worker threads of in-process servers (the hub's
    database calls) still hold on the test database, so pytest-django can drop it cleanly."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = current_database() and pid <> pg_backend_pid()"
                )


@pytest.fixture
def superuser_client(client, db):
    """The admin as a superuser sees it (every store)."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", "root@example.invalid", "pw-123456789")
    client.force_login(user)
    return client
