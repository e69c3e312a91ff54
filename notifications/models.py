"""Candor's tables: sites and their catalog, the append-only ledger, and the notification log."""

import secrets
import unicodedata
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.deconstruct import deconstructible

from .fields import EncryptedTextField


def origin_normalize(value: str) -> str:
    """`scheme://host[:port]`, lower-cased, default ports dropped; raises ValueError if not an origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) origin: {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"an origin has no path, query or credentials: {value!r}")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def label_clean(value: str) -> str:
    """A store-provided label (product name, category) as Candor stores and shows it.

    Markup is kept as the text it is: every place that shows a label escapes it (Django's
    templates and admin) or sets it as text (widget.js uses textContent), so `<script>` shows as
    those characters. Invisible characters are removed: Unicode format characters (category Cf:
    bidi overrides and isolates such as U+202E, zero-width U+200B-U+200D, U+2060, U+FEFF) and
    control characters (Cc). A bidi override would reverse the text around it in a toast or the
    admin ("…gnippohs"), and a zero-width character makes two names that look alike differ.
    Runs of whitespace become one space."""
    kept = "".join(ch for ch in value if ch.isspace() or unicodedata.category(ch) not in ("Cf", "Cc"))
    return " ".join(kept.split())


class PurchaseSources(models.TextChoices):
    ANY = "any", "Any verified source (the store's signed API and platform webhooks)"
    PLATFORM = "platform", "Platform-verified only (Shopify or WooCommerce webhooks)"


class Site(models.Model):
    """A store. Its public key is embedded in pages; its secrets sign server-to-server calls."""

    name = models.CharField(max_length=200)
    public_key = models.CharField(max_length=64, unique=True, editable=False)
    allowed_origins = models.TextField(
        help_text="One origin per line, e.g. https://shop.example.com. "
        "Pages and sockets from any other origin are refused."
    )
    # Stored encrypted (fields.py); blank means "not configured".
    shopify_secret = EncryptedTextField(blank=True, help_text="The Shopify app's webhook secret (SPEC 5).")
    woocommerce_secret = EncryptedTextField(
        blank=True, help_text="The WooCommerce webhook's secret (SPEC 5)."
    )
    is_demo = models.BooleanField(
        default=False, help_text="The demo storefront's site. Its data never mixes with a live site."
    )
    is_active = models.BooleanField(default=True)
    holdout_pct = models.FloatField(
        default=0.0,
        help_text="Share of visitors (0–100, by visitor hash) who never see a notification: the "
        "site's control group for measuring lift (SPEC 4).",
    )
    attribution_window_h = models.PositiveSmallIntegerField(
        default=24,
        help_text="A verified purchase counts as a conversion of a visitor's arm when it comes at most "
        "this many hours after their first exposure (1–24: the daily salt limits how far back a "
        "visitor can be linked).",
    )
    purchases_from = models.CharField(
        max_length=10,
        choices=PurchaseSources.choices,
        default=PurchaseSources.ANY,
        help_text="Which purchases count toward every purchase claim: orders reported by the store's "
        "own signed API and verified platform webhooks, or only the verified Shopify/WooCommerce "
        "webhooks (a promise to shoppers that no order the store typed in itself is counted).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.name

    @property
    def origins(self) -> list[str]:
        return [line.strip() for line in self.allowed_origins.splitlines() if line.strip()]

    def origin_allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        try:
            return origin_normalize(origin) in self.origins
        except ValueError:
            return False

    def clean(self) -> None:
        normalized = []
        for line in self.allowed_origins.splitlines():
            if not line.strip():
                continue
            try:
                normalized.append(origin_normalize(line))
            except ValueError as exc:
                raise ValidationError({"allowed_origins": str(exc)}) from exc
        if not normalized:
            raise ValidationError({"allowed_origins": "At least one origin is required."})
        self.allowed_origins = "\n".join(dict.fromkeys(normalized))
        if not 0 <= self.holdout_pct <= 100:
            raise ValidationError({"holdout_pct": "A percentage from 0 to 100."})
        if not 1 <= self.attribution_window_h <= 24:
            raise ValidationError({"attribution_window_h": "From 1 to 24 hours (the daily salt's limit)."})


class SiteSecret(models.Model):
    """A signing secret. At most two are active at once, so a store can rotate without downtime.

    HMAC verification needs the secret itself, so it is stored, encrypted (fields.py); it is shown
    once, when made, and afterwards only its first characters, `hint` ("sk_AbCd"), identify it.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="secrets")
    # Not unique: each ciphertext has a random IV. 32 random bytes make a collision moot anyway.
    secret = EncryptedTextField(editable=False)
    hint = models.CharField(max_length=16, editable=False, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    HINT_CHARS = 7  # "sk_" and 4 random characters: tells two secrets apart, gives nothing away

    def __str__(self) -> str:
        state = "retired" if self.retired_at else "active"
        return f"{self.hint}… ({state}, made {self.created_at:%Y-%m-%d %H:%M})"

    def save(self, *args, **kwargs) -> None:
        if not self.hint and self.secret:
            self.hint = self.secret[: self.HINT_CHARS]
        super().save(*args, **kwargs)


class CategoryKind(models.TextChoices):
    SELF_EXPRESSION = "self_expression", "Self-expression (fashion, music, lifestyle)"
    UTILITARIAN = "utilitarian", "Utilitarian"
    OTHER = "other", "Other"


class ImmutableFieldError(ValidationError):
    """A change to a field that is fixed once the row exists (a product's site or SKU)."""


class Product(models.Model):
    """A store's product. Its site and SKU are fixed once it exists (SPEC 7): the ledger's events
    and the notification log point at the row, so moving it to another store, or giving it another
    SKU, would hand its orders to a product they were never placed for ("Ordered 5 times in the
    last 24 hours" under a rival's brand-new product). The name may change; each notification
    keeps the name it was shown under (`Notification.product_name`)."""

    FIXED_FIELDS = ("site", "sku")

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="products")
    sku = models.CharField(max_length=128)
    name = models.CharField(max_length=300)
    url = models.URLField(max_length=1000, blank=True)
    category = models.CharField(max_length=200, blank=True)
    category_kind = models.CharField(max_length=20, choices=CategoryKind.choices, default=CategoryKind.OTHER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "sku"], name="product_sku_per_site")]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        # A save that writes neither field (the catalog upsert names its fields) cannot move it.
        if update_fields is None or {"site", "site_id", "sku"} & set(update_fields):
            changed = self._fixed_fields_changed()
            if changed:
                raise ImmutableFieldError(
                    f"Product {self.pk}: its {' and '.join(changed)} cannot change after it is created "
                    "(its orders and notifications would follow it to another store or SKU)."
                )
        super().save(*args, **kwargs)

    def clean(self) -> None:
        # The admin's forms and the catalog upsert both come through here.
        self.name = label_clean(self.name)
        self.category = label_clean(self.category)
        changed = self._fixed_fields_changed()
        if changed:
            raise ValidationError(
                {name: f"A product's {name} cannot change after it is created." for name in changed}
            )

    def _fixed_fields_changed(self) -> list[str]:
        """The fixed fields whose value differs from the stored row's (none for a new product).
        Read from the database, not from the values the instance was loaded with: an instance
        made by hand with an existing pk would otherwise pass."""
        if self.pk is None:
            return []
        stored = Product.objects.filter(pk=self.pk).values("site_id", "sku").first()
        if stored is None:
            return []
        return [
            name
            for name, now, before in (
                ("site", self.site_id, stored["site_id"]),
                ("sku", self.sku, stored["sku"]),
            )
            if now != before
        ]


