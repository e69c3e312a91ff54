"""Signed server events through the ASGI route (notifications/beacon.py): `POST
/api/v1/server/events` answered in front of Django, in batches that share one commit. It must
answer exactly as the Django view does, answer 2xx only after the commit, and keep one event's
refusal or failure from touching the rest of its batch."""

import asyncio
import datetime as dt
import json
import re
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.db import IntegrityError, OperationalError, connections, transaction
from django.test import Client
from django.utils import timezone

from config.asgi import application
from notifications import beacon
from notifications.models import Event, IngestRefusal, ServerDelivery, SiteSecret
from notifications.signing import signature_header_make
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def secret_of(site) -> str:
    return SiteSecret.objects.filter(site=site, retired_at__isnull=True).first().secret


def purchase_body(product, n, **over) -> bytes:
    payload = {
        "key": product.site.public_key,
        "type": "purchase",
        "event_id": f"evt-{n}",
        "order_id": f"order-{n}",
        "occurred_at": (timezone.now() - dt.timedelta(minutes=3)).isoformat(),
        "items": [{"product": product.sku, "quantity": 1}],
        **over,
    }
    return json.dumps(payload).encode()


async def via_route(body: bytes, header: str | None, *, method="POST", path="/api/v1/server/events"):
    headers = {"host": "127.0.0.1", "content-type": "application/json", "content-length": str(len(body))}
    if header is not None:
        headers["candor-signature"] = header
    comm = HttpCommunicator(
        application, method, path, body=body, headers=[(k.encode(), v.encode()) for k, v in headers.items()]
    )
    response = await comm.get_response(timeout=10)
    names = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    return response["status"], (json.loads(response["body"]) if response["body"] else {}), names


def _via_django(body: bytes, header: str | None, method="POST"):
    try:
        extra = {} if header is None else {"HTTP_CANDOR_SIGNATURE": header}
        response = Client().generic(
            method, "/api/v1/server/events", body, content_type="application/json", **extra
        )
        return response.status_code, response.json(), {k.lower(): v for k, v in response.headers.items()}
    finally:
        connections.close_all()


via_django = sync_to_async(_via_django, thread_sensitive=False)


def _cases(product, secret):
    def signed(body, **kwargs):
        return body, signature_header_make(secret=secret, body=body, **kwargs)

    first = purchase_body(product, 1)
    return [
        ("a purchase", *signed(first)),
        ("its replay", *signed(first)),
        ("the same event_id, another body", *signed(purchase_body(product, 1, order_id="other"))),
        ("the same order, a new event_id", *signed(purchase_body(product, 2, order_id="order-1"))),
        ("an unknown SKU", *signed(purchase_body(product, 3, items=[{"product": "nope", "quantity": 1}]))),
        ("a refund", *signed(purchase_body(product, 4, type="refund", order_id="order-1"))),
        ("422 a bad time", *signed(purchase_body(product, 5, occurred_at="yesterday"))),
        ("422 no items", *signed(purchase_body(product, 6, items=[]))),
        ("401 wrong secret", first, signature_header_make(secret="sk_wrong", body=first)),
        ("401 stale", *signed(purchase_body(product, 7), t=int(time.time()) - 400)),
        ("401 no header", purchase_body(product, 8), None),
        ("401 not JSON", *signed(b"{nope")),
        ("401 not an object", *signed(b"[1]")),
        ("400 a NUL", *signed(purchase_body(product, 9, order_id="a\u0000b"))),
        ("413", *signed(b"{" + b" " * (beacon.SERVER_MAX_BODY_BYTES + 10) + b"}")),
    ]


async def _clear():
    await sync_to_async(Event.objects.all().delete)()
    await sync_to_async(ServerDelivery.objects.all().delete)()
    await sync_to_async(IngestRefusal.objects.all().delete)()


async def test_the_route_answers_exactly_as_the_django_view():
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)
    cases = _cases(product, secret)
    ours = [await via_route(body, header) for _, body, header in cases]
    ours_rows = await sync_to_async(
        lambda: sorted(Event.objects.values_list("kind", "order_id", "quantity"))
    )()
    ours_counted = await sync_to_async(lambda: sorted(IngestRefusal.objects.values_list("code", "count")))()
    await _clear()
    theirs = [await via_django(body, header) for _, body, header in cases]
    their_rows = await sync_to_async(
        lambda: sorted(Event.objects.values_list("kind", "order_id", "quantity"))
    )()
    their_counted = await sync_to_async(lambda: sorted(IngestRefusal.objects.values_list("code", "count")))()
    for (name, _, _), mine, django in zip(cases, ours, theirs, strict=True):
        assert mine[:2] == django[:2], name
        assert mine[2].get("retry-after") == django[2].get("retry-after"), name
        assert mine[2]["content-type"] == "application/json", name
    assert [status for status, _, _ in ours] == [
        202,
        200,
        409,
        200,
        202,
        202,
        422,
        422,
        401,
        401,
        401,
        401,
        401,
        400,
        413,
    ]
    assert ours_rows == their_rows and ours_rows  # the same ledger rows either way
    assert ours_counted == their_counted and dict(ours_counted)["bad_signature"] == 5


