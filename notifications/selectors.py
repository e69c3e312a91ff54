"""Reads."""

import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Prefetch

from .models import (
    Event,
    EventKind,
    MessageTemplate,
    PolicyConfig,
    PolicySnapshot,
    PolicyVariant,
    Product,
    SegmentConfig,
    Site,
    csv_split,
)
from .policy.decision import Policy, Template
from .policy.segments import Segment, SegmentRule, default_segments


@dataclass(frozen=True)
class WidgetTarget:
    site_id: int
    site_origins: tuple[str, ...]
    product_id: int
    sku: str
    category: str = ""
    category_kind: str = "other"


# The socket handshake is hot (thousands of connects a minute); a few seconds of staleness
# after an origin is removed in the admin is the trade for one query less per connect.
_TARGET_TTL_S = 5.0

# The platform webhook secrets are stored encrypted (fields.py): paths that do not check a
# webhook leave them unread, so they do not decrypt them (about 13 µs each) on every lookup.
PLATFORM_SECRET_FIELDS = ("shopify_secret", "woocommerce_secret")

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
        .defer(*(f"site__{name}" for name in PLATFORM_SECRET_FIELDS))
        .filter(site__public_key=key, site__is_active=True, sku=sku)
        .first()
    )
    target = (
        WidgetTarget(
            site_id=product.site_id,
            site_origins=tuple(product.site.origins),
            product_id=product.pk,
            sku=product.sku,
            category=product.category,
            category_kind=product.category_kind,
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
    _sites_keyed.clear()
    _product_ids.clear()
    _active_origins.clear()


# --- The browser-event beacon's lookups (beacon.py): found rows are cached for the same few
# seconds as the socket's, so the hot path makes no query; a miss always asks the database, so a
# new site or product is never refused because of the cache.


@dataclass(frozen=True)
class SiteKeyed:
    site_id: int
    origins: frozenset[str]


_sites_keyed: dict[str, tuple[float, SiteKeyed]] = {}
_product_ids: dict[tuple[int, str], tuple[float, int]] = {}
_active_origins: dict[str, tuple[float, frozenset[str]]] = {}
MISSING = object()


def _fresh(cache: dict, key):
    cached = cache.get(key)
    return cached[1] if cached is not None and cached[0] > time.monotonic() else MISSING


def site_keyed_cached(key: str):
    return _fresh(_sites_keyed, key)


def site_keyed_get(*, key: str) -> SiteKeyed | None:
    site = site_active_by_key(key=key)
    if site is None:
        return None
    found = SiteKeyed(site_id=site.pk, origins=frozenset(site.origins))
    if len(_sites_keyed) > 10_000:
        _sites_keyed.clear()
    _sites_keyed[key] = (time.monotonic() + _TARGET_TTL_S, found)
    return found


def product_id_cached(site_id: int, sku: str):
    return _fresh(_product_ids, (site_id, sku))


def product_id_get(*, site_id: int, sku: str) -> int | None:
    product_id = Product.objects.filter(site_id=site_id, sku=sku).values_list("id", flat=True).first()
    if product_id is not None:
        if len(_product_ids) > 100_000:
            _product_ids.clear()
        _product_ids[(site_id, sku)] = (time.monotonic() + _TARGET_TTL_S, product_id)
    return product_id


def active_origins_cached():
    return _fresh(_active_origins, "all")


def active_origins_get() -> frozenset[str]:
    """Every active site's origins: whom a CORS preflight (which names no site) may answer."""
    origins = frozenset(
        origin
        for site in Site.objects.filter(is_active=True).only("allowed_origins")
        for origin in site.origins
    )
    _active_origins["all"] = (time.monotonic() + _TARGET_TTL_S, origins)
    return origins


def key_plausible(value) -> bool:
    """A string that could be a key or SKU. PostgreSQL refuses NUL in text, so such input must be
    turned away before a query, as bad input, not become a database error."""
    return isinstance(value, str) and 0 < len(value) <= 200 and "\x00" not in value


def site_by_key(*, key: str) -> Site | None:
    if not key_plausible(key):
        return None
    return Site.objects.filter(public_key=key).first()


def site_active_by_key(*, key: str, platform_secrets: bool = False) -> Site | None:
    if not key_plausible(key):
        return None
    sites = Site.objects.filter(public_key=key, is_active=True)
    return (sites if platform_secrets else sites.defer(*PLATFORM_SECRET_FIELDS)).first()


# --- The policy catalog: a site's segments, policies and templates -------------------------


@dataclass(frozen=True)
class PolicyCatalog:
    segments: tuple[Segment, ...]
    templates: tuple[tuple[str, Template], ...]  # (locale prefix, template)
    holdout_pct: float = 0.0  # the site's holdout (SPEC 4)

    def templates_for(self, locale: str) -> tuple[Template, ...]:
        return tuple(t for prefix, t in self.templates if locale == prefix or locale.startswith(prefix + "-"))


def policy_from_config(config: PolicyConfig) -> Policy:
    count_kinds = ("viewing_now", "purchases_in_window", "add_to_cart_in_window")
    return Policy(
        version=config.version_label,
        name=config.name,
        allowed_kinds=frozenset(csv_split(config.allowed_kinds)),
        display_caps={
            "viewing_now": config.cap_viewing_now,
            "purchases_in_window": config.cap_purchases_in_window,
            "add_to_cart_in_window": config.cap_add_to_cart_in_window,
        },
        rounding_steps={kind: max(1, config.rounding_step) for kind in count_kinds},
        min_count=max(3, config.min_count),
        max_share_pct=config.max_share_pct,
        tier=config.tier,
        per_page_view=config.per_page_view,
        per_session=config.per_session,
        min_gap_s=config.min_gap_s,
        dismiss_silence_s=config.dismiss_silence_s,
        recency_s={
            "recent_purchase": config.recent_purchase_window_s,
            "purchases_in_window": config.count_window_max_s,
            "add_to_cart_in_window": config.count_window_max_s,
            "viewing_now": 3600,
        },
        allowed_groups=csv_split(config.allowed_groups) or ("everyone",),
        excluded_groups=frozenset(csv_split(config.excluded_groups)),
        holdout_pct=config.holdout_pct,
    )


def _rule(row: SegmentConfig) -> SegmentRule:
    hints = dict(pair.split("=", 1) for pair in csv_split(row.hints) if "=" in pair)
    return SegmentRule(
        category_kinds=csv_split(row.category_kinds),
        categories=csv_split(row.categories),
        locales=csv_split(row.locales),
        countries=csv_split(row.countries),
        devices=csv_split(row.devices),
        returning=row.returning,
        referrer_contains=row.referrer_contains.strip().lower(),
        campaigns=csv_split(row.campaigns),
        hints={k.strip(): v.strip() for k, v in hints.items()},
    )


def policy_catalog_build(site_id: int) -> PolicyCatalog:
    rows = list(
        SegmentConfig.objects.filter(site_id=site_id)
        .select_related("policy")
        .prefetch_related(Prefetch("variants", queryset=PolicyVariant.objects.select_related("policy")))
    )

    def variants(row: SegmentConfig) -> tuple:
        return tuple((policy_from_config(v.policy), v.share_pct) for v in row.variants.all())

    if rows:
        segments = [
            Segment(row.name, _rule(row), policy_from_config(row.policy), variants(row))
            for row in rows
            if not row.is_default
        ]
        default = next((row for row in rows if row.is_default), None)
        if default is not None:
            segments.append(
                Segment(default.name, SegmentRule(), policy_from_config(default.policy), variants(default))
            )
        else:
            segments.append(default_segments(min_count=max(1, settings.CANDOR_MIN_COUNT))[-1])
    else:
        segments = list(default_segments(min_count=max(1, settings.CANDOR_MIN_COUNT)))
    templates = tuple(
        (
            row.locale.strip().lower(),
            Template(
                kind=row.kind, tier=row.tier, group=row.group, singular=row.text, plural=row.text_plural
            ),
        )
        for row in MessageTemplate.objects.filter(site_id=site_id)
    )
    holdout_pct = Site.objects.filter(pk=site_id).values_list("holdout_pct", flat=True).first() or 0.0
    return PolicyCatalog(segments=tuple(segments), templates=templates, holdout_pct=holdout_pct)


# Segments and policies change rarely and are read on every page message: a few seconds of
# staleness in other processes after an edit is the trade for no query on the hot path. In the
# editing process, saving or deleting a catalog row drops the cache at once (signals.py).
_CATALOG_TTL_S = 5.0
_catalogs: dict[int, tuple[float, PolicyCatalog]] = {}


def policy_catalog_get(site_id: int) -> PolicyCatalog:
    now = time.monotonic()
    cached = _catalogs.get(site_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    catalog = policy_catalog_build(site_id)
    _catalogs[site_id] = (now + _CATALOG_TTL_S, catalog)
    return catalog


def policy_catalogs_forget() -> None:
    _catalogs.clear()


def policy_by_version(version: str, *, site_id: int) -> Policy | None:
    """The policy as it was at `version`: a store's snapshot, or a shipped default."""
    snapshot = (
        PolicySnapshot.objects.filter(label=version, policy__site_id=site_id).select_related("policy").first()
    )
    if snapshot is not None:
        config = PolicyConfig(site_id=site_id, name=snapshot.policy.name, version=snapshot.version)
        for name, value in snapshot.settings.items():
            setattr(config, name, value)
        return policy_from_config(config)
    for segment in default_segments(min_count=max(1, settings.CANDOR_MIN_COUNT)):
        if segment.policy.version == version:
            return segment.policy
    return None


def purchase_sources_count(*, product_id: int, event_ids: list) -> dict[str, int]:
    """Distinct orders per `Event.source` among a claim's evidence (SPEC 7: the store's own
    evidence is labelled). Only purchases of that product count, whatever the evidence lists."""
    ids = [event_id for event_id in event_ids if isinstance(event_id, int)]
    rows = (
        Event.objects.filter(pk__in=ids, product_id=product_id, kind=EventKind.PURCHASE)
        .values("source")
        .annotate(orders=Count("order_id", distinct=True))
    )
    return {row["source"]: row["orders"] for row in rows}


def product_name_get(*, product_id: int) -> str:
    """The product's name now ("" if it is gone): a notification logs the name its claim was
    decided under, so a later rename does not rewrite what old /why/ pages say (issue 20)."""
    return Product.objects.filter(pk=product_id).values_list("name", flat=True).first() or ""
