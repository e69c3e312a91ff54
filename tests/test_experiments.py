"""Experiments end to end (SPEC 4): visitor tokens, attribution of verified purchases, exposure
rows per page view, the results, and the admin dashboard with its CSV."""

import datetime as dt
import hashlib
import json
import random

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from notifications.experiments import HOLDOUT, arm_assign, experiment_results
from notifications.identity import visitor_hash_compute, visitor_token_make, visitor_token_read
from notifications.models import Conversion, Event, IngestRefusal, PolicyConfig, PolicyVariant
from notifications.policy.decision import Policy
from notifications.policy.segments import Segment, SegmentRule
from notifications.services import exposures_record, policy_save
from tests.factories import DEMO_ORIGIN, ProductFactory, SiteFactory, site_policy_set
from tests.test_api_server_events import purchase, send
from tests.test_api_webhooks import SHOPIFY_SECRET, shopify, shopify_order

pytestmark = pytest.mark.django_db

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture
def product():
    return ProductFactory()


def token_for(client, site, *, ua=BROWSER, origin=DEMO_ORIGIN, **headers):
    return client.post(
        "/api/v1/visitor-token",
        json.dumps({"key": site.public_key}),
        content_type="application/json",
        HTTP_ORIGIN=origin,
        HTTP_USER_AGENT=ua,
        **headers,
    )


# --- Visitor tokens -------------------------------------------------------------------------


def test_a_token_names_the_visitor_and_differs_on_every_call(client, product):
    site = product.site
    first, second = token_for(client, site), token_for(client, site)
    assert first.status_code == second.status_code == 200
    assert first["Access-Control-Allow-Origin"] == DEMO_ORIGIN and first["Cache-Control"] == "no-store"
    a, b = first.json()["token"], second.json()["token"]
    assert a != b, "two tokens of one shopper must not match (no identifier for the store)"
    expected = visitor_hash_compute(site_id=site.pk, ip="127.0.0.1", user_agent=BROWSER)
    assert visitor_token_read(a, site_id=site.pk) == visitor_token_read(b, site_id=site.pk) == expected
    assert expected not in a and first.json()["expires_in_s"] == 86400


def test_no_token_under_gpc_or_for_a_bot(client, product):
    assert token_for(client, product.site, HTTP_SEC_GPC="1").json() == {"token": None}
    assert token_for(client, product.site, ua="Googlebot/2.1").json() == {"token": None}


@pytest.mark.parametrize(
    ("body", "origin", "status", "code"),
    [
        ({"key": "pk_nope"}, DEMO_ORIGIN, 404, "unknown_site"),
        (None, "https://evil.example", 403, "forbidden_origin"),
        ({"key": 5}, DEMO_ORIGIN, 400, "malformed"),
        ({"key": "k", "visitor": "x"}, DEMO_ORIGIN, 400, "malformed"),
    ],
)
def test_token_requests_that_are_refused(client, product, body, origin, status, code):
    payload = json.dumps(body if body is not None else {"key": product.site.public_key})
    response = client.post(
        "/api/v1/visitor-token",
        payload,
        content_type="application/json",
        HTTP_ORIGIN=origin,
        HTTP_USER_AGENT=BROWSER,
    )
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert IngestRefusal.objects.filter(endpoint="visitor_token", code=code).exists()


def test_a_token_is_bound_to_its_site_and_expires_after_24_hours(product):
    other = ProductFactory()
    token = visitor_token_make(site_id=product.site.pk, visitor_hash="a" * 32)
    assert visitor_token_read(token, site_id=other.site.pk) is None
    later = timezone.now() + dt.timedelta(hours=24, minutes=1)
    assert visitor_token_read(token, site_id=product.site.pk, now=later) is None
    assert visitor_token_read(token[:-4] + "AAAA", site_id=product.site.pk) is None
    assert visitor_token_read("not a token", site_id=product.site.pk) is None


# --- Attribution ----------------------------------------------------------------------------