async def test_other_methods_go_to_django():
    status, body, _ = await via_route(b"", None, method="GET")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_concurrent_purchases_share_commits_and_each_2xx_is_committed(monkeypatch):
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)
    batches = []
    write = beacon._server_batch_write

    def counting(items):
        batches.append(len(items))
        return write(items)

    monkeypatch.setattr(beacon, "_server_batch_write", counting)
    set_based = []
    record = beacon.purchases_record

    def recording(batch):
        set_based.append(len(batch))
        return record(batch)

    monkeypatch.setattr(beacon, "purchases_record", recording)
    bodies = [purchase_body(product, n) for n in range(40)]
    # One bad event among them: refused alone, the rest of its batch is recorded.
    bodies[17] = purchase_body(product, 17, occurred_at="not a time")
    answers = await asyncio.gather(
        *(via_route(body, signature_header_make(secret=secret, body=body)) for body in bodies)
    )
    statuses = [status for status, _, _ in answers]
    assert statuses == [202] * 17 + [422] + [202] * 22
    assert await sync_to_async(Event.objects.filter(kind="purchase").count)() == 39
    assert await sync_to_async(ServerDelivery.objects.count)() == 39
    assert sum(batches) == 40 and len(batches) < 40, batches  # grouped: fewer commits than requests
    assert set_based, "batches of purchases are recorded set-based"


async def test_a_batch_that_meets_a_concurrent_key_goes_one_by_one(monkeypatch):
    """If another batch took one of its keys first, the set-based INSERT fails; the batch is
    rolled back to its savepoint and recorded one event at a time, with the same answers."""
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)

    def clash(batch):
        Event.objects.bulk_create(
            [Event(site=product.site, kind="view", source="browser", occurred_at=timezone.now())]
        )
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(beacon, "purchases_record", clash)
    bodies = [purchase_body(product, n) for n in range(12)]
    answers = await asyncio.gather(
        *(via_route(body, signature_header_make(secret=secret, body=body)) for body in bodies)
    )
    assert [status for status, _, _ in answers] == [202] * 12
    assert await sync_to_async(Event.objects.filter(kind="purchase").count)() == 12
    assert not await sync_to_async(Event.objects.filter(kind="view").exists)()  # the savepoint's work undone


async def test_a_failed_commit_answers_503_for_the_whole_batch_and_keeps_nothing(monkeypatch):
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)

    class CommitFails:
        def __enter__(self):
            self.inner = transaction.atomic()
            self.inner.__enter__()

        def __exit__(self, *exc):
            error = OperationalError("could not commit")
            self.inner.__exit__(OperationalError, error, None)  # rolled back
            raise error

    monkeypatch.setattr(beacon, "_batch_transaction", CommitFails)
    bodies = [purchase_body(product, n) for n in range(6)]
    bodies[2] = purchase_body(product, 2, items=[])  # a 422 stays a 422: it changed nothing anyway
    answers = await asyncio.gather(
        *(via_route(body, signature_header_make(secret=secret, body=body)) for body in bodies)
    )
    assert sorted(status for status, _, _ in answers) == [422] + [503] * 5
    for status, body, headers in answers:
        if status == 503:
            assert body["error"]["code"] == "unavailable" and headers["retry-after"] == "5"
    assert not await sync_to_async(Event.objects.exists)()
    assert not await sync_to_async(ServerDelivery.objects.exists)()


async def test_one_events_database_error_is_its_own_503(monkeypatch):
    """Refunds go one by one, each in its savepoint: one that fails is a 503 alone."""
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)
    answer = beacon.server_event_answer

    def flaky(*, site, payload, body):
        if payload["event_id"] == "evt-3":
            raise OperationalError("this one failed")
        return answer(site=site, payload=payload, body=body)

    monkeypatch.setattr(beacon, "server_event_answer", flaky)
    bodies = [purchase_body(product, n, type="refund") for n in range(8)]
    answers = await asyncio.gather(
        *(via_route(body, signature_header_make(secret=secret, body=body)) for body in bodies)
    )
    assert [status for status, _, _ in answers] == [202, 202, 202, 503, 202, 202, 202, 202]
    orders = await sync_to_async(lambda: set(Event.objects.values_list("order_id", flat=True)))()
    assert orders == {f"order-{n}" for n in range(8)} - {"order-3"}


