"""Event in → validated → ledger. Browser events carry no proof, so they are never `verified`
and can never be a purchase (SPEC 2.4)."""

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .identity import visitor_token_read
from .limits import Check, checks_apply, rate_parse, seen_forget
from .models import Conversion, DeliverySource, Event, EventKind, EventSource, Product, ServerDelivery, Site
from .orders import order_id_resolve, order_tombstone
from .services import SiteError, ingest_refusal_count, products_upsert
from .streaming import ledger_changed_on_commit

BROWSER_KINDS = frozenset({EventKind.VIEW, EventKind.ADD_TO_CART})


# What a page may tell us about its context (SPEC 3 segments, SPEC 7 "Context values are an
# allow-list"): each key has the shape its value must have, and anything else is dropped before it
# is stored. Short labels only, so no free text that could carry a name, an email ("jane.doe＠…",
# "…(at)…", a double-encoded "%2540") or a phone number reaches the ledger or a segment.
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_LOCALE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8}){0,2}")  # BCP 47-ish: en, en-us, zh-hant-tw
_COUNTRY = re.compile(r"[a-z]{2}")
_HOST = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_HINT_KEY = re.compile(r"hint_[a-z0-9][a-z0-9_-]{0,31}")
DEVICES = frozenset({"mobile", "tablet", "desktop"})
# A slug with more digits than this may be a phone or customer number: dropped.
SLUG_MAX_DIGITS = 6


def _slug(value: str) -> str | None:
    if _SLUG.fullmatch(value) and sum(ch.isdigit() for ch in value) <= SLUG_MAX_DIGITS:
        return value
    return None


def _referrer_host(value: str) -> str | None:
    """A referrer is kept as its host: segments match on where a shopper came from, and a full
    URL's path and query carry whatever the linking page put there (a newsletter's
    `?email=…&name=…`)."""
    try:
        host = (urlsplit(value.strip()).hostname or "").lower()
    except ValueError:
        return None
    return host if _HOST.fullmatch(host) else None


def _returning(value: str) -> str | None:
    return value if value in ("true", "false") else None


CONTEXT_VALUES = {
    "locale": lambda v: v if _LOCALE.fullmatch(v) else None,
    "country": lambda v: v if _COUNTRY.fullmatch(v) else None,
    "device": lambda v: v if v in DEVICES else None,
    "returning": _returning,
    "referrer": _referrer_host,
    "campaign": _slug,
}


def context_clean(raw: dict) -> dict[str, str]:
    """The page's context, reduced to the allow-list above (values lower-cased; a referrer to its
    host). Used by the beacon, the Django view and the socket alike."""
    clean = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, (str, bool)) or len(key) > 40:
            continue
        key = key.lower()
        text = (str(value) if isinstance(value, bool) else value[:300]).lower()
        check = CONTEXT_VALUES.get(key) or (_slug if _HINT_KEY.fullmatch(key) else None)
        kept = check(text) if check else None
        if kept:
            clean[key] = kept
    return clean


class ForbiddenKind(Exception):
    pass


def browser_event_record(
    *,
    site_id: int,
    product_id: int,
    kind: str,
    visitor_hash: str,
    is_bot: bool,
    address_hash: str = "",
    source: str = EventSource.SOCKET,
    context: dict | None = None,
) -> Event:
    if kind not in BROWSER_KINDS:
        raise ForbiddenKind(kind)
    now = timezone.now()
    if kind == EventKind.ADD_TO_CART and not is_bot:
        ledger_changed_on_commit([product_id])
    return Event.objects.create(
        site_id=site_id,
        product_id=product_id,
        kind=kind,
        source=source,
        visitor_hash=visitor_hash,
        address_hash=address_hash,
        occurred_at=now,
        received_at=now,
        verified=False,
        is_bot=is_bot,
        context=context or {},
    )


@dataclass(frozen=True)
class BrowserEvent:
    """A browser event that passed every check up to the rate limit (SPEC 5's order)."""

    site_id: int
    product_id: int
    kind: str
    visitor_hash: str
    address_key: str  # the client address, keyed and hashed (for the rate limit): never the raw IP
    is_bot: bool
    context: dict
    # The client address hashed with the site's daily salt, stored beside the visitor hash so a
    # count takes at most CANDOR_VISITORS_PER_ADDRESS visitors of one address (SPEC 7).
    address_hash: str = ""
    source: str = EventSource.BROWSER


