"""Reads."""

import time
from dataclasses import dataclass

from .models import Product, Site


@dataclass(frozen=True)
class WidgetTarget:
    site_id: int
    site_origins: tuple[str, ...]
    product_id: int
    sku: str


# The socket handshake is hot (thousands of connects a minute); a few seconds of staleness
# after an origin is removed in the admin is the trade for one query less per connect.
_TARGET_TTL_S = 5.0
_targets: dict[tuple[str, str], tuple[float, WidgetTarget | None]] = {}


def widget_target_get(*, key: str, sku: str) -> WidgetTarget | None:
    """The active site with public key `key` and its product `sku`, or None."""
    if not (key_plausible(key) and key_plausible(sku)):
        return None
    now = time.monotonic()
    cached = _targets.get((key, sku))
    if cached is not None and cached[0] > now:
        return cached[1]
    product = (
        Product.objects.select_related("site")
        .filter(site__public_key=key, site__is_active=True, sku=sku)
        .first()
    )
    target = (
        WidgetTarget(
            site_id=product.site_id,
            site_origins=tuple(product.site.origins),
            product_id=product.pk,
            sku=product.sku,
        )
        if product
        else None
    )
    if len(_targets) > 10_000:
        _targets.clear()
    _targets[(key, sku)] = (now + _TARGET_TTL_S, target)
    return target


def widget_targets_forget() -> None:
    _targets.clear()


def key_plausible(value) -> bool:
    """A string that could be a key or SKU. PostgreSQL refuses NUL in text, so such input must be
    turned away before a query, as bad input, not become a database error."""
    return isinstance(value, str) and 0 < len(value) <= 200 and "\x00" not in value


def site_by_key(*, key: str) -> Site | None:
    if not key_plausible(key):
        return None
    return Site.objects.filter(public_key=key).first()


def site_active_by_key(*, key: str) -> Site | None:
    if not key_plausible(key):
        return None
    return Site.objects.filter(public_key=key, is_active=True).first()