def _tricky_batch(product, other_sku, token):
    """Purchases whose answers depend on each other and on what is already recorded."""
    first = purchase_body(product, 1)
    return [
        first,
        first,  # the same delivery again: 200 duplicate
        purchase_body(product, 1, order_id="changed"),  # same event id, other body: 409
        purchase_body(product, 2, order_id="order-1"),  # the same order, a new event id: duplicate
        purchase_body(product, 3, order_id="old-order"),  # recorded before the batch: duplicate
        purchase_body(product, 4, occurred_at="yesterday"),  # 422
        purchase_body(product, 4),  # the same id, now valid: recorded
        purchase_body(
            product, 5, items=[{"product": "nope", "quantity": 1}, {"product": other_sku, "quantity": 3}]
        ),
        purchase_body(product, 6, visitor_token=7),  # 422
        purchase_body(product, 7, visitor_token=token),  # attributed
        purchase_body(product, 8, visitor_token="not-ours"),  # attribution refused, purchase counted
        purchase_body(product, 9, test=True),
        purchase_body(product, 10, order_id="erased-order"),  # filed under the tombstone: duplicate
        purchase_body(product, 11, event_id="evt-3"),  # evt-3, recorded above with another body: 409
    ]


def _set_up_site():
    from notifications.identity import visitor_token_make
    from notifications.orders import order_erase
    from notifications.services import products_upsert  # noqa: F401  (catalog made by factories)

    product = ProductFactory()
    other = ProductFactory(site=product.site)
    secret = secret_of(product.site)
    for n, order in ((100, "old-order"), (101, "erased-order")):
        body = purchase_body(product, n, order_id=order)
        assert (
            Client()
            .generic(
                "POST",
                "/api/v1/server/events",
                body,
                content_type="application/json",
                HTTP_CANDOR_SIGNATURE=signature_header_make(secret=secret, body=body),
            )
            .status_code
            == 202
        )
    order_erase(site=product.site, order_id="erased-order")
    token = visitor_token_make(site_id=product.site.pk, visitor_hash="a" * 32)
    return product, other, token


def _ledger(site):
    return sorted(
        Event.objects.filter(site=site).values_list(
            "kind", "order_id", "quantity", "product__sku", "idempotency_key", "is_test", "verified"
        )
    )


def _untombstoned(value: str) -> str:
    """A tombstone is keyed by its site: the two copies' differ."""
    return re.sub(r"erased:[0-9a-f]+(:\d+)?", "erased:…", value)


def test_a_set_based_batch_answers_as_one_by_one():
    """`ingest.purchases_record` against `server_event_record` called in turn, on two copies of
    the same shop: the same answers, rows, deliveries, attributions and refusal counts."""
    from notifications.ingest import Unacceptable, purchases_record, server_event_record
    from notifications.models import Conversion

    outcomes = []
    for mode in ("batch", "one by one"):
        product, other, token = _set_up_site()
        bodies = _tricky_batch(product, other.sku, token)
        batch = [(product.site, json.loads(body), body) for body in bodies]
        if mode == "batch":
            with transaction.atomic():
                results = purchases_record(batch)
        else:
            results = []
            for site, payload, body in batch:
                try:
                    results.append(server_event_record(site=site, payload=payload, body=body))
                except Unacceptable as exc:
                    results.append(exc)
        answers = [
            (r.status, r.code, r.field) if isinstance(r, Unacceptable) else (r[0], r[1]) for r in results
        ]
        ledger = [
            (kind, _untombstoned(order), q, sku == product.sku, _untombstoned(key), t, v)
            for kind, order, q, sku, key, t, v in _ledger(product.site)
        ]
        deliveries = sorted(
            ServerDelivery.objects.filter(site=product.site).values_list("idempotency_key", "body_sha256")
        )
        conversions = sorted(
            Conversion.objects.filter(site=product.site).values_list("order_id", "visitor_hash")
        )
        refusals = sorted(IngestRefusal.objects.filter(site=product.site).values_list("code", "count"))
        outcomes.append((answers, ledger, len(deliveries), conversions, refusals))
    batch, one_by_one = outcomes
    assert batch[0] == one_by_one[0]
    assert batch[1:] == one_by_one[1:]
    statuses = [a[0] for a in batch[0]]
    assert statuses == [202, 200, 409, 200, 200, 422, 202, 202, 422, 202, 202, 202, 200, 409]
    assert batch[0][7][1]["refused_items"] == ["nope"]
    assert batch[0][9][1]["attribution"] == "recorded" and batch[0][10][1]["attribution"] == "refused"


async def test_a_retired_secret_is_refused_at_once():
    """The batch's memo of a site's secrets lives for one batch only: a secret retired between
    two requests is refused on the second."""
    product = await sync_to_async(ProductFactory)()
    secret = await sync_to_async(secret_of)(product.site)
    body = purchase_body(product, 1)
    assert (await via_route(body, signature_header_make(secret=secret, body=body)))[0] == 202
    # The site's one secret (stored encrypted: it cannot be looked up by its value).
    retire = SiteSecret.objects.filter(site=product.site, retired_at__isnull=True).update
    await sync_to_async(retire)(retired_at=timezone.now())
    body = purchase_body(product, 2)
    assert (await via_route(body, signature_header_make(secret=secret, body=body)))[0] == 401
