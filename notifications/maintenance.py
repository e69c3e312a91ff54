"""Periodic upkeep, called by Celery beat (tasks.py); every function is safe to run twice."""

import datetime as dt

from django.conf import settings
from django.utils import timezone

from .identity import salt_cache_drop_before, salt_for_day
from .models import DailySalt


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
