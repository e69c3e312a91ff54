"""Event in → validated → ledger. Browser events carry no proof, so they are never `verified`
and can never be a purchase (SPEC 2.4)."""

from django.utils import timezone

from .models import Event, EventKind, EventSource

BROWSER_KINDS = frozenset({EventKind.VIEW, EventKind.ADD_TO_CART})


# What a page may tell us about its context (SPEC 3, segments): short labels only, never
# free text that could carry a name or an email.
CONTEXT_KEYS = frozenset({"locale", "country", "device", "referrer", "campaign", "returning"})
CONTEXT_VALUE_MAX = 64


def context_clean(raw: dict) -> dict[str, str]:
    clean = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, (str, bool)):
            continue
        if key in CONTEXT_KEYS or (key.startswith("hint_") and len(key) <= 40):
            text = str(value).lower() if isinstance(value, bool) else value
            if "@" not in text:
                clean[key] = text[:CONTEXT_VALUE_MAX]
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
    source: str = EventSource.SOCKET,
    context: dict | None = None,
) -> Event:
    if kind not in BROWSER_KINDS:
        raise ForbiddenKind(kind)
    now = timezone.now()
    return Event.objects.create(
        site_id=site_id,
        product_id=product_id,
        kind=kind,
        source=source,
        visitor_hash=visitor_hash,
        occurred_at=now,
        received_at=now,
        verified=False,
        is_bot=is_bot,
        context=context or {},
    )
