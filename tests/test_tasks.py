"""The periodic tasks: rollups, retention purge, presence sweep and the claims audit. Each is
idempotent (run twice, the second run changes nothing) and the audit runs on a real worker."""

import datetime as dt
import itertools
import time

import pytest
import redis
from django.utils import timezone

from config.celery import app
from notifications import audit, maintenance, metrics
from notifications.models import AuditAlarm, Conversion, Event, Exposure, HourlyRollup, Notification
from notifications.policy import decide, policy_default
from notifications.presence import KEY_PREFIX
from notifications.services import notification_log_record
from notifications.tasks import claims_audit_task
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db
_keys = itertools.count()


@pytest.fixture
def product():
    return ProductFactory()


def record(product, kind, *, at, order="", visitor="", **over):
    return Event.objects.create(
        site=product.site,
        product=product,
        kind=kind,
        source="server" if kind != "add_to_cart" else "browser",
        occurred_at=at,
        received_at=at,
        order_id=order,
        visitor_hash=visitor,
        verified=kind != "add_to_cart",
        idempotency_key=f"t-{next(_keys)}",
        **over,
    )


def test_rollups_count_each_hour_and_a_second_run_changes_nothing(product):
    now = timezone.now()
    hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    record(product, "purchase", at=hour + dt.timedelta(minutes=5), order="a", quantity=3)
    record(product, "purchase", at=hour + dt.timedelta(minutes=9), order="b")
    record(product, "purchase", at=hour + dt.timedelta(minutes=9), order="t", is_test=True)
    record(product, "add_to_cart", at=hour + dt.timedelta(minutes=1), visitor="v1")
    record(product, "add_to_cart", at=hour + dt.timedelta(minutes=2), visitor="v1")
    record(product, "add_to_cart", at=hour + dt.timedelta(minutes=3), visitor="bot", is_bot=True)
    maintenance.rollups_build(hours=2, now=now)
    first = {
        (r.kind, r.hour): (r.events, r.visitors, r.orders)
        for r in HourlyRollup.objects.filter(product=product)
    }
    assert first == {("purchase", hour): (2, 0, 2), ("add_to_cart", hour): (2, 1, 0)}
    maintenance.rollups_build(hours=2, now=now)
    again = {
        (r.kind, r.hour): (r.events, r.visitors, r.orders)
        for r in HourlyRollup.objects.filter(product=product)
    }
    assert again == first and HourlyRollup.objects.count() == 2


def test_retention_purge_removes_only_what_is_past_retention(product, settings):
    settings.CANDOR_RETENTION_DAYS = 90
    now = timezone.now()
    old = record(product, "purchase", at=now - dt.timedelta(days=91), order="old")
    kept = record(product, "purchase", at=now - dt.timedelta(days=89), order="kept")
    assert maintenance.retention_purge(now=now) == 1
    assert maintenance.retention_purge(now=now) == 0
    assert list(Event.objects.values_list("id", flat=True)) == [kept.pk]
    assert not Event.objects.filter(pk=old.pk).exists()


def test_retention_purge_takes_the_experiment_rows_with_the_ledger(product, settings):
    settings.CANDOR_RETENTION_DAYS = 90
    now = timezone.now()
    for days, order in ((91, "old"), (89, "kept")):
        at = now - dt.timedelta(days=days)
        Conversion.objects.create(site=product.site, order_id=order, visitor_hash="a" * 32, occurred_at=at)
        Exposure.objects.create(
            site=product.site,
            product=product,
            visitor_hash="a" * 32,
            segment="S",
            arm=order,
            started_at=at,
            ended_at=at,
            outcome="held_out",
        )
    maintenance.retention_purge(now=now)
    assert list(Conversion.objects.values_list("order_id", flat=True)) == ["kept"]
    assert list(Exposure.objects.values_list("arm", flat=True)) == ["kept"]


def test_presence_sweep_drops_ghosts_no_process_holds(redis_url, settings):
    client = redis.Redis.from_url(redis_url)
    past_ms = int(time.time() * 1000) - 1000
    client.zadd(f"{KEY_PREFIX}424242", {"ghost|socket": past_ms, "alive|socket": past_ms + 600_000})
    client.zadd(f"{KEY_PREFIX}site:7", {"ghost|socket": past_ms})
    assert maintenance.presence_sweep() == 1
    assert maintenance.presence_sweep() == 0
    assert client.zrange(f"{KEY_PREFIX}424242", 0, -1) == [b"alive|socket"]
    assert client.zcard(f"{KEY_PREFIX}site:7") == 0
    client.close()


