"""The demo shop's own tables. It knows Candor only by the key and secret a store would hold."""

from django.db import models


class DemoStore(models.Model):
    """The shop's settings: the Candor credentials its backend was given (singleton)."""

    candor_key = models.CharField(max_length=64)
    candor_secret = models.CharField(max_length=128)

    def __str__(self) -> str:
        return f"Demo store ({self.candor_key})"


class DemoProduct(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=100)
    category_kind = models.CharField(max_length=20)
    price_cents = models.PositiveIntegerField()
    description = models.TextField()
    color = models.CharField(max_length=7, help_text="Swatch colour, in place of a photo.")

    class Meta:
        ordering = ["category", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def price(self) -> str:
        return f"{self.price_cents / 100:.2f}"


class DemoOrder(models.Model):
    """An order in the shop's own tables. Reporting it to Candor is the shop backend's job."""

    class Status(models.TextChoices):
        PAID = "paid"
        REFUNDED = "refunded"

    number = models.CharField(max_length=20, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PAID)
    created_at = models.DateTimeField(auto_now_add=True)
    # What Candor answered (or why it could not be reached), per report.
    candor_purchase = models.JSONField(default=dict, blank=True)
    candor_refund = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.number

    @property
    def total(self) -> str:
        cents = sum(line.product.price_cents * line.quantity for line in self.lines.all())
        return f"{cents / 100:.2f}"


class DemoOrderLine(models.Model):
    order = models.ForeignKey(DemoOrder, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(DemoProduct, on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField(default=1)
