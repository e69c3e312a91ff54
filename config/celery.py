import logging
import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("candor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

log = logging.getLogger(__name__)


class BrokerEvicts(RuntimeError):
    pass


def broker_policy_check(url: str) -> str:
    """The broker's Redis must never evict keys: an evicted queue key is a lost task. Returns the
    policy, or raises BrokerEvicts."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    finally:
        client.close()
    if policy != "noeviction":
        raise BrokerEvicts(
            f"the Celery broker's Redis has maxmemory-policy={policy!r}; set it to 'noeviction' "
            "(an evicted queue key is a lost task)"
        )
    return policy


@worker_init.connect
def _check_broker(**_kwargs) -> None:
    url = app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        broker_policy_check(url)  # refuse to start on an evicting broker
