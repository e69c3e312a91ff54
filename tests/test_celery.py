"""Celery: in-process in the embedded default, and through a real worker on the Redis broker."""

import datetime as dt
import time

import pytest
from django.utils import timezone

from config.celery import app
from notifications.models import DailySalt
from notifications.tasks import salts_rotate_task


@pytest.mark.django_db
def test_the_beat_schedule_names_registered_tasks():
    from django.conf import settings

    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


@pytest.mark.django_db(transaction=True)
def test_salt_rotation_runs_on_a_real_worker_over_redis(redis_url):
    from celery.contrib.testing.worker import start_worker

    old_day = timezone.now().date() - dt.timedelta(days=5)
    DailySalt.objects.create(day=old_day, salt="00" * 32)
    app.conf.update(broker_url=redis_url, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            salts_rotate_task.delay()
            deadline = time.monotonic() + 15
            while DailySalt.objects.filter(day=old_day).exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        from django.conf import settings

        app.conf.update(
            broker_url=settings.CELERY_BROKER_URL, task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER
        )
    assert not DailySalt.objects.filter(day=old_day).exists()
    assert DailySalt.objects.filter(day=timezone.now().date()).exists()


def test_the_worker_refuses_a_broker_that_evicts(redis_url, tmp_path):
    """SPEC 6 / issue 9: the broker must use `noeviction`. The machine's Redis does; a private
    redis-server started with an evicting policy is refused."""
    import socket
    import subprocess

    import pytest

    from config.celery import BrokerEvicts, broker_policy_check

    assert broker_policy_check(redis_url) == "noeviction"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "allkeys-lru",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with pytest.raises(BrokerEvicts, match="noeviction"):
            broker_policy_check(f"redis://127.0.0.1:{port}/0")
    finally:
        server.terminate()
        server.wait(timeout=10)