class AppendOnlyError(Exception):
    pass


class EventKind(models.TextChoices):
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    REFUND = "refund"
    CANCEL = "cancel"


class EventSource(models.TextChoices):
    BROWSER = "browser"
    SOCKET = "socket"
    SERVER = "server"
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"


class Event(models.Model):
    """The ledger: what happened, as recorded. Rows are only ever added.

    A refund or cancel is its own row naming the order; it withdraws the purchase from every
    later claim without touching the purchase row (SPEC 2.4).
    """

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="events")
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, null=True, blank=True, related_name="events"
    )
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    source = models.CharField(max_length=20, choices=EventSource.choices)
    # Daily-salted keyed hash; never a raw IP or User-Agent (SPEC 2.7).
    visitor_hash = models.CharField(max_length=64, blank=True, db_index=True)
    # The client address, keyed and daily-salted like the visitor hash, never the address itself:
    # a count takes at most CANDOR_VISITORS_PER_ADDRESS visitors of one address (SPEC 7).
    address_hash = models.CharField(max_length=32, blank=True, default="")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    order_id = models.CharField(max_length=200, blank=True)
    quantity = models.PositiveIntegerField(default=1)
    verified = models.BooleanField(default=False)
    is_bot = models.BooleanField(default=False)
    is_test = models.BooleanField(default=False)
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # Keys are namespaced by source (SPEC 7): a signed `event_id` can never take a key a
            # platform delivery needs, whatever text it chooses ("shopify:order:…").
            models.UniqueConstraint(
                fields=["site", "source", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="event_idempotency_key_per_source",
            )
        ]
        indexes = [
            models.Index(fields=["product", "kind", "occurred_at"]),
            # Withdrawals are looked up by order (metrics.py, webhooks.py).
            models.Index(fields=["site", "order_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("The event ledger is append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The event ledger is append-only.")


def notification_public_id() -> str:
    # 16 random bytes, 22 url-safe characters: the row's integer id would let anyone walk every
    # store's claims on /why/ and read off how many a store emits (SPEC 7).
    return secrets.token_urlsafe(16)


class Notification(models.Model):
    """One row per distinct emitted claim; its public id is what every recipient gets and /why/
    explains. The integer primary key stays internal (admin, audit, foreign keys)."""

    public_id = models.CharField(max_length=32, unique=True, default=notification_public_id, editable=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="notifications")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="notifications")
    kind = models.CharField(max_length=40)
    text = models.CharField(max_length=500)
    claim = models.JSONField()
    true_value = models.IntegerField(help_text="The lowest true value among this claim's recipients.")
    window_s = models.PositiveIntegerField()
    evidence = models.JSONField()
    policy_version = models.CharField(max_length=64)
    # The product's name when the claim was decided: /why/ shows this one, so renaming the
    # product later ("brand-new gadget (launched today)") does not rewrite what old claims were
    # about. Rows logged before migration 0013 got the name the product had then.
    product_name = models.CharField(max_length=300, blank=True, default="")
    # The exact template text the message was rendered from and the language of its `{window}`
    # words: the claims audit renders (template, claim, locale) again and alarms when `text`
    # differs (SPEC 7). Kept here, not as a reference to the store's editable MessageTemplate, so
    # a later edit of the template does not change what an old notification was rendered from.
    # Blank on rows logged before migration 0011: the audit cannot re-render those.
    template_text = models.CharField(max_length=500, blank=True, default="")
    locale = models.CharField(max_length=16, blank=True, default="")
    recipient_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    last_emitted_at = models.DateTimeField(default=timezone.now)
    # Set by the claims audit (audit.py): when this row was re-checked against the ledger.
    audited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["site", "created_at"]),
            models.Index(fields=["product", "kind", "last_emitted_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.text}"

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("The notification log is append-only.")


class DailySalt(models.Model):
    """The day's key for visitor hashes; deleted after CANDOR_SALT_KEEP_H (Plausible's salts)."""

    day = models.DateField(unique=True)
    salt = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)


class IngestRefusal(models.Model):
    """Refused input, counted per day, site (when known), endpoint and error code."""

    day = models.DateField()
    site = models.ForeignKey(Site, on_delete=models.CASCADE, null=True, blank=True)
    endpoint = models.CharField(max_length=40)
    code = models.CharField(max_length=40)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "site", "endpoint", "code"],
                name="ingest_refusal_bucket",
                nulls_distinct=False,
            )
        ]