def test_a_purchase_with_a_token_is_attributed_to_that_visitor(client, product):
    token = token_for(client, product.site).json()["token"]
    response = send(client, purchase(product, visitor_token=token), site=product.site)
    assert response.status_code == 202 and response.json()["attribution"] == "recorded"
    conversion = Conversion.objects.get()
    assert conversion.order_id == "order-1"
    assert conversion.visitor_hash == visitor_hash_compute(
        site_id=product.site.pk, ip="127.0.0.1", user_agent=BROWSER
    )
    # A repeat of the order changes nothing.
    again = send(client, purchase(product, visitor_token=token, event_id="evt-2"), site=product.site)
    assert again.json()["duplicate"] is True and Conversion.objects.count() == 1


def test_a_bad_token_keeps_the_purchase_drops_the_attribution_and_is_counted(client, product):
    other_site_token = visitor_token_make(site_id=ProductFactory().site.pk, visitor_hash="b" * 32)
    response = send(client, purchase(product, visitor_token=other_site_token), site=product.site)
    assert response.status_code == 202 and response.json()["attribution"] == "refused"
    assert Event.objects.filter(kind="purchase").count() == 1 and not Conversion.objects.exists()
    assert IngestRefusal.objects.get(code="bad_visitor_token").count == 1


def test_a_token_that_is_not_a_string_is_422_and_changes_nothing(client, product):
    response = send(client, purchase(product, visitor_token=["x"]), site=product.site)
    assert response.status_code == 422 and response.json()["error"]["field"] == "visitor_token"
    assert not Event.objects.exists() and not Conversion.objects.exists()


def test_a_test_order_is_never_a_conversion(client, product):
    token = token_for(client, product.site).json()["token"]
    send(client, purchase(product, visitor_token=token, test=True), site=product.site)
    assert not Conversion.objects.exists()


def test_a_shopify_order_carries_the_token_as_a_note_attribute(client):
    site = SiteFactory(shopify_secret=SHOPIFY_SECRET)
    ProductFactory(site=site, sku="IPOD2008GREEN")
    token = token_for(client, site).json()["token"]
    order = shopify_order(note_attributes=[{"name": "candor_visitor_token", "value": token}])
    response = shopify(client, site, "orders/paid", order)
    assert response.status_code == 200 and response.json()["attribution"] == "recorded"
    assert Conversion.objects.get().order_id == str(order["id"])


# --- Results --------------------------------------------------------------------------------


def _hash(n: int) -> str:
    return hashlib.sha256(f"visitor {n}".encode()).hexdigest()[:32]


def _exposure(site, product, visitor, *, arm, at, outcome="shown", intensity=12, segment="Everyone"):
    return {
        "site_id": site.pk,
        "product_id": product.pk,
        "visitor_hash": visitor,
        "segment": segment,
        "arm": arm,
        "policy_version": "v",
        "started_at": at,
        "ended_at": at + dt.timedelta(seconds=30),
        "outcome": outcome,
        "reason": "" if outcome == "shown" else "HELD_OUT",
        "toasts": int(outcome == "shown"),
        "intensity": intensity if outcome == "shown" else 0,
    }


def _order(site, product, order_id, *, at, visitor):
    Event.objects.create(
        site=site,
        product=product,
        kind="purchase",
        source="server",
        occurred_at=at,
        order_id=order_id,
        verified=True,
    )
    Conversion.objects.create(site=site, order_id=order_id, visitor_hash=visitor, occurred_at=at)


