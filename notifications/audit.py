"""The claims audit (SPEC 2.6): re-check a sample of logged notifications against the ledger, as of
the moment each was computed, and raise an alarm on any claim the ledger does not back.

- `recent_purchase`: its evidence event must be a verified, non-test purchase of that product,
  inside the window, not withdrawn by then, and the minutes shown must be its real age, floored.
- `purchases_in_window`, `add_to_cart_in_window`: recomputed from the ledger at the evidence's
  `computed_at`; the displayed number must not exceed it.
- `viewing_now`: presence is not in the ledger, so the audit checks the claim against the
  aggregate logged with it (distinct visitors ≥ the true value ≥ the displayed number).
- Every kind, first: the text the shopper read. It is rendered again from the template text and
  locale logged with the notification and its claim, by the policy's own `template_render`; a
  text that differs (changed in the database after the fact) raises an alarm (SPEC 7). Rows
  logged before migration 0011 kept no template and skip this check.

A second check (`purchases_unviewed_audit`, SPEC 7) looks at the store's own evidence: a signed
purchase (the store's API, not a platform webhook) of a product that no visitor viewed in the 24
hours before it is a sign of invented orders. It raises an alarm and withdraws nothing: a shopper
who bought from a link without the widget is possible, an invented order is a store's lie.

A third (`site_mismatch_audit`, issue 20) looks for evidence moved between stores: an event, or a
notification, whose site is not its product's site. The ORM refuses to move a product
(`Product.save`), so this can only come from raw SQL or `QuerySet.update` by someone with database
access: the audit catches it, nothing here can prevent it.

Alarms are `AuditAlarm` rows (listed in the admin) and ERROR log lines. Running twice re-checks
nothing: each notification is audited once.
"""

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone, translation

from . import metrics
from .models import AuditAlarm, Event, EventKind, EventSource, Exposure, Notification
from .policy.decision import template_render

log = logging.getLogger(__name__)

# A claim's text is fixed when it is computed and logged a moment later; allow that moment.
COMPUTE_TO_LOG_S = 5


@dataclass(frozen=True)
class AuditResult:
    checked: int
    alarms: int


def _displayed_number(displayed: str) -> int | None:
    digits = displayed[:-1] if displayed.endswith("+") else displayed
    return int(digits) if digits.isdigit() else None


def _computed_at(row: Notification) -> dt.datetime:
    raw = (row.evidence or {}).get("computed_at")
    try:
        return dt.datetime.fromisoformat(raw) if raw else row.created_at
    except (TypeError, ValueError):
        return row.created_at


TEXT_DIFFERS = "the text shown differs from its template rendered with its claim"


def text_check(row: Notification) -> tuple[str, str] | None:
    """None if the notification's text is its template rendered with its claim (or the row kept
    no template: logged before migration 0011), else (reason, the text rendered, cut to fit)."""
    if not row.template_text:
        return None
    claim = row.claim or {}
    # `{window}` is translated in the active language, as it was when the round rendered it.
    with translation.override(row.locale or None):
        try:
            rendered = template_render(
                template=row.template_text,
                displayed=str(claim.get("displayed", "")),
                window_s=int(claim.get("window_s", row.window_s)),
                group_label=str((row.evidence or {}).get("group_label", "")),
                language=translation.get_language(),
            )
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return "the logged template cannot be rendered", ""
    if rendered != row.text:
        return TEXT_DIFFERS, rendered[:40]
    return None