class DeliverySource(models.TextChoices):
    SERVER = "server"  # the store's signed API: the key is its `event_id`
    SHOPIFY = "shopify"  # a verified platform webhook: the key names its delivery id
    WOOCOMMERCE = "woocommerce"


class ServerDelivery(models.Model):
    """One accepted signed request or webhook delivery, by its idempotency key, so a repeat
    counts once and the same key with another body is a conflict (SPEC 5). Keys are namespaced by
    source (SPEC 7). `response` holds no text the sender chose beyond its order id: unknown SKUs
    are kept as positions in the body (`refused_positions`), never as text."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    source = models.CharField(max_length=20, choices=DeliverySource.choices, default=DeliverySource.SERVER)
    idempotency_key = models.CharField(max_length=200)
    body_sha256 = models.CharField(max_length=64)
    response = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "source", "idempotency_key"], name="server_delivery_key_per_source"
            )
        ]
        indexes = [
            # A webhook delivery is a repeat when its body was seen before, under any delivery id.
            models.Index(fields=["site", "source", "body_sha256"], name="server_delivery_body"),
        ]


class HourlyRollup(models.Model):
    """Per product and hour: events by kind (bots and test orders excluded), distinct visitors,
    distinct live orders. Built by a Celery task from the ledger; safe to rebuild any hour."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    hour = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    events = models.PositiveIntegerField(default=0)
    visitors = models.PositiveIntegerField(default=0)
    orders = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "hour", "kind"], name="rollup_per_product_hour_kind")
        ]
        indexes = [models.Index(fields=["site", "hour"])]


