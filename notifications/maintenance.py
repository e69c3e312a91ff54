"""Periodic upkeep, called by Celery beat (tasks.py); every function is safe to run twice."""

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from .identity import salt_cache_drop_before, salt_for_day
from .models import Conversion, DailySalt, Event, Exposure, HourlyRollup, IngestRefusal, ServerDelivery


def salts_rotate(*, now: dt.datetime | None = None) -> int:
    """Make today's and tomorrow's salts; delete salts older than CANDOR_SALT_KEEP_H.

    Returns how many salts were deleted. Once a day's salt is gone its hashes can no longer be
    linked to a new day's (Plausible's daily salt rotation).
    """
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    salt_for_day(today)
    salt_for_day(today + dt.timedelta(days=1))
    # A day's salt is last used at the end of that day: keep it CANDOR_SALT_KEEP_H past its start.
    oldest_kept = (now - dt.timedelta(hours=settings.CANDOR_SALT_KEEP_H)).astimezone(dt.UTC).date()
    deleted, _ = DailySalt.objects.filter(day__lt=oldest_kept).delete()
    salt_cache_drop_before(oldest_kept)
    return deleted


def rollups_build(*, hours: int = 3, now: dt.datetime | None = None) -> int:
    """Rebuild the hourly rollups of the last `hours` whole hours (late events land in them too).

    Recomputed from the ledger and upserted, so a second run changes nothing. Returns the rows
    written."""
    now = now or timezone.now()
    this_hour = now.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    written = 0
    for back in range(hours, 0, -1):
        start = this_hour - dt.timedelta(hours=back)
        end = start + dt.timedelta(hours=1)
        rows = (
            Event.objects.filter(
                occurred_at__gte=start,
                occurred_at__lt=end,
                product__isnull=False,
                is_bot=False,
                is_test=False,
            )
            .values("site_id", "product_id", "kind")
            .annotate(
                events=Count("id"),
                visitors=Count("visitor_hash", distinct=True, filter=~Q(visitor_hash="")),
                orders=Count("order_id", distinct=True, filter=~Q(order_id="")),
            )
        )
        with transaction.atomic():
            for row in rows:
                HourlyRollup.objects.update_or_create(
                    product_id=row["product_id"],
                    hour=start,
                    kind=row["kind"],
                    defaults={
                        "site_id": row["site_id"],
                        "events": row["events"],
                        "visitors": row["visitors"],
                        "orders": row["orders"],
                        "computed_at": now,
                    },
                )
                written += 1
    return written


def retention_purge(*, now: dt.datetime | None = None, batch: int = 5000) -> int:
    """Delete ledger rows, deliveries, refusal counts, exposures and conversions older than
    CANDOR_RETENTION_DAYS.

    The one path that removes ledger rows (model `delete()` refuses); in batches so no long lock
    is held. Hourly rollups and the notification log (aggregates, no visitor data) are kept.
    Returns the events deleted."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=settings.CANDOR_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(Event.objects.filter(occurred_at__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            break
        count, _ = Event.objects.filter(id__in=ids).delete()
        deleted += count
    ServerDelivery.objects.filter(received_at__lt=cutoff).delete()
    # The experiment's raw rows (visitor hashes) go with the ledger's.
    Exposure.objects.filter(started_at__lt=cutoff).delete()
    Conversion.objects.filter(occurred_at__lt=cutoff).delete()
    IngestRefusal.objects.filter(day__lt=cutoff.date()).delete()
    return deleted


def presence_sweep() -> int:
    """Drop expired presence members everywhere and announce the products that changed.

    Each server process already prunes the products it holds sockets for; this catches the
    products that no live process holds any more (all their processes died)."""
    from .presence import prune_expired
    from .streaming import ledger_changed_now

    changed = prune_expired()
    if changed:
        ledger_changed_now(changed, origin="sweep")  # a presence change: every hub re-reads
    return len(changed)
