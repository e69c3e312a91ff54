"""Shopify and WooCommerce order webhooks → the same ledger events as signed server events.

Each platform's delivery is read into an `OrderNews` (what this delivery says about one order),
then `order_news_record` moves the order along unpaid → paid → withdrawn, never back (SPEC 5):

- paid: one verified `purchase` row per known line item, at the time the platform says the order
  was placed or paid; an order is paid at most once however many deliveries mention it.
- withdrawn (cancelled, refunded, voided, failed, deleted): one whole-order `cancel` row.
- a refund with line items withdraws those products (`refund` rows); one without line items
  withdraws the whole order, so a count can only go down (invariant 2.1).
- unpaid: recorded as the delivery, nothing in the ledger until a later delivery says it is paid.

A delivery id seen before answers 200 and changes nothing. Test orders are stored flagged.

Only the signed body decides (SPEC 7). The topic header is not covered by the platform's HMAC: a
signed `financial_status: "pending"` body replayed under `X-Shopify-Topic: orders/paid` is still
an unpaid order. So the topic only says whether Candor reads the delivery at all (and, for
WooCommerce's `order.deleted`, that the body is a deletion notice: that handler can withdraw an
order, never pay one); the order's state, and whether a Shopify body is an order or a refund,
come from the body. And since the topic no longer matters, a delivery is a repeat when its body
was seen before under any delivery id (its SHA-256), as well as when its delivery id was.
"""

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .ingest import Unacceptable, conversion_record, order_products, refused_items_answer
from .models import Event, EventKind, Product, ServerDelivery, Site
from .orders import order_id_resolve
from .services import ingest_refusal_count
from .streaming import ledger_changed_on_commit

PAID, UNPAID, WITHDRAWN = "paid", "unpaid", "withdrawn"


def platform_signature_valid(*, secret: str, body: bytes, header: str) -> bool:
    """Both platforms: base64 of HMAC-SHA256 over the raw body with the webhook secret."""
    if not secret or not header or len(header) > 200:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, header.strip())


@dataclass(frozen=True)
class LineItem:
    sku: str
    product_id: str
    quantity: int


@dataclass
class OrderNews:
    order_id: str
    state: str | None = None  # PAID, UNPAID, WITHDRAWN, or None: says nothing of the whole order
    paid_at: dt.datetime | None = None
    items: list[LineItem] = field(default_factory=list)
    # Partial refunds: (refund id, the items it returns; empty = the whole order).
    refunds: list[tuple[str, list[LineItem]]] = field(default_factory=list)
    is_test: bool = False
    # `Candor.visitorToken()`, passed by the storefront as an order attribute (docs/experiments.md).
    visitor_token: str = ""


VISITOR_TOKEN_NAMES = ("candor_visitor_token", "_candor_visitor_token")


def _attribute(pairs, *, name_key: str) -> str:
    """The visitor token among an order's name/value attributes, or ""."""
    for pair in pairs if isinstance(pairs, list) else ():
        if isinstance(pair, dict) and pair.get(name_key) in VISITOR_TOKEN_NAMES:
            value = pair.get("value")
            return value if isinstance(value, str) and len(value) <= 512 else ""
    return ""