class AuditAlarm(models.Model):
    """A logged claim that the ledger does not back (SPEC 2.6): any such row is a bug to chase.
    Or (`event` set) a signed purchase of a product that no visitor viewed in the 24 hours before
    it (SPEC 7): a sign of orders the store invented. That purchase is not withdrawn: the alarm
    asks a person to look. Or an event or notification whose site is not its product's site: a
    product moved to another store behind the ORM's back (raw SQL, `QuerySet.update`)."""

    notification = models.OneToOneField(
        Notification, on_delete=models.CASCADE, related_name="alarm", null=True, blank=True
    )
    event = models.OneToOneField(
        "Event", on_delete=models.CASCADE, related_name="alarm", null=True, blank=True
    )
    found_at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=500)
    claimed = models.CharField(max_length=40)
    recomputed = models.CharField(max_length=40, blank=True)

    def __str__(self) -> str:
        if self.event_id:
            return f"Event #{self.event_id}: {self.reason}"
        return f"Claim #{self.notification_id}: {self.reason}"


# --- The policy layer's configuration (SPEC 3) ---------------------------------------------


@deconstructible
class CsvChoicesValidator:
    """A comma-separated list whose items all come from `allowed`."""

    def __init__(self, allowed) -> None:
        self.allowed = sorted(allowed)

    def __call__(self, value: str) -> None:
        unknown = [item for item in csv_split(value) if item not in self.allowed]
        if unknown:
            raise ValidationError(
                f"unknown value(s): {', '.join(unknown)}; allowed: {', '.join(self.allowed)}"
            )

    def __eq__(self, other) -> bool:
        return isinstance(other, CsvChoicesValidator) and self.allowed == other.allowed


def _csv_validator(allowed) -> CsvChoicesValidator:
    return CsvChoicesValidator(allowed)


def csv_split(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip().lower() for part in (value or "").split(",") if part.strip()))


KIND_CHOICES = [
    ("viewing_now", "viewing now"),
    ("recent_purchase", "recent purchase"),
    ("purchases_in_window", "purchases in window"),
    ("add_to_cart_in_window", "add to cart in window"),
]
KINDS = {value for value, _ in KIND_CHOICES}
GROUP_NAMES = {"category", "country", "first_time", "everyone"}


class Tier(models.IntegerChoices):
    GENTLE = 1, "1 — gentle (plain facts, no exclamation)"
    MODERATE = 2, "2 — moderate (may say “popular”)"
    STRONG = 3, "3 — strong (may say “trending”)"


