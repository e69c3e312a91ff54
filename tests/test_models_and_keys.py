import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.models import AppendOnlyError, Event, SiteSecret, origin_normalize
from notifications.services import SiteError, site_create, site_secret_retire, site_secret_rotate
from tests.factories import ProductFactory, SiteFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("https://shop.example.com:443/", "https://shop.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_origins_are_normalized(raw, normalized):
    assert origin_normalize(raw) == normalized


@pytest.mark.parametrize(
    "raw", ["null", "ftp://x.example", "https://x.example/path", "https://", "x.example"]
)
def test_non_origins_are_refused(raw):
    with pytest.raises(ValueError):
        origin_normalize(raw)


def test_site_create_makes_keys_and_validates_origins():
    site, secret = site_create(name="Shop", origins=["https://Shop.example", "https://shop.example"])
    assert site.public_key.startswith("pk_") and len(site.public_key) > 20
    assert secret.startswith("sk_") and len(secret) > 30
    assert site.origins == ["https://shop.example"]
    assert site.origin_allowed("https://shop.example")
    assert not site.origin_allowed("https://shop.example.evil")
    assert not site.origin_allowed(None)
    with pytest.raises(SiteError):
        site_create(name="Bad", origins=["not an origin"])
    with pytest.raises(SiteError):
        site_create(name="", origins=["https://ok.example"])


def test_rotation_keeps_two_secrets_at_most():
    site, first = site_create(name="Shop", origins=["https://shop.example"])
    second = site_secret_rotate(site=site)
    assert second != first
    active = set(
        SiteSecret.objects.filter(site=site, retired_at__isnull=True).values_list("secret", flat=True)
    )
    assert active == {first, second}
    with pytest.raises(SiteError, match="two active secrets"):
        site_secret_rotate(site=site)
    assert site_secret_retire(site=site) == 1
    active = set(
        SiteSecret.objects.filter(site=site, retired_at__isnull=True).values_list("secret", flat=True)
    )
    assert active == {second}


def test_public_keys_are_unique_across_sites():
    keys = {site_create(name=f"S{i}", origins=["https://s.example"])[0].public_key for i in range(20)}
    assert len(keys) == 20


def test_the_ledger_is_append_only():
    product = ProductFactory()
    event = Event.objects.create(
        site=product.site, product=product, kind="view", source="browser", occurred_at="2026-01-01T00:00:00Z"
    )
    event.verified = True
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert not Event.objects.get(pk=event.pk).verified


def test_idempotency_keys_are_scoped_to_the_site():
    from django.db import IntegrityError, transaction

    a, b = SiteFactory(), SiteFactory()
    kwargs = {"kind": "purchase", "source": "server", "occurred_at": "2026-01-01T00:00:00Z"}
    Event.objects.create(site=a, idempotency_key="order-1", **kwargs)
    Event.objects.create(site=b, idempotency_key="order-1", **kwargs)  # another store's key is no clash
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(site=a, idempotency_key="order-1", **kwargs)


@given(st.text(max_size=40))
def test_origin_normalize_never_accepts_what_it_cannot_parse(raw):
    try:
        result = origin_normalize(raw)
    except ValueError:
        return
    assert result.startswith(("http://", "https://")) and "/" not in result.split("://", 1)[1]
