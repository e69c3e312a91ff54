"""Evidence cannot move (issue 20, SPEC 7): a product's site and SKU are fixed once it exists,
each notification keeps the product name it was shown under, and the audit raises an alarm on
an event or notification whose site is not its product's (a product moved behind the ORM's back).
"""

import logging
import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from notifications import audit
from notifications.models import AuditAlarm, Event, ImmutableFieldError, Notification, Product
from notifications.services import products_upsert
from notifications.tasks import claims_audit_task
from tests.factories import ProductFactory, SiteFactory
from tests.test_audit_text import log, purchases

pytestmark = pytest.mark.django_db


@pytest.fixture
def product():
    return ProductFactory(sku="GADGET-1", name="Old gadget")


@pytest.fixture
def rival():
    return SiteFactory(name="Rival store")


def _stored(product) -> tuple[int, str, str]:
    return Product.objects.filter(pk=product.pk).values_list("site_id", "sku", "name").get()


# --- A product's site and SKU are fixed -----------------------------------------------------


def test_the_model_refuses_to_move_a_product_or_change_its_sku(product, rival):
    original = _stored(product)
    moved = Product.objects.get(pk=product.pk)
    moved.site = rival
    with pytest.raises(ImmutableFieldError, match="site cannot change"):
        moved.save()
    renumbered = Product.objects.get(pk=product.pk)
    renumbered.sku = "GADGET-2"
    with pytest.raises(ImmutableFieldError, match="sku cannot change"):
        renumbered.save()
    # An instance made by hand with an existing pk is checked against the stored row too.
    forged = Product(pk=product.pk, site=rival, sku=product.sku, name="brand-new gadget")
    with pytest.raises(ImmutableFieldError):
        forged.save()
    assert _stored(product) == original


def test_clean_names_the_fixed_field(product, rival):
    moved = Product.objects.get(pk=product.pk)
    moved.site = rival
    moved.sku = "GADGET-2"
    with pytest.raises(ValidationError) as caught:
        moved.full_clean()
    assert {"site", "sku"} <= set(caught.value.message_dict)


def test_renaming_a_product_is_still_allowed(product):
    product.name = "Renamed gadget"
    product.save()
    assert _stored(product)[2] == "Renamed gadget"


def test_the_catalog_upsert_still_updates_by_site_and_sku(product):
    result = products_upsert(
        site=product.site,
        items=[{"sku": "GADGET-1", "name": "Gadget, renamed"}, {"sku": "NEW-1", "name": "New"}],
    )
    assert (result.created, result.updated) == (1, 1)
    assert _stored(product) == (product.site_id, "GADGET-1", "Gadget, renamed")


def _product_form(product, **over) -> dict:
    return {
        "site": product.site_id,
        "sku": product.sku,
        "name": product.name,
        "url": "",
        "category": "",
        "category_kind": "other",
        **over,
    }