class PolicyConfig(models.Model):
    """A store's policy, edited in the admin. Every save is a new version (a `PolicySnapshot`),
    and each notification records the version it was decided under."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=0, editable=False)
    allowed_kinds = models.CharField(
        max_length=200,
        default="viewing_now, recent_purchase, purchases_in_window, add_to_cart_in_window",
        validators=[_csv_validator(KINDS)],
        help_text="Comma-separated notification kinds this policy may show.",
    )
    min_count = models.PositiveIntegerField(
        default=3, help_text="Nothing is shown below this true (and displayed) count; at least 3."
    )
    cap_viewing_now = models.PositiveIntegerField(default=20, help_text="Above it: “20+”.")
    cap_purchases_in_window = models.PositiveIntegerField(default=50)
    cap_add_to_cart_in_window = models.PositiveIntegerField(default=20)
    rounding_step = models.PositiveIntegerField(
        default=1, help_text="Counts are rounded down to a multiple of this (1 = exact)."
    )
    max_share_pct = models.PositiveIntegerField(
        default=0, help_text="Largest share of a reference group that may be claimed; 0 = no share claims."
    )
    tier = models.PositiveSmallIntegerField(choices=Tier.choices, default=Tier.MODERATE)
    per_page_view = models.PositiveIntegerField(default=2, help_text="New toasts per page view.")
    per_session = models.PositiveIntegerField(default=6, help_text="New toasts per visit (30 minutes).")
    min_gap_s = models.PositiveIntegerField(default=15, help_text="Seconds between two new toasts.")
    dismiss_silence_s = models.PositiveIntegerField(
        default=600, help_text="Seconds of silence for a kind after the shopper closes one."
    )
    recent_purchase_window_s = models.PositiveIntegerField(
        default=3600, help_text="Older purchases are never shown as recent."
    )
    count_window_max_s = models.PositiveIntegerField(
        default=7 * 86_400, help_text="The widest window a purchase count may speak of."
    )
    allowed_groups = models.CharField(
        max_length=200,
        default="category, everyone",
        validators=[_csv_validator(GROUP_NAMES)],
        help_text="Reference groups in order of preference (narrowest first): category, country, "
        "first_time, everyone.",
    )
    excluded_groups = models.CharField(
        max_length=200,
        blank=True,
        validators=[_csv_validator(GROUP_NAMES)],
        help_text="Groups that never appear in a message for this policy.",
    )
    holdout_pct = models.FloatField(
        default=0.0, help_text="Share of visitors (0–100) who see nothing: the control."
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "policy"
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="policy_name_per_site")]

    def __str__(self) -> str:
        return f"{self.name} (v{self.version})"

    @property
    def version_label(self) -> str:
        return f"site{self.site_id}-{self.name}-v{self.version}"

    def clean(self) -> None:
        if self.min_count < 3:
            raise ValidationError({"min_count": "At least 3: smaller counts single out people (SPEC 2.7)."})
        if not 0 <= self.holdout_pct <= 100:
            raise ValidationError({"holdout_pct": "A percentage from 0 to 100."})
        if self.rounding_step < 1:
            raise ValidationError({"rounding_step": "At least 1."})
        if self.max_share_pct > 100:
            raise ValidationError({"max_share_pct": "A percentage from 0 to 100."})

    def settings_dict(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in self._meta.fields
            if f.name not in ("id", "site", "version", "updated_at", "name")
        }


class PolicySnapshot(models.Model):
    """An immutable copy of a policy as it was at one version: what `/why/` and audits refer to."""

    policy = models.ForeignKey(PolicyConfig, on_delete=models.CASCADE, related_name="snapshots")
    version = models.PositiveIntegerField()
    label = models.CharField(max_length=200, unique=True)
    settings = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.label


class SegmentConfig(models.Model):
    """An audience segment: an ordered rule over the visitor context (first match wins)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=100)
    order = models.PositiveIntegerField(default=100, help_text="Lower runs first; first match wins.")
    is_default = models.BooleanField(
        default=False, help_text="The segment for everyone no other rule matches (its rule is ignored)."
    )
    policy = models.ForeignKey(PolicyConfig, on_delete=models.PROTECT, related_name="segments")
    category_kinds = models.CharField(
        max_length=100,
        blank=True,
        validators=[_csv_validator({"self_expression", "utilitarian", "other"})],
        help_text="e.g. self_expression, utilitarian",
    )
    categories = models.CharField(max_length=300, blank=True, help_text="Category names, comma-separated.")
    locales = models.CharField(max_length=200, blank=True, help_text="Language prefixes, e.g. en, de, pt-br.")
    countries = models.CharField(max_length=200, blank=True, help_text="ISO country codes, e.g. us, gb.")
    devices = models.CharField(
        max_length=100, blank=True, validators=[_csv_validator({"mobile", "tablet", "desktop"})]
    )
    returning = models.CharField(
        max_length=5,
        blank=True,
        choices=[("", "any"), ("false", "new visitors"), ("true", "returning visitors")],
        help_text="From the store's data-hint-returning.",
    )
    referrer_contains = models.CharField(max_length=200, blank=True)
    campaigns = models.CharField(max_length=300, blank=True, help_text="utm_campaign values.")
    hints = models.CharField(
        max_length=300, blank=True, help_text="Store hints as name=value pairs, comma-separated."
    )

    class Meta:
        ordering = ["is_default", "order", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.policy_id and self.site_id and self.policy.site_id != self.site_id:
            raise ValidationError({"policy": "The policy must belong to the same site."})
        for pair in csv_split(self.hints):
            if "=" not in pair:
                raise ValidationError({"hints": f"'{pair}' is not name=value."})


class MessageTemplate(models.Model):
    """A store's wording for one kind, reference group, intensity tier and locale. Checked by the
    template linter when saved: numbers only through placeholders, no names, no pressure."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="templates")
    kind = models.CharField(max_length=40, choices=KIND_CHOICES)
    group = models.CharField(
        max_length=20,
        default="everyone",
        choices=[(g, g) for g in ("everyone", "category", "country", "first_time")],
    )
    tier = models.PositiveSmallIntegerField(choices=Tier.choices, default=Tier.GENTLE)
    locale = models.CharField(max_length=10, default="en", help_text="Language prefix, e.g. en, de.")
    text = models.CharField(max_length=160, help_text="e.g. “{count} other people are viewing this”.")
    text_plural = models.CharField(max_length=160, blank=True, help_text="For counts other than 1.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "kind", "group", "tier", "locale"], name="template_per_slot"
            )
        ]

    def __str__(self) -> str:
        return self.text

    def clean(self) -> None:
        """Each text field is linted on its own; a refused one carries the linter's code and reason
        as that field's error, so the admin shows it beside the field (both, if both are refused)."""
        from .policy.lint import template_lint, template_normalise

        errors: dict[str, ValidationError] = {}
        for name in ("text", "text_plural"):
            # What is linted is what is stored and shown: NFKC, no invisible or bidi characters.
            value = template_normalise(getattr(self, name))
            setattr(self, name, value)
            if not value and name == "text_plural":
                continue
            problem = template_lint(value, kind=self.kind, tier=self.tier, locale=self.locale)
            if problem is not None:
                errors[name] = ValidationError(
                    "Rejected (%(code)s): %(reason)s",
                    code=problem.code,
                    params={"code": problem.code, "reason": problem.reason},
                )
            elif self.group == "category" and "{group}" not in value:
                errors[name] = ValidationError(
                    "Rejected (GROUP_PLACEHOLDER): a category-group template names the group through {group}",
                    code="GROUP_PLACEHOLDER",
                )
        if errors:
            raise ValidationError(errors)


class RefusalCount(models.Model):
    """Policy refusals per day, site, kind and reason (SPEC 3): why something was not shown."""

    day = models.DateField()
    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    kind = models.CharField(max_length=40)
    reason = models.CharField(max_length=40)
    policy_version = models.CharField(max_length=200)
    count = models.PositiveIntegerField(default=0)
    last_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "site", "kind", "reason", "policy_version"], name="refusal_bucket"
            )
        ]
        indexes = [models.Index(fields=["site", "last_at"])]


