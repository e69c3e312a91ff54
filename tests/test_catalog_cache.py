"""The policy catalog cache is dropped by the models' own signals (signals.py), however a row
changes: no caller has to remember a `…_forget()`."""

import inspect

import pytest

from notifications import admin as candor_admin
from notifications import services
from notifications.models import MessageTemplate, PolicyConfig, PolicyVariant, SegmentConfig
from notifications.selectors import policy_catalog_get
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


def _policy(site, name: str, **fields) -> PolicyConfig:
    return services.policy_save(policy=PolicyConfig(site=site, name=name, **fields))


def test_an_orm_change_is_seen_by_the_next_catalog_read_in_the_same_process():
    site = SiteFactory()
    shipped = policy_catalog_get(site.pk)  # cached now
    policy = _policy(site, "cap 10", cap_viewing_now=10)
    segment = SegmentConfig.objects.create(site=site, name="Everyone", is_default=True, policy=policy)
    catalog = policy_catalog_get(site.pk)
    assert catalog is not shipped
    assert [s.name for s in catalog.segments] == ["Everyone"]
    assert catalog.segments[0].policy.display_caps["viewing_now"] == 10

    # A plain ORM update of the policy row (no service, no admin) is seen too.
    policy.cap_viewing_now = 12
    policy.save()
    assert policy_catalog_get(site.pk).segments[0].policy.display_caps["viewing_now"] == 12

    wide = _policy(site, "cap 50", cap_viewing_now=50)
    PolicyVariant.objects.create(segment=segment, policy=wide, share_pct=50)
    assert policy_catalog_get(site.pk).segments[0].variants[0][1] == 50

    MessageTemplate.objects.create(
        site=site, kind="viewing_now", tier=1, locale="en", text="{count} other people are looking"
    )
    assert len(policy_catalog_get(site.pk).templates) == 1

    site.holdout_pct = 20
    site.save(update_fields=["holdout_pct"])
    assert policy_catalog_get(site.pk).holdout_pct == 20

    PolicyVariant.objects.filter(segment=segment).delete()
    assert policy_catalog_get(site.pk).segments[0].variants == ()
    segment.delete()
    assert [s.name for s in policy_catalog_get(site.pk).segments] != ["Everyone"]


def test_an_unrelated_read_keeps_its_cached_catalog():
    site = SiteFactory()
    first = policy_catalog_get(site.pk)
    assert policy_catalog_get(site.pk) is first


def test_no_caller_drops_the_catalog_cache_by_hand():
    for module in (candor_admin, services):
        assert "_forget" not in inspect.getsource(module), module.__name__