def test_results_count_exactly_what_the_ledger_and_exposures_hold(product):
    """A simulated experiment whose truth is known row by row: the counts must match it exactly."""
    site = product.site
    site.holdout_pct = 20
    site.save()
    rng = random.Random(7)
    start = timezone.now() - dt.timedelta(hours=6)
    rows, truth = [], {HOLDOUT: [0, 0], "moderate": [0, 0]}
    for n in range(400):
        visitor = _hash(n)
        arm = HOLDOUT if n % 5 == 0 else "moderate"
        at = start + dt.timedelta(seconds=n)
        outcome = "held_out" if arm == HOLDOUT else "shown"
        rows.append(_exposure(site, product, visitor, arm=arm, at=at, outcome=outcome))
        second_page = at + dt.timedelta(minutes=5)
        rows.append(_exposure(site, product, visitor, arm=arm, at=second_page, outcome=outcome))
        truth[arm][0] += 1
        if rng.random() < (0.10 if arm == HOLDOUT else 0.20):
            _order(site, product, f"o{n}", at=at + dt.timedelta(minutes=20), visitor=visitor)
            truth[arm][1] += 1
    # Not conversions: bought before the first exposure, after the window, refunded.
    _order(site, product, "early", at=start - dt.timedelta(minutes=1), visitor=_hash(1))
    late_visitor = _hash(2)
    _order(site, product, "late", at=start + dt.timedelta(hours=25), visitor=late_visitor)
    refunded = next(n for n in range(400) if Conversion.objects.filter(visitor_hash=_hash(n)).exists())
    order_id = Conversion.objects.get(visitor_hash=_hash(refunded), order_id__startswith="o").order_id
    Event.objects.create(
        site=site,
        kind="refund",
        source="server",
        occurred_at=timezone.now(),
        order_id=order_id,
        verified=True,
    )
    truth[HOLDOUT if refunded % 5 == 0 else "moderate"][1] -= 1
    assert exposures_record(rows) == 800

    results = experiment_results(site=site, until=timezone.now() + dt.timedelta(days=2))
    got = {a.arm: [a.counts.visitors, a.counts.conversions] for a in results.arms}
    assert got == truth
    assert [results.overall_shown.visitors, results.overall_shown.conversions] == truth["moderate"]
    assert [results.overall_holdout.visitors, results.overall_holdout.conversions] == truth[HOLDOUT]
    moderate = next(a for a in results.arms if a.arm == "moderate")
    (comparison,) = moderate.comparisons
    assert comparison.control == HOLDOUT
    assert comparison.absolute == pytest.approx(truth["moderate"][1] / 320 - truth[HOLDOUT][1] / 80)
    assert comparison.absolute_interval.covers(comparison.absolute)
    # The curve: held-out visitors saw nothing (bin "0"); the rest saw 12 (bin "10–19").
    curve = {p.label: p.counts.visitors for p in results.curve}
    assert curve == {"0": 80, "10–19": 320}


def test_a_variant_is_compared_with_the_holdout_and_with_the_segment_s_own_policy(product):
    site = product.site
    base = site_policy_set(site, cap_viewing_now=10)
    variant = policy_save(policy=PolicyConfig(site=site, name="cap 50", cap_viewing_now=50))
    PolicyVariant.objects.create(segment=base.segments.get(), policy=variant, share_pct=50)
    at = timezone.now() - dt.timedelta(hours=1)
    rows = [
        _exposure(
            site, product, _hash(n), arm=[HOLDOUT, base.name, "cap 50"][n % 3], at=at, segment="Everyone"
        )
        for n in range(30)
    ]
    exposures_record(rows)
    results = experiment_results(site=site)
    arms = {a.arm: [c.control for c in a.comparisons] for a in results.arms}
    assert arms == {HOLDOUT: [], base.name: [HOLDOUT], "cap 50": [HOLDOUT, base.name]}