class PolicyVariant(models.Model):
    """An experiment arm of a segment (SPEC 4): a share of the segment's visitors who get another
    policy (e.g. cap 50 beside the segment's cap 10). The rest get the segment's own policy.
    Assignment is by visitor hash, so a visitor keeps their arm for the salt's day."""

    segment = models.ForeignKey(SegmentConfig, on_delete=models.CASCADE, related_name="variants")
    policy = models.ForeignKey(PolicyConfig, on_delete=models.PROTECT, related_name="variants")
    share_pct = models.FloatField(help_text="Share (0–100) of the segment's visitors who get this policy.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["segment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["segment", "policy"], name="variant_policy_per_segment")
        ]

    def __str__(self) -> str:
        return f"{self.segment}: {self.policy.name} ({self.share_pct:g}%)"

    def clean(self) -> None:
        if not 0 < self.share_pct <= 100:
            raise ValidationError({"share_pct": "A percentage above 0, at most 100."})
        if not (self.segment_id and self.policy_id):
            return
        if self.policy.site_id != self.segment.site_id:
            raise ValidationError({"policy": "The policy must belong to the segment's site."})
        if self.policy_id == self.segment.policy_id:
            raise ValidationError({"policy": "This is the segment's own policy: the arm exists already."})
        others = PolicyVariant.objects.filter(segment_id=self.segment_id).exclude(pk=self.pk)
        if sum(v.share_pct for v in others) + self.share_pct > 100:
            raise ValidationError({"share_pct": "The segment's variants may share at most 100% in all."})


