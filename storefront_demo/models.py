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
