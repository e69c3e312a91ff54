"""The two modes come from one settings module and the environment alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'debug': s.DEBUG, 'db': s.DATABASES['default']['ENGINE'], "
    "'layer': s.CHANNEL_LAYERS['default']['BACKEND'], "
    "'hosts': s.CHANNEL_LAYERS['default'].get('CONFIG', {}).get('hosts'), "
    "'eager': s.CELERY_TASK_ALWAYS_EAGER, 'broker': s.CELERY_BROKER_URL, 'ssl': s.SECURE_SSL_REDIRECT}))"
)


def probe(**env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "CANDOR_"))
    }
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    return result


def test_embedded_default_needs_nothing():
    out = probe()
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["debug"] is True
    assert got["db"].endswith("sqlite3")
    assert got["layer"] == "channels.layers.InMemoryChannelLayer"
    assert got["eager"] is True
    assert got["ssl"] is False


def test_production_mode_from_the_environment():
    out = probe(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/candor",
        REDIS_URL="redis://127.0.0.1:6379/0",
        DJANGO_SECRET_KEY="x" * 50,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["debug"] is False
    assert got["db"].endswith("postgresql")
    assert got["layer"] == "channels_redis.core.RedisChannelLayer"
    # The pool is configured past redis-py 8's default cap of 100.
    assert got["hosts"][0]["max_connections"] >= 1000
    assert got["eager"] is False and got["broker"] == "redis://127.0.0.1:6379/0"
    assert got["ssl"] is True


def test_redis_and_database_act_independently():
    got = json.loads(probe(REDIS_URL="redis://127.0.0.1:6379/0").stdout)
    assert got["db"].endswith("sqlite3") and got["layer"].startswith("channels_redis")
    got = json.loads(
        probe(DATABASE_URL="postgres://postgres@127.0.0.1:5432/x", DJANGO_SECRET_KEY="k" * 50).stdout
    )
    assert got["db"].endswith("postgresql") and got["layer"].endswith("InMemoryChannelLayer")


def test_production_refuses_to_start_without_a_secret_key():
    out = probe(DATABASE_URL="postgres://postgres@127.0.0.1:5432/candor")
    assert out.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in out.stderr