def claim_check(row: Notification) -> tuple[str, str] | None:
    """None if the text is its template's and the ledger backs the claim, else (reason,
    recomputed value)."""
    claim = row.claim or {}
    shown = _displayed_number(str(claim.get("displayed", "")))
    if shown is None or claim.get("metric") != row.kind:
        return "the claim is malformed", ""
    problem = text_check(row)
    if problem is not None:
        return problem
    if row.true_value < shown and row.kind != "recent_purchase":
        return "the logged true value is below the displayed number", str(row.true_value)
    at = _computed_at(row)
    if row.kind == "viewing_now":
        distinct = (row.evidence or {}).get("distinct_visitors")
        if not isinstance(distinct, int) or distinct < row.true_value:
            return "the presence aggregate does not back the true value", str(distinct)
        return None
    if row.kind == "recent_purchase":
        ids = (row.evidence or {}).get("event_ids") or []
        purchase = Event.objects.filter(pk__in=ids[:1], product_id=row.product_id).first()
        if purchase is None:
            return "the evidence names no purchase of this product", ""
        if (
            purchase.kind != EventKind.PURCHASE
            or not purchase.verified
            or purchase.is_test
            or purchase.is_bot
        ):
            return "the evidence is not a verified purchase", purchase.kind
        live = metrics.purchases_live(
            product_id=row.product_id, since=at - dt.timedelta(seconds=row.window_s), at=at
        )
        if not live.filter(pk=purchase.pk).exists():
            return "the purchase was outside the window or withdrawn when shown", ""
        age_s = (at - purchase.occurred_at).total_seconds()
        lowest, highest = int(age_s // 60), int((age_s + COMPUTE_TO_LOG_S) // 60)
        if not lowest <= shown <= highest:
            return "the minutes shown are not the purchase's real age", str(lowest)
        return None
    if row.kind == "purchases_in_window":
        found = metrics.purchases_in_window(product_id=row.product_id, at=at, windows_s=(row.window_s,))
        truth = found[0].true_value
    elif row.kind == "add_to_cart_in_window":
        truth = metrics.add_to_cart_in_window(
            product_id=row.product_id, at=at, window_s=row.window_s
        ).true_value
    else:
        return f"no audit rule for {row.kind}", ""
    if truth < shown:
        return "the ledger holds fewer than the displayed number", str(truth)
    return None


def claims_audit(*, sample_size: int = 200, since_h: int = 48) -> AuditResult:
    """Audit up to `sample_size` not yet audited notifications from the last `since_h` hours."""
    now = timezone.now()
    sample = list(
        Notification.objects.filter(
            audited_at__isnull=True, created_at__gte=now - dt.timedelta(hours=since_h)
        ).order_by("?")[:sample_size]
    )
    alarms = 0
    for row in sample:
        problem = claim_check(row)
        with transaction.atomic():
            if problem is not None:
                reason, recomputed = problem
                AuditAlarm.objects.update_or_create(
                    notification=row,
                    defaults={
                        "reason": reason,
                        "claimed": row.claim.get("displayed", ""),
                        "recomputed": recomputed,
                    },
                )
                alarms += 1
                log.error("claims audit: notification %s (%s) %s", row.pk, row.kind, reason)
            Notification.objects.filter(pk=row.pk).update(audited_at=now)
    return AuditResult(checked=len(sample), alarms=alarms)


# A page view is logged when it ends (a socket's Exposure row) and browser events within a batch
# interval: a purchase younger than this is checked on a later run, once its views are in.
UNVIEWED_GRACE_S = 15 * 60
VIEWED_BEFORE_S = 24 * 3600


def purchases_unviewed_audit(*, since_h: int = 48, now: dt.datetime | None = None) -> int:
    """Alarm (once each) on signed purchases received in the last `since_h` hours whose product
    no visitor viewed in the 24 hours before the purchase: no non-bot browser event of that
    product, and no page view with the widget's socket. Returns the number of new alarms."""
    now = now or timezone.now()
    window = dt.timedelta(seconds=VIEWED_BEFORE_S)
    browsed = Event.objects.filter(
        product_id=OuterRef("product_id"),
        kind__in=(EventKind.VIEW, EventKind.ADD_TO_CART),
        is_bot=False,
        occurred_at__gt=OuterRef("occurred_at") - window,
        occurred_at__lte=OuterRef("occurred_at"),
    )
    visited = Exposure.objects.filter(
        product_id=OuterRef("product_id"),
        started_at__gt=OuterRef("occurred_at") - window,
        started_at__lte=OuterRef("occurred_at"),
    )
    unviewed = list(
        Event.objects.filter(
            kind=EventKind.PURCHASE,
            source=EventSource.SERVER,
            verified=True,
            is_test=False,
            product__isnull=False,
            received_at__gte=now - dt.timedelta(hours=since_h),
            received_at__lte=now - dt.timedelta(seconds=UNVIEWED_GRACE_S),
            alarm__isnull=True,
        )
        .filter(~Exists(browsed), ~Exists(visited))
        .values_list("pk", "product_id")
    )
    for pk, product_id in unviewed:
        AuditAlarm.objects.get_or_create(
            event_id=pk,
            defaults={
                "reason": "a purchase reported by the store's own server of a product no visitor "
                "viewed in the 24 hours before it (not withdrawn: check the order)",
                "claimed": "purchase",
                "recomputed": "0 views",
            },
        )
        log.error("purchases audit: signed purchase %s of product %s: no view in 24 h", pk, product_id)
    return len(unviewed)


SITE_MISMATCH_EVENT = (
    "the event's site differs from its product's site (the product was moved to another store)"
)
SITE_MISMATCH_NOTIFICATION = (
    "the notification's site differs from its product's site (the product was moved to another store)"
)


@dataclass(frozen=True)
class SiteMismatchResult:
    events: int
    notifications: int


def site_mismatch_audit(*, limit: int = 1000) -> SiteMismatchResult:
    """Alarm (once each) on ledger events and notifications whose site is not their product's
    site: a product moved to another store behind the ORM's back, taking its orders with it
    ("Ordered 5 times in the last 24 hours" under a rival's new product). Up to `limit` new alarms
    of each per run; the rest come on the next run. Returns the number of new alarms.

    Each side is one SELECT joining the rows with their product (no query per row) and one
    INSERT of the alarms. Not bounded in time: a product moved today takes its old events with
    it, and the ledger is itself bounded by CANDOR_RETENTION_DAYS. An event that already has an
    alarm (an unviewed signed purchase) keeps that one: an alarm is one row per event."""
    events = list(
        Event.objects.filter(product__isnull=False, alarm__isnull=True)
        .exclude(site_id=F("product__site_id"))
        .order_by("pk")
        .values_list("pk", "site_id", "product_id", "product__site_id")[:limit]
    )
    notifications = list(
        Notification.objects.filter(alarm__isnull=True)
        .exclude(site_id=F("product__site_id"))
        .order_by("pk")
        .values_list("pk", "site_id", "product_id", "product__site_id")[:limit]
    )
    # A concurrent run may have raised some of them meanwhile: the one-to-one keeps one each.
    AuditAlarm.objects.bulk_create(
        [
            AuditAlarm(
                event_id=pk,
                reason=SITE_MISMATCH_EVENT,
                claimed=f"site {site_id}",
                recomputed=f"product's site {product_site_id}",
            )
            for pk, site_id, _, product_site_id in events
        ]
        + [
            AuditAlarm(
                notification_id=pk,
                reason=SITE_MISMATCH_NOTIFICATION,
                claimed=f"site {site_id}",
                recomputed=f"product's site {product_site_id}",
            )
            for pk, site_id, _, product_site_id in notifications
        ],
        ignore_conflicts=True,
    )
    moved: dict[tuple[int, int, int], list[int]] = {}
    for pk, site_id, product_id, product_site_id in events:
        moved.setdefault((product_id, site_id, product_site_id), []).append(pk)
    for (product_id, site_id, product_site_id), pks in moved.items():
        # One line per moved product, not per event: a product with 10,000 views moved is one story.
        log.error(
            "site audit: product %s is on site %s but %d of its events (first %s) were recorded for site %s",
            product_id,
            product_site_id,
            len(pks),
            pks[0],
            site_id,
        )
    for pk, site_id, product_id, product_site_id in notifications:
        log.error(
            "site audit: notification %s of site %s names product %s of site %s",
            pk,
            site_id,
            product_id,
            product_site_id,
        )
    return SiteMismatchResult(events=len(events), notifications=len(notifications))
