"""Candor's tables: sites and their catalog, the append-only ledger, and the notification log."""

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


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


class Site(models.Model):
    """A store. Its public key is embedded in pages; its secrets sign server-to-server calls."""

    name = models.CharField(max_length=200)
    public_key = models.CharField(max_length=64, unique=True, editable=False)
    allowed_origins = models.TextField(
        help_text="One origin per line, e.g. https://shop.example.com. "
        "Pages and sockets from any other origin are refused."
    )
    shopify_secret = models.CharField(
        max_length=200, blank=True, help_text="The Shopify app's webhook secret (SPEC 5)."
    )
    woocommerce_secret = models.CharField(
        max_length=200, blank=True, help_text="The WooCommerce webhook's secret (SPEC 5)."
    )
    is_demo = models.BooleanField(
        default=False, help_text="The demo storefront's site. Its data never mixes with a live site."
    )
    is_active = models.BooleanField(default=True)
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


class SiteSecret(models.Model):
    """A signing secret. At most two are active at once, so a store can rotate without downtime.

    HMAC verification needs the secret itself, so it is stored; it is shown once, when made.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="secrets")
    secret = models.CharField(max_length=128, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        state = "retired" if self.retired_at else "active"
        return f"{self.secret[:7]}… ({state}, made {self.created_at:%Y-%m-%d %H:%M})"


class CategoryKind(models.TextChoices):
    SELF_EXPRESSION = "self_expression", "Self-expression (fashion, music, lifestyle)"
    UTILITARIAN = "utilitarian", "Utilitarian"
    OTHER = "other", "Other"


class Product(models.Model):
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
            models.UniqueConstraint(
                fields=["site", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="event_idempotency_key_per_site",
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


class Notification(models.Model):
    """One row per distinct emitted claim; its id is what every recipient gets and /why/ explains."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="notifications")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="notifications")
    kind = models.CharField(max_length=40)
    text = models.CharField(max_length=500)
    claim = models.JSONField()
    true_value = models.IntegerField(help_text="The lowest true value among this claim's recipients.")
    window_s = models.PositiveIntegerField()
    evidence = models.JSONField()
    policy_version = models.CharField(max_length=64)
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
        return f"#{self.pk} {self.text}"

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


class ServerDelivery(models.Model):
    """One accepted signed request, by its idempotency key, so a repeat counts once and the
    same key with another body is a conflict (SPEC 5)."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE)
    idempotency_key = models.CharField(max_length=200)
    body_sha256 = models.CharField(max_length=64)
    response = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "idempotency_key"], name="server_delivery_key_per_site")
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
    """A logged claim that the ledger does not back (SPEC 2.6). Any row here is a bug to chase."""

    notification = models.OneToOneField(Notification, on_delete=models.CASCADE, related_name="alarm")
    found_at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=500)
    claimed = models.CharField(max_length=40)
    recomputed = models.CharField(max_length=40, blank=True)

    def __str__(self) -> str:
        return f"Claim #{self.notification_id}: {self.reason}"
