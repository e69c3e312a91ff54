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
"""

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .ingest import Unacceptable, conversion_record, order_products
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
    # `Candor.visitorToken()`, passed by the storefront as an order attribute (README, "Experiments").
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

SHOPIFY_ORDER_TOPICS = frozenset({"orders/create", "orders/paid", "orders/updated", "orders/cancelled"})
SHOPIFY_PAID = frozenset({"paid", "partially_refunded"})
SHOPIFY_WITHDRAWN = frozenset({"refunded", "voided"})


def shopify_news(topic: str, payload: dict) -> OrderNews | None:
    """What a Shopify delivery says about an order; None for a topic Candor does not use."""
    if topic == "refunds/create":
        refund_id = _id(payload.get("id"))
        news = OrderNews(order_id=_id(payload.get("order_id")))
        news.refunds.append((refund_id, _line_items(payload.get("refund_line_items"), nested=True)))
        return news
    if topic not in SHOPIFY_ORDER_TOPICS:
        return None
    news = OrderNews(order_id=_id(payload.get("id")), is_test=payload.get("test") is True)
    status = payload.get("financial_status")
    if topic == "orders/cancelled" or payload.get("cancelled_at") or status in SHOPIFY_WITHDRAWN:
        news.state = WITHDRAWN
    elif topic == "orders/paid" or status in SHOPIFY_PAID:
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
    """What a WooCommerce delivery says about an order; None for a topic Candor does not use."""
    if topic == "order.deleted":
        return OrderNews(order_id=_id(payload.get("id")), state=WITHDRAWN)
    if topic not in ("order.created", "order.updated"):
        return None
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
    previous = ServerDelivery.objects.filter(site=site, idempotency_key=key).first()
    if previous is not None:
        return {**previous.response, "duplicate": True}

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
    refused: list[str] = []
    attribution = None
    if news.state == PAID and before == UNPAID:
        paid_at = news.paid_at or now
        if paid_at > now + dt.timedelta(seconds=60):
            raise Unacceptable("the order's time is in the future", field="processed_at")
        if paid_at < now - dt.timedelta(days=settings.CANDOR_RETENTION_DAYS):
            raise Unacceptable("the order is older than the retention window", field="processed_at")
        for index, (item, product) in enumerate(_products(site, news.items)):
            if product is None:
                refused.append(item.sku or item.product_id)
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
        if Event.objects.filter(site=site, idempotency_key__startswith=f"{prefix}:").exists():
            continue  # this refund was recorded from another delivery
        if not items:
            Event.objects.create(
                **common, kind=EventKind.REFUND, occurred_at=now, idempotency_key=f"{prefix}:*"
            )
        for index, (item, product) in enumerate(_products(site, items)):
            if product is None:
                refused.append(item.sku or item.product_id)
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
        "refused_items": refused,
    }
    if attribution is not None:
        response["attribution"] = attribution
    ServerDelivery.objects.create(site=site, idempotency_key=key, body_sha256=digest, response=response)
    return response