@dataclass(frozen=True)
class BrowserOutcome:
    status: int  # 202 accepted (recorded, or a repeat view / a bot's, flagged), or 429
    retry_after_s: float = 0.0


def browser_events_record(events: list[BrowserEvent]) -> list[BrowserOutcome]:
    """Rate limits and view de-duplication for a whole batch in one Redis round trip, then one
    INSERT of the accepted events, committed before any of them is answered (a 202 means the row
    is in the ledger). The HTTP view records a batch of one; the beacon a batch of whatever
    arrived while the previous batch was being written (group commit)."""
    per_visitor = rate_parse(settings.CANDOR_RATE_PER_VISITOR)
    per_address = rate_parse(settings.CANDOR_RATE_PER_IP)
    checks = [
        Check(
            counters=(
                ("events-visitor", e.visitor_hash, per_visitor),
                ("events-ip", e.address_key, per_address),
            ),
            seen_key=f"{e.product_id}:{e.visitor_hash}" if e.kind == EventKind.VIEW else "",
        )
        for e in events
    ]
    verdicts = checks_apply(checks, seen_ttl_s=settings.CANDOR_VIEW_DEDUPE_S)
    now = timezone.now()
    outcomes, rows, seen, carts = [], [], [], set()
    for event, check, verdict in zip(events, checks, verdicts, strict=True):
        if verdict.limited:
            outcomes.append(BrowserOutcome(429, verdict.retry_after_s))
            continue
        outcomes.append(BrowserOutcome(202))
        if verdict.repeat:
            continue
        if check.seen_key:
            seen.append(check.seen_key)
        if event.kind == EventKind.ADD_TO_CART and not event.is_bot:
            carts.add(event.product_id)
        rows.append(
            Event(
                site_id=event.site_id,
                product_id=event.product_id,
                kind=event.kind,
                source=event.source,
                visitor_hash=event.visitor_hash,
                address_hash=event.address_hash,
                occurred_at=now,
                received_at=now,
                verified=False,
                is_bot=event.is_bot,
                context=event.context,
            )
        )
    if rows:
        try:
            with transaction.atomic():
                Event.objects.bulk_create(rows)
                ledger_changed_on_commit(carts)
        except Exception:
            seen_forget(seen)  # not recorded: a retry of these views must not look like a repeat
            raise
    return outcomes


def order_products(*, site: Site, order_id: str) -> list[int]:
    """The products an order's purchases name: what a whole-order withdrawal changes."""
    return list(
        Event.objects.filter(site=site, order_id=order_id, kind=EventKind.PURCHASE, product__isnull=False)
        .values_list("product_id", flat=True)
        .distinct()
    )


def conversion_record(*, site: Site, order_id: str, token: str, occurred_at: "dt.datetime") -> str:
    """Attribute a verified purchase to the visitor whose token its order carried (SPEC 4, 5).
    Returns "recorded", or "refused" (the token is not one of ours for this site, or expired:
    the purchase still counts, only the attribution is dropped, and the refusal is counted)."""
    visitor = visitor_token_read(token, site_id=site.pk)
    if visitor is None:
        ingest_refusal_count(site_id=site.pk, endpoint="visitor_token", code="bad_visitor_token")
        return "refused"
    Conversion.objects.get_or_create(
        site=site, order_id=order_id, defaults={"visitor_hash": visitor, "occurred_at": occurred_at}
    )
    return "recorded"


# --- Signed server events ----------------------------------------------------------------


