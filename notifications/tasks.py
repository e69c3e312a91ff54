"""Thin Celery tasks: explicit names, ids as arguments, idempotent bodies that call a service.
Their schedule is CELERY_BEAT_SCHEDULE in config/settings.py."""

import logging

from celery import shared_task

from . import audit, maintenance

log = logging.getLogger(__name__)

RETRIES = {"autoretry_for": (Exception,), "max_retries": 3, "retry_backoff": True}


@shared_task(name="candor.salts_rotate", ignore_result=True, **RETRIES)
def salts_rotate_task() -> None:
    maintenance.salts_rotate()


@shared_task(name="candor.rollups_build", ignore_result=True, **RETRIES)
def rollups_build_task(hours: int = 3) -> None:
    maintenance.rollups_build(hours=hours)


@shared_task(name="candor.presence_sweep", ignore_result=True, **RETRIES)
def presence_sweep_task() -> None:
    maintenance.presence_sweep()


@shared_task(name="candor.retention_purge", ignore_result=True, **RETRIES)
def retention_purge_task() -> None:
    maintenance.retention_purge()


@shared_task(name="candor.claims_audit", ignore_result=True, **RETRIES)
def claims_audit_task(sample_size: int = 200) -> None:
    claims = audit.claims_audit(sample_size=sample_size)
    unviewed = audit.purchases_unviewed_audit()
    moved = audit.site_mismatch_audit()
    log.info(
        "claims audit: %d checked, %d alarm(s); %d unviewed signed purchase(s); "
        "%d event(s) and %d notification(s) whose site is not their product's",
        claims.checked,
        claims.alarms,
        unviewed,
        moved.events,
        moved.notifications,
    )
