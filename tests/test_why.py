"""`/why/<public id>`: ids nobody can walk, pages search engines do not keep (SPEC 2.6, 5 and 7)."""

import re

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from notifications.models import Notification
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{22,}")


@pytest.fixture
def product():
    return ProductFactory()


def _viewing(product, **over) -> Notification:
    fields = {
        "site": product.site,
        "product": product,
        "kind": "viewing_now",
        "text": "3 other people are viewing this",
        "claim": {"metric": "viewing_now", "window_s": 30, "displayed": "3"},
        "true_value": 3,
        "window_s": 30,
        "evidence": {"distinct_visitors": 4, "recipient_excluded": 1},
        "policy_version": "default",
    }
    return Notification.objects.create(**{**fields, **over})


def test_every_notification_gets_its_own_random_public_id(product):
    rows = [_viewing(product, text=f"{n} other people are viewing this") for n in range(3, 23)]
    ids = [row.public_id for row in Notification.objects.filter(pk__in=[r.pk for r in rows])]
    assert all(PUBLIC_ID.fullmatch(public_id) for public_id in ids), ids
    assert len(set(ids)) == len(ids)
    field = Notification._meta.get_field("public_id")
    assert field.unique and not field.editable


def test_why_answers_on_the_public_id_and_an_integer_url_is_404(client, product):
    notification = _viewing(product)
    assert client.get(f"/why/{notification.public_id}").status_code == 200
    # The row's integer id, its neighbours and a made-up id of the right shape are all unknown.
    for guess in (notification.pk, notification.pk + 1, 1, 17, "A" * 22):
        assert client.get(f"/why/{guess}").status_code == 404, guess


def test_why_pages_are_noindex_under_the_strict_csp(client, product):
    response = client.get(f"/why/{_viewing(product).public_id}")
    assert response["X-Robots-Tag"] == "noindex"
    assert '<meta name="robots" content="noindex">' in response.content.decode()
    assert response["Content-Security-Policy"].startswith("default-src 'none';")
    assert "script-src" not in response["Content-Security-Policy"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_notifications_distinct_random_ids():
    """0008 runs on a database that already holds notifications (and an audit alarm naming one):
    every row gets its own fresh public id."""
    before, after = ("notifications", "0007_experiments"), ("notifications", "0008_notification_public_id")
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate([before])
    try:
        apps = MigrationExecutor(connection).loader.project_state([before]).apps
        site = apps.get_model("notifications", "Site").objects.create(name="Old", public_key="pk_old")
        product = apps.get_model("notifications", "Product").objects.create(site=site, sku="s", name="S")
        old = apps.get_model("notifications", "Notification")
        rows = [
            old.objects.create(
                site=site,
                product=product,
                kind="viewing_now",
                text=f"{n} other people are viewing this",
                claim={"metric": "viewing_now", "window_s": 30, "displayed": str(n)},
                true_value=n,
                window_s=30,
                evidence={},
                policy_version="default",
            )
            for n in range(3, 8)
        ]
        apps.get_model("notifications", "AuditAlarm").objects.create(
            notification=rows[0], reason="r", claimed="3", recomputed="2"
        )
        executor = MigrationExecutor(connection)
        executor.migrate([after])
        new = executor.loader.project_state([after]).apps.get_model("notifications", "Notification")
        ids = list(new.objects.values_list("public_id", flat=True))
        assert len(ids) == 5 and len(set(ids)) == 5
        assert all(PUBLIC_ID.fullmatch(public_id) for public_id in ids), ids
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(leaves)