def _id(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise Unacceptable("the order has no id", field="id")
    return str(value).strip()[:200]


def _time(value, *, naive_is_utc: bool = False) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        if not naive_is_utc:
            return None
        moment = moment.replace(tzinfo=dt.UTC)
    return moment


def _line_items(raw, *, nested: bool = False) -> list[LineItem]:
    items = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        line = entry.get("line_item") if nested and isinstance(entry.get("line_item"), dict) else entry
        quantity = entry.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            quantity = 1
        sku = line.get("sku")
        product_id = line.get("product_id")
        items.append(
            LineItem(
                sku=sku.strip() if isinstance(sku, str) else "",
                product_id=str(product_id) if isinstance(product_id, (int, str)) and product_id else "",
                quantity=max(1, min(abs(quantity), 100_000)),
            )
        )
    return items


# --- Shopify -------------------------------------------------------------------------------

# The topics Candor reads. Which of them a delivery came under changes nothing: its body does.
SHOPIFY_TOPICS = frozenset(
    {"orders/create", "orders/paid", "orders/updated", "orders/cancelled", "refunds/create"}
)
SHOPIFY_PAID = frozenset({"paid", "partially_refunded"})
SHOPIFY_WITHDRAWN = frozenset({"refunded", "voided"})


def _is_shopify_refund(payload: dict) -> bool:
    """A Refund resource (what `refunds/create` carries) names its order in `order_id` and lists
    `refund_line_items`; an Order resource has neither (it has `line_items`, `financial_status`
    and its refunds nested in `refunds`)."""
    return (
        "order_id" in payload
        and isinstance(payload.get("refund_line_items"), list)
        and "financial_status" not in payload
        and "line_items" not in payload
    )


def shopify_news(topic: str, payload: dict) -> OrderNews | None:
    """What a Shopify delivery's body says about an order; None for a topic Candor does not use.

    Paid, unpaid or withdrawn is read from the order's `financial_status`, `cancelled_at` and
    `refunds`, never from the topic; a refund body withdraws what it lists, under any topic."""
    if topic not in SHOPIFY_TOPICS:
        return None
    if _is_shopify_refund(payload):
        news = OrderNews(order_id=_id(payload.get("order_id")), is_test=payload.get("test") is True)
        news.refunds.append(
            (_id(payload.get("id")), _line_items(payload.get("refund_line_items"), nested=True))
        )
        return news
    news = OrderNews(order_id=_id(payload.get("id")), is_test=payload.get("test") is True)
    status = payload.get("financial_status")
    if payload.get("cancelled_at") or status in SHOPIFY_WITHDRAWN:
        news.state = WITHDRAWN
    elif status in SHOPIFY_PAID:
        news.state = PAID
    else:
        news.state = UNPAID
    news.paid_at = _time(payload.get("processed_at")) or _time(payload.get("created_at"))
    news.items = _line_items(payload.get("line_items"))
    news.visitor_token = _attribute(payload.get("note_attributes"), name_key="name")
    for refund in payload.get("refunds") or []:
        if isinstance(refund, dict) and refund.get("id") is not None:
            news.refunds.append(
                (_id(refund["id"]), _line_items(refund.get("refund_line_items"), nested=True))
            )
    return news


# --- WooCommerce ---------------------------------------------------------------------------

WOO_PAID = frozenset({"processing", "completed"})
WOO_WITHDRAWN = frozenset({"cancelled", "refunded", "failed", "trash"})


def woocommerce_news(topic: str, payload: dict) -> OrderNews | None:
    """What a WooCommerce delivery's body says about an order (its `status`); None for a topic
    Candor does not use.

    `order.deleted` carries WooCommerce's deletion notice, `{"id": …}` alone, which says nothing
    of a state: under that topic it withdraws the order (a deleted order no longer counts). That
    handler can only ever lower a count; a body with a `status` is read by its status whatever
    the topic, so no topic can make an order paid."""
    if topic not in ("order.created", "order.updated", "order.deleted"):
        return None
    if topic == "order.deleted" and "status" not in payload:
        return OrderNews(order_id=_id(payload.get("id")), state=WITHDRAWN)
    news = OrderNews(order_id=_id(payload.get("id")), is_test=payload.get("test") is True)
    status = payload.get("status")
    if status in WOO_WITHDRAWN:
        news.state = WITHDRAWN
    elif status in WOO_PAID:
        news.state = PAID
    else:
        news.state = UNPAID
    news.paid_at = _time(payload.get("date_paid_gmt"), naive_is_utc=True) or _time(
        payload.get("date_created_gmt"), naive_is_utc=True
    )
    news.items = _line_items(payload.get("line_items"))
    news.visitor_token = _attribute(payload.get("meta_data"), name_key="key")
    # WooCommerce's refunds name no line items: any refund withdraws the whole order.
    for refund in payload.get("refunds") or []:
        if isinstance(refund, dict) and refund.get("id") is not None:
            news.refunds.append((_id(refund["id"]), []))
    return news


# --- The ledger ----------------------------------------------------------------------------


def _products(site: Site, items: list[LineItem]) -> list[tuple[LineItem, Product | None]]:
    """A line item is the product whose SKU is the item's `sku`, else the platform's product id."""
    keys = {i.sku for i in items if i.sku} | {i.product_id for i in items if i.product_id}
    by_sku = {p.sku: p for p in Product.objects.filter(site=site, sku__in=keys)}
    return [(i, by_sku.get(i.sku) or by_sku.get(i.product_id)) for i in items]


def _order_state(site: Site, order_id: str) -> str:
    kinds = Event.objects.filter(site=site, order_id=order_id)
    if kinds.filter(kind__in=(EventKind.REFUND, EventKind.CANCEL), product__isnull=True).exists():
        return WITHDRAWN
    if kinds.filter(kind=EventKind.PURCHASE).exists():
        return PAID
    return UNPAID


@transaction.atomic
def order_news_record(*, site: Site, platform: str, delivery_id: str, body: bytes, news: OrderNews) -> dict:
    """Apply one verified delivery to the ledger; committed before the caller answers 200."""
    digest = hashlib.sha256(body).hexdigest()
    key = f"{platform}:delivery:{delivery_id}"[:200]
    # One delivery at a time per site, so that two deliveries of one order cannot both pay it.
    Site.objects.select_for_update().filter(pk=site.pk).first()
    # A repeat: the same delivery id, or the same body under a new one (a replay needs no new
    # signature to get a new delivery id: that header is not signed).
    previous = (
        ServerDelivery.objects.filter(site=site, source=platform)
        .filter(Q(idempotency_key=key) | Q(body_sha256=digest))
        .first()
    )
    if previous is not None:
        answer = {**_answer(site, previous.response, news), "duplicate": True}
        if "state" in answer:  # where the order is now, which a later delivery may have moved
            answer["state"] = _order_state(site, answer["order_id"])
        return answer

    now = timezone.now()
    news.order_id = order_id_resolve(site=site, order_id=news.order_id)  # an erased order's tombstone
    before = _order_state(site, news.order_id)
    common = {
        "site": site,
        "source": platform,
        "order_id": news.order_id,
        "verified": True,
        "is_test": news.is_test,
    }
    lines = _lines(news)
    refused: list[int] = []  # positions in `lines`: no SKU text is stored
    attribution = None
    if news.state == PAID and before == UNPAID:
        paid_at = news.paid_at or now
        if paid_at > now + dt.timedelta(seconds=60):
            raise Unacceptable("the order's time is in the future", field="processed_at")
        if paid_at < now - dt.timedelta(days=settings.CANDOR_RETENTION_DAYS):
            raise Unacceptable("the order is older than the retention window", field="processed_at")
        for index, (item, product) in enumerate(_products(site, news.items)):
            if product is None:
                refused.append(lines.index((None, index)))
                continue
            Event.objects.create(
                **common,
                kind=EventKind.PURCHASE,
                product=product,
                quantity=item.quantity,
                occurred_at=paid_at,
                idempotency_key=f"{platform}:order:{news.order_id}:{index}"[:200],
            )
        if news.visitor_token and not news.is_test and len(refused) < len(news.items):
            attribution = conversion_record(
                site=site, order_id=news.order_id, token=news.visitor_token, occurred_at=paid_at
            )
    for refund_id, items in news.refunds:
        prefix = f"{platform}:refund:{refund_id}"[:190]
        recorded = Event.objects.filter(site=site, source=platform, idempotency_key__startswith=f"{prefix}:")
        if recorded.exists():
            continue  # this refund was recorded from another delivery
        if not items:
            Event.objects.create(
                **common, kind=EventKind.REFUND, occurred_at=now, idempotency_key=f"{prefix}:*"
            )
        for index, (item, product) in enumerate(_products(site, items)):
            if product is None:
                refused.append(lines.index((refund_id, index)))
                continue
            Event.objects.create(
                **common,
                kind=EventKind.REFUND,
                product=product,
                quantity=item.quantity,
                occurred_at=now,
                idempotency_key=f"{prefix}:{index}",
            )
    if news.state == WITHDRAWN and before != WITHDRAWN:
        Event.objects.create(
            **common,
            kind=EventKind.CANCEL,
            occurred_at=now,
            idempotency_key=f"{platform}:order:{news.order_id}:withdrawn"[:200],
        )
    for _ in refused:
        ingest_refusal_count(site_id=site.pk, endpoint=f"{platform}_webhook", code="unknown_product")
    ledger_changed_on_commit(order_products(site=site, order_id=news.order_id))
    response = {
        "accepted": True,
        "duplicate": False,
        "order_id": news.order_id,
        "state": _order_state(site, news.order_id),
        "test": news.is_test,
        "refused_positions": sorted(refused),
    }
    if attribution is not None:
        response["attribution"] = attribution
    ServerDelivery.objects.create(
        site=site, source=platform, idempotency_key=key, body_sha256=digest, response=response
    )
    return _answer(site, response, news)


def _lines(news: OrderNews) -> list[tuple[str | None, int]]:
    """Every line item a delivery names, in body order: the order's (None), then each refund's
    (its id). A refused item is stored as its position in this list."""
    return [(None, i) for i in range(len(news.items))] + [
        (refund_id, i) for refund_id, items in news.refunds for i in range(len(items))
    ]


def _answer(site: Site, stored: dict, news: OrderNews) -> dict:
    """The stored response with `refused_items` read back from the delivery's own body."""
    items = news.items + [item for _, refund_items in news.refunds for item in refund_items]
    labels = [item.sku or item.product_id for item in items]

    def known(skus):
        return {label for label, (_, product) in zip(labels, _products(site, items), strict=True) if product}

    return refused_items_answer(stored, skus=labels, known=known)