# --- The dashboard --------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("owner", "owner@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_the_dashboard_shows_arms_lifts_intervals_and_the_curve(admin_client, product):
    site = product.site
    site.holdout_pct = 20
    site.save()
    at = timezone.now() - dt.timedelta(hours=2)
    rows = []
    for n in range(200):
        arm = HOLDOUT if n % 5 == 0 else "moderate"
        rows.append(
            _exposure(
                site, product, _hash(n), arm=arm, at=at, outcome="held_out" if arm == HOLDOUT else "shown"
            )
        )
        if n % 7 == 0:
            _order(site, product, f"o{n}", at=at + dt.timedelta(minutes=3), visitor=_hash(n))
    exposures_record(rows)
    page = admin_client.get(reverse("admin:candor_experiment", args=[site.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for text in (
        "holdout",
        "moderate",
        "95% interval",
        "absolute lift",
        "still needed",
        "reactance curve",
        "<svg",
    ):
        assert text in html, text
    assert html.count('class="candor-chart"') == 2  # arms, and the curve
    for n in range(200):
        assert _hash(n) not in html  # aggregates only
    csv = admin_client.get(
        reverse("admin:candor_experiment_csv", args=[site.pk]) + "?days=7"
    ).content.decode()
    assert csv.startswith("\ufeff")  # so spreadsheets read it as UTF-8
    rows = [line.split(",") for line in csv.lstrip("\ufeff").strip().splitlines()]
    assert rows[0][:8] == [
        "since",
        "until",
        "table",
        "segment",
        "group",
        "visitor_days",
        "conversions",
        "rate",
    ]
    assert any(row[2:6] == ["arm", "Everyone", "moderate", "160"] for row in rows), rows
    assert any(row[2:6] == ["curve", "Everyone", "0", "40"] for row in rows)
    assert not any(_hash(n) in csv for n in range(200))
    change = admin_client.get(reverse("admin:notifications_site_change", args=[site.pk])).content.decode()
    assert "Open the experiment dashboard" in change and "Holdout:" in change


def test_the_dashboard_needs_staff_rights(client, product):
    response = client.get(reverse("admin:candor_experiment", args=[product.site.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_assignment_in_the_socket_matches_the_pure_function():
    """The arm a consumer uses is `arm_assign`'s (the socket tests check the rest end to end)."""
    segment = Segment("S", SegmentRule(), Policy(version="p-1", name="p"))
    visitor = _hash(3)
    assert arm_assign(visitor=visitor, segment=segment, site_holdout_pct=100).held_out
    assert arm_assign(visitor=visitor, segment=segment, site_holdout_pct=0).name == "p"


def _site_form(site, **over):
    data = {
        "name": site.name,
        "allowed_origins": site.allowed_origins,
        "is_active": "on",
        "secrets-TOTAL_FORMS": "0",
        "secrets-INITIAL_FORMS": "0",
        "products-TOTAL_FORMS": "0",
        "products-INITIAL_FORMS": "0",
    }
    data.update(over)
    return data


def test_the_site_page_sets_the_holdout_and_checks_it(admin_client, product):
    site = product.site
    url = reverse("admin:notifications_site_change", args=[site.pk])
    admin_client.post(url, _site_form(site, holdout_pct="15", attribution_window_h="12"))
    site.refresh_from_db()
    assert (site.holdout_pct, site.attribution_window_h) == (15, 12)
    admin_client.post(url, _site_form(site))  # a form without them keeps them
    site.refresh_from_db()
    assert (site.holdout_pct, site.attribution_window_h) == (15, 12)
    for field, value in (("holdout_pct", "150"), ("attribution_window_h", "48")):
        response = admin_client.post(url, _site_form(site, **{field: value}))
        assert response.status_code == 200 and field in response.context["adminform"].form.errors
    site.refresh_from_db()
    assert (site.holdout_pct, site.attribution_window_h) == (15, 12)


def test_variants_of_a_segment_may_not_share_more_than_all_of_it(admin_client, product):
    site = product.site
    base = site_policy_set(site)
    other = policy_save(policy=PolicyConfig(site=site, name="cap 50", cap_viewing_now=50))
    third = policy_save(policy=PolicyConfig(site=site, name="cap 99", cap_viewing_now=99))
    segment = base.segments.get()
    url = reverse("admin:notifications_segmentconfig_change", args=[segment.pk])
    form = {
        "site": site.pk,
        "name": segment.name,
        "order": segment.order,
        "is_default": "on",
        "policy": base.pk,
        "returning": "",
        "variants-TOTAL_FORMS": "2",
        "variants-INITIAL_FORMS": "0",
        "variants-0-policy": other.pk,
        "variants-0-share_pct": "60",
        "variants-1-policy": third.pk,
        "variants-1-share_pct": "60",
    }
    response = admin_client.post(url, form)
    assert response.status_code == 200 and not PolicyVariant.objects.exists()
    form["variants-1-share_pct"] = "40"
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.context["errors"]
    assert sorted(PolicyVariant.objects.values_list("share_pct", flat=True)) == [40, 60]
