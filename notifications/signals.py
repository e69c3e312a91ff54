"""Process caches dropped by the models themselves, so no caller has to remember to.

The policy catalog (`selectors.policy_catalog_get`) and the widget's site lookups
(`selectors.widget_target_get` and the beacon's) are cached per process for a few seconds. A
save or delete of a row they are built from, however it is made (the admin, the operator CLI, a
service, a shell), drops them in this process at once. Other processes (the streaming servers,
when the admin runs elsewhere) see the change when their entries expire, within the caches' TTL:
checking a shared version stamp on every page message would put a Redis round trip back on the
hot path that the cache exists to keep off it.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .models import MessageTemplate, PolicyConfig, PolicySnapshot, PolicyVariant, SegmentConfig, Site
from .selectors import policy_catalogs_forget, widget_targets_forget

# Every row `selectors.policy_catalog_build` reads (a Site carries the holdout share).
CATALOG_MODELS = (PolicyConfig, PolicySnapshot, SegmentConfig, PolicyVariant, MessageTemplate, Site)
# A site's origins and active flag are part of every widget lookup.
TARGET_MODELS = (Site,)


def catalog_changed(**_kwargs) -> None:
    # Now, so the rest of this transaction reads the change; and again after commit, so a
    # catalog another thread rebuilt from the rows before the commit is not kept for a TTL.
    policy_catalogs_forget()
    transaction.on_commit(policy_catalogs_forget)


def site_changed(**_kwargs) -> None:
    widget_targets_forget()
    transaction.on_commit(widget_targets_forget)


def signals_connect() -> None:
    for model in CATALOG_MODELS:
        for signal in (post_save, post_delete):
            signal.connect(catalog_changed, sender=model, dispatch_uid=f"candor-catalog-{model.__name__}")
    for model in TARGET_MODELS:
        for signal in (post_save, post_delete):
            signal.connect(site_changed, sender=model, dispatch_uid=f"candor-targets-{model.__name__}")
