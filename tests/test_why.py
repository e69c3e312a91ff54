"""`/why/<public id>`: ids nobody can walk, pages search engines do not keep, and purchase claims
that say where their purchases came from (SPEC 2.6, 5 and 7)."""

import datetime as dt
import re

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from notifications import metrics
from notifications.models import Event, Notification, PolicyConfig, PolicyVariant, SegmentConfig
from notifications.services import policy_save
from tests.factories import ProductFactory, SiteFactory, site_policy_set
from tests.test_api_server_events import purchase, send
from tests.test_api_webhooks import SHOPIFY_SECRET, shopify, shopify_order
from tests.test_tasks import _log

pytestmark = pytest.mark.django_db

PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{22,}")
SERVER_CAVEAT = (
    "The store's own server signs its reports with the store's secret key, so no one else can send "
    "them, but no platform checks them: they are only as truthful as the store."
)


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


def _text(response) -> str:
    """The page's words, tags dropped and whitespace collapsed (Django escapes apostrophes)."""
    page = response.content.decode().replace("&#x27;", "'")
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


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


@pytest.fixture
def shop(client):
    """One product with three orders reported by the store's signed API and two paid orders
    delivered by a verified Shopify webhook."""
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET)
    ipod = ProductFactory(site=site, sku="IPOD2008GREEN")
    for n in range(3):
        payload = purchase(ipod, event_id=f"evt-{n}", order_id=f"S-{n}", items=[{"product": ipod.sku}])
        assert send(client, payload, site=site).status_code == 202
    for n in range(2):
        order = shopify_order(id=880_000 + n, financial_status="paid")
        assert shopify(client, site, "orders/create", order, delivery=f"d-{n}").status_code == 200
    assert sorted(Event.objects.filter(kind="purchase").values_list("source", flat=True)) == [
        "server",
        "server",
        "server",
        "shopify",
        "shopify",
    ]
    return ipod


def test_why_says_where_counted_purchases_came_from(client, shop):
    notification = _log(shop, metrics.purchases_in_window(product_id=shop.pk, at=timezone.now())[0])
    assert notification.claim["displayed"] == "5"
    response = client.get(f"/why/{notification.public_id}")
    assert response.status_code == 200
    text = _text(response)
    assert "Reported by the store's own server (signed API): 3 orders." in text
    assert "Verified by Shopify: 2 orders." in text
    assert SERVER_CAVEAT in text
    assert "WooCommerce: " not in text
    assert response["Content-Security-Policy"].startswith("default-src 'none';")


def test_why_names_the_source_of_a_recent_purchase(client, shop):
    # The newest purchase is a Shopify one: no caveat about the store's own reports.
    Event.objects.filter(source="server").update(occurred_at=timezone.now() - dt.timedelta(minutes=50))
    notification = _log(shop, metrics.recent_purchase(product_id=shop.pk, at=timezone.now()))
    text = _text(client.get(f"/why/{notification.public_id}"))
    assert "Verified by Shopify: 1 order." in text
    assert "Reported by the store's own server" not in text and SERVER_CAVEAT not in text


def test_provenance_counts_only_this_products_purchases(client, shop):
    """Evidence naming another product's purchase, or a non-purchase, never adds to a source."""
    other = ProductFactory(site=shop.site)
    elsewhere = Event.objects.create(
        site=shop.site,
        product=other,
        kind="purchase",
        source="woocommerce",
        occurred_at=timezone.now(),
        order_id="W-1",
        verified=True,
    )
    notification = _log(shop, metrics.purchases_in_window(product_id=shop.pk, at=timezone.now())[0])
    evidence = {**notification.evidence, "event_ids": [*notification.evidence["event_ids"], elsewhere.pk]}
    Notification.objects.filter(pk=notification.pk).update(evidence=evidence)
    text = _text(client.get(f"/why/{notification.public_id}"))
    assert "WooCommerce" not in text
    assert "Verified by Shopify: 2 orders." in text


PLAIN_MEANING = {
    "viewing_now": (
        30,
        "3",
        "The number of people other than you with this page open in the last 30 seconds.",
    ),
    "recent_purchase": (
        3600,
        "12",
        "Minutes since the most recent verified order of this product, rounded down.",
    ),
    "purchases_in_window": (86_400, "5", "The number of orders of this product in the last 24 hours."),
    "add_to_cart_in_window": (
        86_400,
        "4",
        "Shoppers who added this to their cart in the last 24 hours, at most two per network address.",
    ),
}


@pytest.mark.parametrize("kind", sorted(PLAIN_MEANING))
def test_why_says_what_the_number_is_in_plain_words_without_internal_names(client, product, kind):
    """An experiment arm's policy decided the claim: the page states its rules in plain words and
    names neither the arm, nor the policy version, nor the kind."""
    default = site_policy_set(product.site, segment_name="Everyone", min_count=3)
    arm = policy_save(
        policy=PolicyConfig(
            site=product.site,
            name="cap 50",
            cap_viewing_now=50,
            cap_purchases_in_window=50,
            cap_add_to_cart_in_window=50,
            rounding_step=5,
        )
    )
    PolicyVariant.objects.create(segment=SegmentConfig.objects.get(policy=default), policy=arm, share_pct=50)
    window_s, displayed, meaning = PLAIN_MEANING[kind]
    notification = _viewing(
        product,
        kind=kind,
        claim={"metric": kind, "window_s": window_s, "displayed": displayed},
        window_s=window_s,
        policy_version=arm.version_label,
    )
    response = client.get(f"/why/{notification.public_id}")
    text = _text(response)
    assert meaning in text
    for internal in (
        arm.version_label,
        arm.name,
        default.name,
        "Policy version",
        "variant",
        "experiment",
        kind,
    ):
        assert internal not in text, internal
    if kind == "recent_purchase":
        assert "rounded down to whole minutes" in text
    else:
        assert "Above 50 the number is shown as “50+”." in text
        assert "rounded down to a multiple of 5" in text and "37 is shown as “35+”" in text
        assert "Nothing is shown below a true count of 3" in text
    # Still the strict CSP, still not for search engines.
    assert response["Content-Security-Policy"].startswith("default-src 'none';")
    assert response["X-Robots-Tag"] == "noindex"
    assert '<meta name="robots" content="noindex">' in response.content.decode()


def test_a_viewing_claim_has_no_purchase_provenance(client, product):
    text = _text(client.get(f"/why/{_viewing(product).public_id}"))
    assert "Where the orders came from" not in text and SERVER_CAVEAT not in text


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_notifications_distinct_random_ids():
    """0009 runs on a database that already holds notifications (and an audit alarm naming one):
    every row gets its own fresh public id."""
    before = ("notifications", "0008_per_address_and_provenance")
    after = ("notifications", "0009_notification_public_id")
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