def test_the_product_admin_ignores_a_posted_site_or_sku_and_still_renames(superuser_client, product, rival):
    url = reverse("admin:notifications_product_change", args=[product.pk])
    page = superuser_client.get(url).content.decode()
    assert 'name="sku"' not in page and 'name="site"' not in page  # shown read-only
    response = superuser_client.post(
        url, _product_form(product, site=rival.pk, sku="GADGET-2", name="brand-new gadget (launched today)")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _stored(product) == (product.site_id, "GADGET-1", "brand-new gadget (launched today)")
    # A new product still chooses both.
    add = superuser_client.post(
        reverse("admin:notifications_product_add"), _product_form(product, sku="NEW-2")
    )
    assert add.status_code == 302
    assert Product.objects.filter(site=product.site, sku="NEW-2").exists()


def _inline_form(site, rows: list[dict], *, initial: int) -> dict:
    data = {
        "name": site.name,
        "allowed_origins": site.allowed_origins,
        "is_active": "on",
        "purchases_from": site.purchases_from,
        "secrets-TOTAL_FORMS": "0",
        "secrets-INITIAL_FORMS": "0",
        "products-TOTAL_FORMS": str(len(rows)),
        "products-INITIAL_FORMS": str(initial),
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"products-{index}-{key}"] = value
    return data


def test_the_site_pages_product_rows_keep_their_sku_and_new_rows_set_one(superuser_client, product):
    site = product.site
    url = reverse("admin:notifications_site_change", args=[site.pk])
    page = superuser_client.get(url).content.decode()
    sku_input = re.search(r'<input[^>]*name="products-0-sku"[^>]*>', page).group(0)
    assert "disabled" in sku_input
    assert "disabled" not in re.search(r'<input[^>]*name="products-__prefix__-sku"[^>]*>', page).group(0)
    rows = [
        {
            "id": product.pk,
            "site": site.pk,
            "sku": "GADGET-2",
            "name": "Renamed in the inline",
            "category": "",
            "category_kind": "other",
            "url": "",
        },
        {"site": site.pk, "sku": "INLINE-NEW", "name": "Added inline", "category_kind": "other"},
    ]
    response = superuser_client.post(url, _inline_form(site, rows, initial=1))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert _stored(product) == (site.pk, "GADGET-1", "Renamed in the inline")
    assert Product.objects.filter(site=site, sku="INLINE-NEW").exists()


# --- Each notification keeps the name it was shown under ------------------------------------


def test_why_shows_the_name_the_claim_was_shown_under_after_a_rename(client, product):
    purchases(product, 5)
    row = log(product)
    assert row.product_name == "Old gadget"
    Product.objects.filter(pk=product.pk).update(name="brand-new gadget (launched today)")
    page = client.get(reverse("why", args=[row.public_id])).content.decode()
    assert "<strong>Old gadget</strong>" in page
    assert "The product is now called <strong>brand-new gadget (launched today)</strong>" in page
    # The audit's re-render of the text does not depend on the name.
    assert audit.text_check(Notification.objects.get(pk=row.pk)) is None
    assert audit.claims_audit().alarms == 0


def test_why_says_nothing_about_a_rename_that_did_not_happen(client, product):
    purchases(product, 3)
    row = log(product)
    page = client.get(reverse("why", args=[row.public_id])).content.decode()
    assert "<strong>Old gadget</strong>" in page and "now called" not in page


def test_a_rename_starts_a_new_log_row_for_the_same_claim(product):
    purchases(product, 3)
    first = log(product)
    product.name = "Renamed gadget"
    product.save()
    product.refresh_from_db()
    second = log(product)
    assert first.pk != second.pk
    assert (first.product_name, second.product_name) == ("Old gadget", "Renamed gadget")


def test_the_admins_notification_list_shows_the_kept_name(superuser_client, product):
    purchases(product, 3)
    log(product)
    Product.objects.filter(pk=product.pk).update(name="Newer name")
    page = superuser_client.get(reverse("admin:notifications_notification_changelist")).content.decode()
    assert "Old gadget" in page


def test_the_migration_fills_existing_rows_from_the_current_name(product):
    from importlib import import_module

    from django.apps import apps

    purchases(product, 3)
    row = log(product)
    Notification.objects.filter(pk=row.pk).update(product_name="")
    migration = import_module("notifications.migrations.0013_notification_product_name")
    migration.product_names_fill(apps, None)
    assert Notification.objects.get(pk=row.pk).product_name == "Old gadget"


# --- The audit: an event or notification whose site is not its product's --------------------


def test_a_product_moved_behind_the_orms_back_raises_an_alarm_per_event_once(
    superuser_client, product, rival, caplog
):
    purchases(product, 5)
    honest = ProductFactory(site=rival)
    purchases(honest, 2)
    row = log(product)
    assert audit.site_mismatch_audit() == audit.SiteMismatchResult(events=0, notifications=0)
    # What an attacker with a console does: QuerySet.update skips Product.save.
    Product.objects.filter(pk=product.pk).update(site=rival)
    with caplog.at_level(logging.ERROR, logger="notifications.audit"):
        found = audit.site_mismatch_audit()
    assert found == audit.SiteMismatchResult(events=5, notifications=1)
    moved = set(Event.objects.filter(product=product).values_list("pk", flat=True))
    alarmed = set(AuditAlarm.objects.filter(event__isnull=False).values_list("event_id", flat=True))
    assert alarmed == moved  # every event of the moved product, none of the honest one's
    assert AuditAlarm.objects.get(notification=row).reason == audit.SITE_MISMATCH_NOTIFICATION
    assert f"product {product.pk} is on site {rival.pk} but 5 of its events" in caplog.text
    # Idempotent: a second run adds nothing.
    assert audit.site_mismatch_audit() == audit.SiteMismatchResult(events=0, notifications=0)
    assert AuditAlarm.objects.count() == 6
    page = superuser_client.get(reverse("admin:notifications_auditalarm_changelist")).content.decode()
    assert page.count("the event&#x27;s site differs from its product&#x27;s site") == 5
    assert "The audit raised 6 alarm(s)" in page


def test_the_site_audit_is_one_query_per_table_and_a_bulk_insert(
    product, rival, django_assert_max_num_queries
):
    purchases(product, 20)
    Product.objects.filter(pk=product.pk).update(site=rival)
    with django_assert_max_num_queries(3):
        assert audit.site_mismatch_audit().events == 20


def test_the_site_audit_takes_at_most_its_limit_per_run(product, rival):
    purchases(product, 7)
    Product.objects.filter(pk=product.pk).update(site=rival)
    assert audit.site_mismatch_audit(limit=4).events == 4
    assert audit.site_mismatch_audit(limit=4).events == 3
    assert audit.site_mismatch_audit(limit=4).events == 0


def test_the_claims_audit_task_runs_the_site_audit(product, rival, caplog):
    purchases(product, 3)
    Product.objects.filter(pk=product.pk).update(site=rival)
    with caplog.at_level(logging.INFO, logger="notifications.tasks"):
        claims_audit_task.apply()
    assert AuditAlarm.objects.filter(event__product=product).count() == 3
    assert "3 event(s) and 0 notification(s) whose site is not their product's" in caplog.text
