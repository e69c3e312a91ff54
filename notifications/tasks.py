"""Thin Celery tasks: explicit names, ids as arguments, idempotent bodies that call a service."""

from celery import shared_task

from .maintenance import salts_rotate


@shared_task(name="candor.salts_rotate", ignore_result=True, autoretry_for=(Exception,), max_retries=3)
def salts_rotate_task() -> None:
    salts_rotate()
