"""Everything Candor holds about one order: export it, or erase the link to it.

`ORDER_TABLES` is the one list of tables that hold order data; a model that stores an order id
joins it here, and export, erase and their tests follow.

Erasure and the ledger. The ledger is append-only and past claims were audited against it, so
erasing an order deletes no row and changes no count. It replaces the order's id, wherever it is
stored, by a tombstone — `erased:` + HMAC-SHA256(key derived from DJANGO_SECRET_KEY,
"<site id>|<order id>") — and drops what was stored beside it (webhook response bodies, payload
hashes, browser context). Every row of the order gets the same tombstone, so purchases still count
once per order, refunds still withdraw, and the claims audit re-checks old notifications against
the same counts. The tombstone cannot be turned back into the order id; only someone holding both
Candor's secret key and the order id can recompute it, which Candor does itself for one purpose:
a delivery about the order that arrives after the erasure (a late refund, a retried purchase) is
filed under the tombstone (`order_id_resolve`), so it still withdraws or de-duplicates and never
counts the order twice.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Q
from django.utils.crypto import salted_hmac

from .models import Conversion, DeliverySource, Event, EventSource, ServerDelivery, Site

TOMBSTONE_PREFIX = "erased:"


def order_tombstone(*, site: Site, order_id: str) -> str:
    digest = salted_hmac("candor.order_erase", f"{site.pk}|{order_id}", algorithm="sha256").hexdigest()
    return TOMBSTONE_PREFIX + digest[:48]


def order_id_resolve(*, site: Site, order_id: str) -> str:
    """The id an incoming delivery about `order_id` is filed under: its tombstone if the order was
    erased, so a late refund still withdraws it and a retried purchase is still a duplicate."""
    tombstone = order_tombstone(site=site, order_id=order_id)
    if Event.objects.filter(site=site, order_id=tombstone).exists():
        return tombstone
    return order_id


@dataclass(frozen=True)
class OrderIdColumn:
    """A table with a `site` and an `order_id` column. Erasing replaces the order id with the
    tombstone, gives each row's `keyed` columns (idempotency keys, which may embed the order id)
    a fresh tombstone-based value, and resets the `cleared` columns."""

    model: type[models.Model]
    keyed: tuple[str, ...] = ()
    cleared: dict = field(default_factory=dict)

    def rows(self, *, site: Site, order_id: str, found: dict) -> models.QuerySet:
        return self.model.objects.filter(site=site, order_id=order_id)

    def erase(self, rows: models.QuerySet, *, tombstone: str) -> int:
        count = 0
        for pk in list(rows.values_list("pk", flat=True)):
            changes = {"order_id": tombstone, **self.cleared}
            changes.update({name: f"{tombstone}:{pk}" for name in self.keyed})
            # QuerySet.update, not save(): the ledger refuses changes through the model, and this
            # is, with the retention purge, one of the two sanctioned paths that touch its rows.
            count += self.model.objects.filter(pk=pk).update(**changes)
        return count


@dataclass(frozen=True)
class OrderDeliveries:
    """Accepted signed requests and webhook deliveries that concern the order: signed requests by
    the event ids its ledger rows were recorded under, webhook deliveries by the order id their
    stored response names. Erasing keeps the row (so the count of deliveries stays) but replaces
    its key, drops the body's hash and the stored response."""

    model: type[models.Model] = ServerDelivery

    def rows(self, *, site: Site, order_id: str, found: dict) -> models.QuerySet:
        event_ids = set()
        for source, key in found.get(Event, []):
            # By source, not by the key's text: a signed event_id may itself read "shopify:…".
            if key and source == EventSource.SERVER:
                event_ids.add(key.rsplit(":", 1)[0])
        return self.model.objects.filter(site=site).filter(
            Q(source=DeliverySource.SERVER, idempotency_key__in=event_ids)
            | Q(response__order_id=order_id, source__in=(DeliverySource.SHOPIFY, DeliverySource.WOOCOMMERCE))
        )

    def erase(self, rows: models.QuerySet, *, tombstone: str) -> int:
        count = 0
        for pk in list(rows.values_list("pk", flat=True)):
            count += self.model.objects.filter(pk=pk).update(
                idempotency_key=f"{tombstone}:delivery:{pk}", body_sha256="", response={"erased": True}
            )
        return count


# Every table that holds data of an order. Keep Event first: the deliveries are found through
# the keys its rows were recorded under.
ORDER_TABLES: tuple = (
    OrderIdColumn(Event, keyed=("idempotency_key",), cleared={"context": {}}),
    OrderDeliveries(),
    # The experiment's attribution (SPEC 4): erasing drops the link to the visitor as well, so
    # the order no longer counts as anyone's conversion.
    OrderIdColumn(Conversion, cleared={"visitor_hash": ""}),
)


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def _rows_by_table(*, site: Site, order_id: str) -> list[tuple]:
    found: dict = {}
    result = []
    for table in ORDER_TABLES:
        rows = table.rows(site=site, order_id=order_id, found=found)
        if table.model is Event:
            found[Event] = list(rows.values_list("source", "idempotency_key"))
        result.append((table, rows))
    return result


def _jsonable(rows: Iterable[models.Model]) -> list[dict]:
    """Every stored column of each row, as JSON data (times as ISO 8601)."""
    return json.loads(
        json.dumps(
            [{f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields} for row in rows],
            cls=DjangoJSONEncoder,
        )
    )


def order_export(*, site: Site, order_id: str) -> dict:
    """Everything Candor holds for one order of `site`, by table, as JSON-ready data."""
    tables = {
        _label(table.model): _jsonable(rows.order_by("pk"))
        for table, rows in _rows_by_table(site=site, order_id=order_id)
    }
    return {"site": site.public_key, "order_id": order_id, "tables": tables}


@transaction.atomic
def order_erase(*, site: Site, order_id: str) -> dict:
    """Unlink one order from everything Candor holds (see the module's docstring): counts, claims
    and the audit stay true; the order id and what was stored beside it are gone. Safe to run
    twice (the second run finds nothing under the order id)."""
    tombstone = order_tombstone(site=site, order_id=order_id)
    # Lock the site's deliveries path for the moment, as a webhook delivery does, so no delivery
    # about this order lands half-way through.
    Site.objects.select_for_update().filter(pk=site.pk).first()
    planned = [
        (table, list(rows.values_list("pk", flat=True)))
        for table, rows in _rows_by_table(site=site, order_id=order_id)
    ]
    erased = {}
    for table, pks in planned:
        erased[_label(table.model)] = table.erase(table.model.objects.filter(pk__in=pks), tombstone=tombstone)
    return {
        "site": site.public_key,
        "erased": erased,
        "tombstone": tombstone if any(erased.values()) else None,
    }