class Unacceptable(Exception):
    """Valid JSON that cannot be accepted (422), or a conflict (409)."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422, code: str = "invalid"):
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code


SERVER_TYPES = ("purchase", "refund", "cancel", "catalog")


def _occurred_at(raw) -> "dt.datetime":
    if not isinstance(raw, str):
        raise Unacceptable("'occurred_at' must be an ISO 8601 time", field="occurred_at")
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Unacceptable("'occurred_at' must be an ISO 8601 time", field="occurred_at") from None
    if value.tzinfo is None:
        raise Unacceptable("'occurred_at' needs a time zone offset", field="occurred_at")
    now = timezone.now()
    if value > now + dt.timedelta(seconds=60):
        raise Unacceptable("'occurred_at' is in the future", field="occurred_at")
    if value < now - dt.timedelta(days=settings.CANDOR_RETENTION_DAYS):
        raise Unacceptable("'occurred_at' is older than the retention window", field="occurred_at")
    return value


def _items(raw, *, required: bool) -> list[tuple[str, int]]:
    if raw is None and not required:
        return []
    if not isinstance(raw, list) or (required and not raw):
        raise Unacceptable("'items' must be a non-empty list of {product, quantity}", field="items")
    items = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("product"), str) or not item["product"]:
            raise Unacceptable("each item needs a 'product' SKU", field="items")
        quantity = item.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100_000:
            raise Unacceptable("each item's 'quantity' must be a whole number from 1", field="items")
        items.append((item["product"], quantity))
    return items


def _text(payload: dict, name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > 200:
        raise Unacceptable(f"'{name}' must be a non-empty string of at most 200 characters", field=name)
    return value


def _item_skus(payload: dict) -> list[str]:
    items = payload.get("items")
    return [
        item["product"] if isinstance(item, dict) and isinstance(item.get("product"), str) else ""
        for item in (items if isinstance(items, list) else ())
    ]


def refused_items_answer(stored: dict, *, skus: list[str], known) -> dict:
    """The answer for a stored response (SPEC 5: unknown SKUs come back in `refused_items`).

    What is stored names unknown items only by their positions in the body, never by their text
    (an unknown SKU may be anything: an email address); the SKUs are read back from the body
    being answered, which for a repeat is the identical body (the same hash). `known(skus)` gives
    the SKUs the catalog holds, for a delivery stored before positions were kept (None)."""
    answer = {name: value for name, value in stored.items() if name != "refused_positions"}
    if "refused_positions" in stored:
        positions = stored["refused_positions"]
        if positions is None:
            held = known(skus)
            answer["refused_items"] = [sku for sku in skus if sku not in held]
        else:
            answer["refused_items"] = [skus[i] for i in positions if 0 <= i < len(skus)]
    return answer


def _server_answer(site: Site, stored: dict, payload: dict, **over) -> dict:
    def known(skus):
        return set(Product.objects.filter(site=site, sku__in=skus).values_list("sku", flat=True))

    return {**refused_items_answer(stored, skus=_item_skus(payload), known=known), **over}


@transaction.atomic
def server_event_record(*, site: Site, payload: dict, body: bytes) -> tuple[int, dict]:
    """Record a verified server event; returns (HTTP status, response body).

    Committed before the caller answers 2xx. Idempotent on `event_id` (and, for a purchase, on
    its order id): a repeat answers 200 with `"duplicate": true`; the same key with a different
    body is 409.
    """
    kind = payload.get("type")
    if kind not in SERVER_TYPES:
        raise Unacceptable(f"'type' must be one of {', '.join(SERVER_TYPES)}", field="type")
    event_id = _text(payload, "event_id")
    digest = hashlib.sha256(body).hexdigest()
    previous = (
        ServerDelivery.objects.select_for_update()
        .filter(site=site, source=DeliverySource.SERVER, idempotency_key=event_id)
        .first()
    )
    if previous is not None:
        if previous.body_sha256 != digest:
            raise Unacceptable(
                "this event_id was already used with a different body",
                field="event_id",
                status=409,
                code="conflict",
            )
        return 200, _server_answer(site, previous.response, payload, duplicate=True)

    if kind == "catalog":
        try:
            result = products_upsert(site=site, items=payload.get("items"))
        except SiteError as exc:
            raise Unacceptable(str(exc), field=exc.field or "items") from None
        response = {
            "accepted": True,
            "duplicate": False,
            "created": result.created,
            "updated": result.updated,
        }
    else:
        occurred_at = _occurred_at(payload.get("occurred_at"))
        # An erased order's later news (a late refund, a retried purchase) is filed under its
        # tombstone, so it still withdraws or de-duplicates (orders.py).
        order_id = order_id_resolve(site=site, order_id=_text(payload, "order_id"))
        items = _items(payload.get("items"), required=kind == "purchase")
        if (
            kind == "purchase"
            and Event.objects.filter(site=site, kind="purchase", order_id=order_id).exists()
        ):
            # The order id is an idempotency key too: one order counts at most once.
            response = {"accepted": True, "duplicate": True, "refused_positions": []}
            ServerDelivery.objects.create(
                site=site, idempotency_key=event_id, body_sha256=digest, response=response
            )
            return 200, _server_answer(site, response, payload)
        token = payload.get("visitor_token")
        _visitor_token_check(token)
        products = {p.sku: p for p in Product.objects.filter(site=site, sku__in=[sku for sku, _ in items])}
        refused = [position for position, (sku, _) in enumerate(items) if sku not in products]
        is_test = payload.get("test") is True
        common = {
            "site": site,
            "kind": kind,
            "source": EventSource.SERVER,
            "occurred_at": occurred_at,
            "order_id": order_id,
            "verified": True,
            "is_test": is_test,
        }
        if kind != "purchase" and not items:
            # A whole-order refund or cancel: it withdraws every line of the order.
            Event.objects.create(**common, idempotency_key=f"{event_id}:*")
            ledger_changed_on_commit(order_products(site=site, order_id=order_id))
        for index, (sku, quantity) in enumerate(items):
            if sku in products:
                Event.objects.create(
                    **common, product=products[sku], quantity=quantity, idempotency_key=f"{event_id}:{index}"
                )
        ledger_changed_on_commit(products[sku].pk for sku, _ in items if sku in products)
        response = {"accepted": True, "duplicate": False, "refused_positions": refused}
        if kind == "purchase" and token is not None and not is_test and len(refused) < len(items):
            response["attribution"] = conversion_record(
                site=site, order_id=order_id, token=token, occurred_at=occurred_at
            )
        for _ in refused:
            ingest_refusal_count(site_id=site.pk, endpoint="server_events", code="unknown_product")
    ServerDelivery.objects.create(site=site, idempotency_key=event_id, body_sha256=digest, response=response)
    return 202, _server_answer(site, response, payload)


def _visitor_token_check(token) -> None:
    if token is not None and (not isinstance(token, str) or not token or len(token) > 512):
        raise Unacceptable(
            "'visitor_token' must be the string Candor.visitorToken() gave", field="visitor_token"
        )


class BatchFallback(Exception):
    """A batch `purchases_record` does not answer set-based: record it one event at a time."""


def purchases_record(batch: list[tuple[Site, dict, bytes]]) -> list["tuple[int, dict] | Unacceptable"]:
    """A batch of verified purchases, set-based: the answers `server_event_record` gives called
    on each in turn (a later one sees what the earlier ones recorded), from a few queries per
    site instead of several per purchase, and one INSERT of events and one of deliveries.

    Runs inside the caller's transaction. A concurrent batch that takes one of these keys first
    makes an INSERT fail (IntegrityError), and a rare mix of repeats raises BatchFallback: the
    caller then records the batch one event at a time, in savepoints."""
    results: list = [None] * len(batch)
    parsed: list[tuple[int, Site, dict, str, str]] = []
    for index, (site, payload, body) in enumerate(batch):
        if payload.get("type") != "purchase":
            raise ValueError("purchases_record takes purchases only")
        try:
            parsed.append(
                (index, site, payload, _text(payload, "event_id"), hashlib.sha256(body).hexdigest())
            )
        except Unacceptable as exc:
            results[index] = exc
    by_site: dict[int, list] = {}
    for item in parsed:
        by_site.setdefault(item[1].pk, []).append(item)
    deliveries: dict[tuple[int, str], tuple[str, dict]] = {}
    for site_id, items in by_site.items():
        for key, digest, response in (
            ServerDelivery.objects.select_for_update()
            .filter(
                site_id=site_id,
                source=DeliverySource.SERVER,
                idempotency_key__in=[item[3] for item in items],
            )
            .values_list("idempotency_key", "body_sha256", "response")
        ):
            deliveries[(site_id, key)] = (digest, response)
    # What the deliveries say first (SPEC 5: a repeat, or a conflict), then the rest is validated.
    fresh: list[tuple[int, Site, dict, str, str, dt.datetime, str, list]] = []
    claimed: set[tuple[int, str]] = set()  # event ids this batch will record
    for index, site, payload, event_id, digest in parsed:
        if (site.pk, event_id) in deliveries or (site.pk, event_id) in claimed:
            fresh.append((index, site, payload, event_id, digest, None, "", []))  # decided in order below
            continue
        try:
            occurred_at = _occurred_at(payload.get("occurred_at"))
            order_id = _text(payload, "order_id")
            items = _items(payload.get("items"), required=True)
        except Unacceptable as exc:
            results[index] = exc
            continue
        claimed.add((site.pk, event_id))
        fresh.append((index, site, payload, event_id, digest, occurred_at, order_id, items))
    sites = {item[1].pk: item[1] for item in fresh}
    resolved: dict[tuple[int, str], str] = {}
    purchased: set[tuple[int, str]] = set()
    skus: dict[tuple[int, str], int] = {}
    for site_id, site in sites.items():
        mine = [item for item in fresh if item[1].pk == site_id and item[5] is not None]
        tombstones = {item[6]: order_tombstone(site=site, order_id=item[6]) for item in mine}
        erased = set(
            Event.objects.filter(site_id=site_id, order_id__in=set(tombstones.values())).values_list(
                "order_id", flat=True
            )
        )
        for order_id, tombstone in tombstones.items():
            resolved[(site_id, order_id)] = tombstone if tombstone in erased else order_id
        orders = {resolved[(site_id, item[6])] for item in mine}
        purchased |= {
            (site_id, order_id)
            for order_id in Event.objects.filter(site_id=site_id, kind="purchase", order_id__in=orders)
            .values_list("order_id", flat=True)
            .distinct()
        }
        wanted = {sku for item in mine for sku, _ in item[7]}
        for sku, pk in Product.objects.filter(site_id=site_id, sku__in=wanted).values_list("sku", "pk"):
            skus[(site_id, sku)] = pk
    rows: list[Event] = []
    delivered: list[ServerDelivery] = []
    changed: set[int] = set()
    for index, site, payload, event_id, digest, occurred_at, raw_order_id, items in fresh:
        key = (site.pk, event_id)
        if key in deliveries:
            previous_digest, previous = deliveries[key]
            if previous_digest != digest:
                results[index] = Unacceptable(
                    "this event_id was already used with a different body",
                    field="event_id",
                    status=409,
                    code="conflict",
                )
            else:
                results[index] = (200, _server_answer(site, previous, payload, duplicate=True))
            continue
        if occurred_at is None:
            # A repeat, within the batch, of an event id whose first delivery was then refused
            # (its visitor token): one by one, this one would be validated afresh.
            raise BatchFallback
        order_id = resolved[(site.pk, raw_order_id)]
        if (site.pk, order_id) in purchased:
            response = {"accepted": True, "duplicate": True, "refused_positions": []}
        else:
            token = payload.get("visitor_token")
            try:
                _visitor_token_check(token)
            except Unacceptable as exc:
                results[index] = exc
                continue
            is_test = payload.get("test") is True
            refused = [position for position, (sku, _) in enumerate(items) if (site.pk, sku) not in skus]
            for position, (sku, quantity) in enumerate(items):
                if (site.pk, sku) in skus:
                    rows.append(
                        Event(
                            site=site,
                            product_id=skus[(site.pk, sku)],
                            kind=EventKind.PURCHASE,
                            source=EventSource.SERVER,
                            occurred_at=occurred_at,
                            order_id=order_id,
                            verified=True,
                            is_test=is_test,
                            quantity=quantity,
                            idempotency_key=f"{event_id}:{position}",
                        )
                    )
                    changed.add(skus[(site.pk, sku)])
            purchased.add((site.pk, order_id))
            response = {"accepted": True, "duplicate": False, "refused_positions": refused}
            if token is not None and not is_test and len(refused) < len(items):
                response["attribution"] = conversion_record(
                    site=site, order_id=order_id, token=token, occurred_at=occurred_at
                )
            for _ in refused:
                ingest_refusal_count(site_id=site.pk, endpoint="server_events", code="unknown_product")
        deliveries[key] = (digest, response)
        delivered.append(
            ServerDelivery(site=site, idempotency_key=event_id, body_sha256=digest, response=response)
        )
        results[index] = (200 if response["duplicate"] else 202, _server_answer(site, response, payload))
    Event.objects.bulk_create(rows)
    ServerDelivery.objects.bulk_create(delivered)
    ledger_changed_on_commit(changed)
    return results
