"""Thin Celery tasks: explicit names, ids as arguments, idempotent bodies that call a service.
Their schedule is CELERY_BEAT_SCHEDULE in config/settings.py."""

from celery import shared_task

from . import audit, maintenance

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
    audit.claims_audit(sample_size=sample_size)
    audit.purchases_unviewed_audit()