def _log(product, metric, *, templates=(), context=None):
    """Decide and log as the streaming round does (streaming.py passes the same fields)."""
    decision = decide(metric=metric, policy=policy_default(), templates=templates, context=context)
    public_id = notification_log_record(
        site_id=product.site_id,
        product_id=product.pk,
        product_name=product.name,
        kind=decision.kind,
        text=decision.text,
        claim=decision.claim,
        true_value=decision.true_value,
        evidence=decision.evidence,
        policy_version=decision.policy_version,
        template_text=decision.template,
        locale=decision.language,
        recipient_count=1,
    )
    return Notification.objects.get(public_id=public_id)


def test_the_audit_passes_claims_the_ledger_backs(product):
    now = timezone.now()
    for n in range(4):
        record(product, "purchase", at=now - dt.timedelta(minutes=10 + n), order=f"o{n}")
    recent = _log(product, metrics.recent_purchase(product_id=product.pk, at=timezone.now()))
    counted = _log(product, metrics.purchases_in_window(product_id=product.pk, at=timezone.now())[0])
    assert counted.claim["displayed"] == "4"
    result = audit.claims_audit()
    assert (result.checked, result.alarms) == (2, 0)
    recent.refresh_from_db()
    assert recent.audited_at is not None


def test_the_audit_alarms_on_a_claim_the_ledger_does_not_back(product, admin_client):
    now = timezone.now()
    test_order = record(product, "purchase", at=now - dt.timedelta(minutes=3), order="t", is_test=True)
    for n in range(3):
        record(product, "purchase", at=now - dt.timedelta(minutes=20), order=f"o{n}")
    # Rows as a bug (or a forger with database access) might write them.
    forged_recent = Notification.objects.create(
        site=product.site,
        product=product,
        kind="recent_purchase",
        text="Someone bought this 3 minutes ago",
        claim={"metric": "recent_purchase", "window_s": 3600, "displayed": "3"},
        true_value=180,
        window_s=3600,
        evidence={"event_ids": [test_order.pk], "computed_at": now.isoformat()},
        policy_version="default-1",
    )
    inflated = Notification.objects.create(
        site=product.site,
        product=product,
        kind="purchases_in_window",
        text="Ordered 9 times in the last 24 hours",
        claim={"metric": "purchases_in_window", "window_s": 86400, "displayed": "9"},
        true_value=9,
        window_s=86400,
        evidence={"computed_at": now.isoformat()},
        policy_version="default-1",
    )
    result = audit.claims_audit()
    assert (result.checked, result.alarms) == (2, 2)
    alarms = {a.notification_id: a for a in AuditAlarm.objects.all()}
    assert alarms[forged_recent.pk].reason == "the evidence is not a verified purchase"
    assert (alarms[inflated.pk].claimed, alarms[inflated.pk].recomputed) == ("9", "3")
    # A second run re-checks nothing and adds no alarm.
    assert audit.claims_audit() == audit.AuditResult(checked=0, alarms=0)
    assert AuditAlarm.objects.count() == 2
    page = admin_client.get("/admin/notifications/notification/")
    assert b"does not back" in page.content and b"ALARM" in page.content


@pytest.mark.django_db(transaction=True)
def test_the_audit_runs_on_a_real_worker_over_redis(redis_url, product):
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    inflated = Notification.objects.create(
        site=product.site,
        product=product,
        kind="purchases_in_window",
        text="Ordered 5 times in the last 24 hours",
        claim={"metric": "purchases_in_window", "window_s": 86400, "displayed": "5"},
        true_value=5,
        window_s=86400,
        evidence={"computed_at": timezone.now().isoformat()},
        policy_version="default-1",
    )
    app.conf.update(broker_url=redis_url, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            claims_audit_task.delay()
            claims_audit_task.delay()  # twice: still one alarm
            deadline = time.monotonic() + 15
            while not AuditAlarm.objects.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
    finally:
        app.conf.update(
            broker_url=settings.CELERY_BROKER_URL, task_always_eager=settings.CELERY_TASK_ALWAYS_EAGER
        )
    assert list(AuditAlarm.objects.values_list("notification_id", flat=True)) == [inflated.pk]
