"""A Celery worker SIGKILLed in the middle of a task: the task is delivered again and applied
exactly once (`acks_late` + `reject_on_worker_lost`, config/settings.py).

Real processes: a private redis-server as the broker, `celery -A config worker` (prefork, one
child) on the test database. The task is `candor.rollups_build`; to catch it mid-task the test
holds a row lock on the rollup row the task must rewrite, waits until the worker's database
session is waiting on that lock, then SIGKILLs either the pool child (the parent requeues the
task at once) or the whole worker (the broker delivers the unacknowledged task again once
`CANDOR_CELERY_VISIBILITY_TIMEOUT_S` has passed, to a new worker). Applied once: the rollup
holds the ledger's true counts (not the stale row, so the killed run's work was rolled back and
the task did run again), the task succeeded exactly once, and the broker holds no copy of it."""

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
from django.utils import timezone

from notifications.models import Event, HourlyRollup
from tests.factories import ProductFactory
from tests.servers import (
    ROOT,
    database_url_of_tests,
    log_tail,
    other_sessions_wait_end,
    private_redis_start,
    process_stop,
    server_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
VISIBILITY_TIMEOUT_S = 3
ORDERS = 5


def _until(predicate, timeout_s: float, what: str, log: Path):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s\n{log_tail(log, 80)}")
        time.sleep(0.1)


class Worker:
    def __init__(self, env: dict, log: Path, name: str):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "prefork"]
                + ["--concurrency", "1", "--loglevel", "INFO", "-n", f"{name}@%h"]
                + ["--without-heartbeat", "--without-gossip", "--without-mingle"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _until(lambda: "ready." in self.text() or self.proc.poll() is not None, 60, "worker ready", log)
        assert self.proc.poll() is None, log_tail(log)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]


def _lock_waiters() -> int:
    with psycopg.connect(database_url_of_tests(), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()[0]


@pytest.fixture
def broker(postgres, tmp_path):
    private = private_redis_start(tmp_path)
    yield private
    private.kill()
    other_sessions_wait_end()


@pytest.fixture
def stale_rollup():
    """Five orders last hour in the ledger, and a stale rollup row that the task must rewrite."""
    product = ProductFactory()
    hour = timezone.now().astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(
        hours=1
    )
    for n in range(ORDERS):
        at = hour + dt.timedelta(minutes=10 + n)
        Event.objects.create(
            site=product.site,
            product=product,
            kind="purchase",
            source="server",
            occurred_at=at,
            received_at=at,
            order_id=f"order-{n}",
            verified=True,
            idempotency_key=f"evt-{n}:0",
        )
    row = HourlyRollup.objects.create(
        site=product.site, product=product, hour=hour, kind="purchase", events=999, visitors=0, orders=999
    )
    return row


@pytest.mark.parametrize("kill", ["pool_child", "whole_worker"])
def test_a_worker_killed_mid_task_redelivers_it_and_it_is_applied_once(broker, stale_rollup, tmp_path, kill):
    env = server_env(broker.url, CANDOR_CELERY_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S))
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    workers: list[Worker] = []
    lock = psycopg.connect(database_url_of_tests())
    started = time.monotonic()
    try:
        lock.execute("SELECT id FROM notifications_hourlyrollup WHERE id = %s FOR UPDATE", [stale_rollup.pk])
        workers.append(Worker(env, first_log, "first"))
        sent = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "config", "call", "candor.rollups_build"]
            + ["--kwargs", json.dumps({"hours": 3})],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        task_id = sent.stdout.strip().splitlines()[-1]
        _until(lambda: _lock_waiters() == 1, 30, "the task is running and waits on the locked row", first_log)
        delivered_at = time.monotonic()

        if kill == "pool_child":
            (child,) = workers[0].children()
            os.kill(child, signal.SIGKILL)
            # The parent sees the child die and requeues the task; the new child blocks again.
            _until(lambda: "WorkerLostError" in workers[0].text(), 30, "the parent saw the loss", first_log)
            _until(lambda: _lock_waiters() == 1, 30, "the task was delivered again", first_log)
        else:
            os.killpg(workers[0].proc.pid, signal.SIGKILL)
            workers[0].proc.wait(timeout=10)
            # (Its database session still waits on the lock: PostgreSQL notices the dead client
            # when it next writes to it, and then rolls the killed run's transaction back.)
            client = redis.Redis(port=broker.port)
            try:
                assert client.hlen("unacked") == 1, "the broker still holds the unacknowledged task"
            finally:
                client.close()
        killed_at = time.monotonic()
        lock.rollback()  # let the task through

        if kill == "whole_worker":
            # A new worker restores unacknowledged tasks older than the visibility timeout when it
            # starts (and then in kombu's periodic sweep, every 100 s by default): start it once
            # the timeout has passed, as a supervisor's restart after a crash loop would.
            time.sleep(max(0.0, delivered_at + VISIBILITY_TIMEOUT_S + 0.5 - time.monotonic()))
            workers.append(Worker(env, second_log, "second"))
        log = workers[-1].log

        def done() -> bool:
            return f"Task candor.rollups_build[{task_id}] succeeded" in workers[-1].text()

        _until(done, VISIBILITY_TIMEOUT_S + 30, "the task ran again and succeeded", log)
        redelivered_s = time.monotonic() - killed_at

        stale_rollup.refresh_from_db()
        assert (stale_rollup.events, stale_rollup.orders) == (ORDERS, ORDERS)
        assert HourlyRollup.objects.count() == 1
        succeeded = sum(w.text().count(f"[{task_id}] succeeded") for w in workers)
        assert succeeded == 1
        client = redis.Redis(port=broker.port)
        try:
            assert client.llen("celery") == 0 and client.hlen("unacked") == 0, "a copy is still queued"
        finally:
            client.close()
        print(
            f"{kill} killed: the task ran again and succeeded {redelivered_s:.1f} s after the kill;"
            f" {time.monotonic() - started:.1f} s in all"
        )
    finally:
        lock.close()
        for worker in workers:
            process_stop(worker.proc)
