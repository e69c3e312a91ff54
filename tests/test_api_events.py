"""`POST /api/v1/events` (SPEC 5): every refusal in order, counted, changing nothing."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.models import Event, IngestRefusal
from tests.factories import DEMO_ORIGIN, ProductFactory, SiteFactory

pytestmark = pytest.mark.django_db

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture
def product():
    return ProductFactory()


def post(client, body, *, origin=DEMO_ORIGIN, content_type="application/json", ua=UA, **extra):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"HTTP_USER_AGENT": ua, **extra}
    if origin:
        headers["HTTP_ORIGIN"] = origin
    return client.post("/api/v1/events", raw, content_type=content_type, **headers)


def good(item, **over):
    return {"key": item.site.public_key, "type": "view", "product": item.sku, **over}


def assert_error(response, status, code, field=None):
    assert response.status_code == status, response.content
    body = response.json()["error"]
    assert body["code"] == code and body["message"]
    if field:
        assert body["field"] == field


def test_a_view_is_accepted_and_recorded(client, product):
    response = post(client, good(product, context={"locale": "en-GB", "email": "a@b.c"}))
    assert response.status_code == 202 and response.json() == {"accepted": True}
    assert response["Access-Control-Allow-Origin"] == DEMO_ORIGIN
    event = Event.objects.get()
    assert (event.kind, event.source, event.verified, event.is_bot) == ("view", "browser", False, False)
    assert event.context == {"locale": "en-gb"}  # lower-cased (ingest.context_clean)
    assert len(event.visitor_hash) == 32


def test_a_repeated_view_is_one_view_but_carts_all_count(client, product):
    for _ in range(3):
        assert post(client, good(product)).status_code == 202
        assert post(client, good(product, type="add_to_cart")).status_code == 202
    assert Event.objects.filter(kind="view").count() == 1
    assert Event.objects.filter(kind="add_to_cart").count() == 3


def test_bots_are_accepted_and_flagged(client, product):
    assert post(client, good(product), ua="Mozilla/5.0 HeadlessChrome/131").status_code == 202
    assert Event.objects.get().is_bot


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [
        ({"content_type": "text/plain"}, 415, "unsupported_media_type", None),
        ({"body": "x" * 9000}, 413, "too_large", None),
        ({"body": "{not json"}, 400, "malformed", None),
        ({"body": "[]"}, 400, "malformed", None),
        ({"drop": "key"}, 400, "malformed", "key"),
        ({"over": {"type": 7}}, 400, "malformed", "type"),
        ({"over": {"context": "x"}}, 400, "malformed", "context"),
        ({"over": {"surprise": 1}}, 400, "malformed", "surprise"),
        ({"over": {"key": "pk_unknown"}}, 404, "unknown_site", "key"),
        ({"origin": "https://evil.example"}, 403, "forbidden_origin", None),
        ({"origin": None}, 403, "forbidden_origin", None),
        ({"over": {"type": "purchase"}}, 403, "forbidden_type", "type"),
        ({"over": {"type": "refund"}}, 403, "forbidden_type", "type"),
        ({"over": {"product": "no-such-sku"}}, 422, "unknown_product", "product"),
    ],
)
def test_refusals_are_clear_counted_and_change_nothing(client, product, kwargs, status, code, field):
    body = good(product, **kwargs.get("over", {}))
    if "drop" in kwargs:
        body.pop(kwargs["drop"])
    body = kwargs.get("body", body)
    response = post(
        client,
        body,
        origin=kwargs.get("origin", DEMO_ORIGIN),
        content_type=kwargs.get("content_type", "application/json"),
    )
    assert_error(response, status, code, field)
    assert Event.objects.count() == 0
    assert IngestRefusal.objects.get(code=code).count == 1


def test_checks_run_in_the_spec_order(client, product):
    # Wrong content type AND too large AND unknown site: 415 answers first.
    assert_error(post(client, "x" * 9000, content_type="text/plain"), 415, "unsupported_media_type")
    # Unknown site AND foreign origin: 404 first.
    assert_error(post(client, good(product, key="pk_x"), origin="https://evil.example"), 404, "unknown_site")
    # Foreign origin AND purchase: 403 forbidden_origin first.
    body = good(product, type="purchase")
    assert_error(post(client, body, origin="https://evil.example"), 403, "forbidden_origin")
    # Purchase AND unknown product: 403 forbidden_type first.
    assert_error(post(client, good(product, type="purchase", product="nope")), 403, "forbidden_type")


def test_another_sites_product_is_unknown(client, product):
    other = ProductFactory()
    assert_error(post(client, good(product, product=other.sku)), 422, "unknown_product")


def test_rate_limit_answers_429_with_retry_after(client, product, settings):
    settings.CANDOR_RATE_PER_VISITOR = "5/m"
    codes = [post(client, good(product, type="add_to_cart")).status_code for _ in range(8)]
    assert codes == [202] * 5 + [429] * 3
    response = post(client, good(product, type="add_to_cart"))
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert Event.objects.count() == 5
    # Another visitor (another browser) is not limited by the first.
    assert post(client, good(product, type="add_to_cart"), ua=UA + " other").status_code == 202


def test_preflight_answers_only_allowed_origins(client, product):
    ok = client.options("/api/v1/events", HTTP_ORIGIN=DEMO_ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert ok.status_code == 204
    assert ok["Access-Control-Allow-Origin"] == DEMO_ORIGIN
    assert "POST" in ok["Access-Control-Allow-Methods"]
    bad = client.options("/api/v1/events", HTTP_ORIGIN="https://evil.example")
    assert_error(bad, 403, "forbidden_origin")
    assert "Access-Control-Allow-Origin" not in bad


def test_preflight_for_an_inactive_sites_origin_is_refused(client):
    SiteFactory(allowed_origins="https://closed.example", is_active=False)
    assert client.options("/api/v1/events", HTTP_ORIGIN="https://closed.example").status_code == 403


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["key", "type", "product", "context", "x"]),
            st.one_of(
                st.none(), st.integers(), st.text(max_size=20), st.sampled_from(["purchase", "refund"])
            ),
        ).map(json.dumps),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)
def test_no_refused_request_changes_any_count(client, product, body, content_type):
    before = Event.objects.count()
    response = post(client, body, content_type=content_type)
    if response.status_code != 202:
        assert Event.objects.count() == before
        assert "error" in response.json()


def test_context_keeps_a_referrers_host_and_nothing_that_may_be_an_email(client, product):
    """SPEC 2.7: a newsletter link's `?email=…&name=…` (encoded or not) never reaches the ledger."""
    context = {
        "referrer": "https://News.Mail.example/path?email=jo%40mail.example&name=Jo+Smith",
        "campaign": "jo%40mail.example",
        "hint_contact": "jo@mail.example",
        "locale": "en-GB",
    }
    assert post(client, good(product, context=context)).status_code == 202
    assert Event.objects.get().context == {"referrer": "news.mail.example", "locale": "en-gb"}
