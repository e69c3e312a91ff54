import re
from io import StringIO

import pytest
from django.core.management import call_command

from notifications.models import Product, Site
from storefront_demo.models import DemoProduct, DemoStore

pytestmark = pytest.mark.django_db


def seed(**kwargs):
    call_command("seed_demo", stdout=StringIO(), **kwargs)


def test_seed_demo_is_idempotent_and_goes_through_the_cli(settings):
    seed()
    seed()
    assert Site.objects.count() == 1
    site = Site.objects.get()
    assert site.is_demo
    assert site.origins == ["http://127.0.0.1:8000", "http://localhost:8000"]
    assert DemoStore.objects.get().candor_key == site.public_key
    assert Product.objects.filter(site=site).count() == DemoProduct.objects.count() == 12
    kinds = set(Product.objects.values_list("category_kind", flat=True))
    assert {"self_expression", "utilitarian"} <= kinds
    assert len(set(Product.objects.values_list("category", flat=True))) >= 3


def test_seed_demo_takes_its_origins_from_the_environment(settings):
    seed()
    settings.CANDOR_DEMO_ORIGINS = ["http://shop.test:9000"]
    seed()
    assert Site.objects.get().origins == ["http://shop.test:9000"]


def test_seed_demo_creates_no_activity():
    from notifications.models import Event, Notification

    seed(admin_password="a-long-demo-password")
    assert Event.objects.count() == 0 and Notification.objects.count() == 0


def test_the_shop_links_every_product_and_each_page_embeds_the_snippet(client):
    seed()
    key = DemoStore.objects.get().candor_key
    index = client.get("/").content.decode()
    skus = list(DemoProduct.objects.values_list("sku", flat=True))
    for sku in skus:
        assert f'href="/product/{sku}/"' in index
    page = client.get(f"/product/{skus[0]}/").content.decode()
    snippets = re.findall(r"<script[^>]*widget\.js[^>]*>", page)
    assert len(snippets) == 1
    assert f'data-key="{key}"' in snippets[0]
    assert f'data-product="{skus[0]}"' in snippets[0]
    assert "async" in snippets[0]
    assert 'src="http://testserver/static/candor/widget.js"' in snippets[0]
    assert '"@type": "Product"' in page
    assert client.get("/static/candor/widget.js").status_code == 200
    assert client.get("/product/no-such-thing/").status_code == 404