class ExposureOutcome(models.TextChoices):
    SHOWN = "shown", "shown"
    REFUSED = "refused", "refused"
    HELD_OUT = "held_out", "held out"


class Exposure(models.Model):
    """One page view of a visitor with the widget's socket open (SPEC 4): the arm it was in and
    what the policy did — shown (and the highest number displayed), refused with the reason, or
    held out. With `Conversion`, the raw material of the experiment dashboard. The visitor hash is
    the daily-salted one the ledger holds; the dashboard shows only aggregates."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    visitor_hash = models.CharField(max_length=64)
    segment = models.CharField(max_length=100)
    arm = models.CharField(max_length=100)
    policy_version = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    outcome = models.CharField(max_length=10, choices=ExposureOutcome.choices)
    reason = models.CharField(max_length=40, blank=True, help_text="Why nothing was shown.")
    toasts = models.PositiveSmallIntegerField(default=0, help_text="New toasts on this page view.")
    intensity = models.PositiveIntegerField(
        default=0, help_text="The highest consensus number displayed (“20+” is 20; a recent purchase is 1)."
    )

    class Meta:
        indexes = [
            models.Index(fields=["site", "started_at"]),
            models.Index(fields=["site", "visitor_hash"]),
        ]

    def __str__(self) -> str:
        return f"{self.segment} / {self.arm}: {self.outcome}"


class Conversion(models.Model):
    """A verified purchase whose order carried a valid visitor token: the visitor (daily-salted
    hash) who bought. Whether it still counts (not refunded or cancelled) is read from the ledger."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+")
    order_id = models.CharField(max_length=200)
    visitor_hash = models.CharField(max_length=64)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "order_id"], name="conversion_per_order")]
        indexes = [models.Index(fields=["site", "visitor_hash"])]

    def __str__(self) -> str:
        return f"order {self.order_id}"


# --- Stores are tenants (SPEC 7) --------------------------------------------------------------


class MemberRole(models.TextChoices):
    OWNER = "owner", "owner (changes the store's settings and secrets)"
    VIEWER = "viewer", "viewer (reads, changes nothing)"


class SiteMembership(models.Model):
    """A staff user's access to one store. Every admin page shows a user only the stores they are
    a member of (superusers see all); what they may change there also needs the `owner` role
    besides Django's model permission (`notifications/tenancy.py`). Managed with
    `candor_site grant` / `candor_site revoke`."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="candor_memberships"
    )
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=MemberRole.choices, default=MemberRole.VIEWER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "site"], name="membership_per_user_site")]

    def __str__(self) -> str:
        return f"{self.user} — {self.site} ({self.role})"
