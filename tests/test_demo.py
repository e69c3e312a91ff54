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


@pytest.fixture
def shop(live_server, settings):
    """The demo shop, its backend reporting to Candor over real HTTP (the live server)."""
    settings.CANDOR_DEMO_API_BASE = live_server.url
    seed()
    return live_server


def _checkout(client, sku):
    assert client.post(f"/cart/add/{sku}/").status_code == 302
    response = client.post("/checkout/")
    assert response.status_code == 302
    return response["Location"].rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.django_db(transaction=True)
def test_checkout_reports_a_signed_purchase_and_a_refund_withdraws_it(shop, client):
    from notifications.metrics import purchases_in_window, recent_purchase
    from storefront_demo.models import DemoOrder

    sku = DemoProduct.objects.first().sku
    number = _checkout(client, sku)
    order = DemoOrder.objects.get(number=number)
    assert order.candor_purchase["status"] == 202, order.candor_purchase
    product = Product.objects.get(sku=sku)
    event = product.events.get(kind="purchase")
    assert (event.order_id, event.verified, event.source) == (number, True, "server")
    from django.utils import timezone

    assert recent_purchase(product_id=product.pk, at=timezone.now()) is not None
    page = client.get(f"/orders/{number}/").content.decode()
    assert "Refund this order" in page

    assert client.post(f"/orders/{number}/refund/").status_code == 302
    order.refresh_from_db()
    assert order.status == "refunded" and order.candor_refund["status"] == 202
    assert recent_purchase(product_id=product.pk, at=timezone.now()) is None
    assert purchases_in_window(product_id=product.pk, at=timezone.now())[0].true_value == 0


@pytest.mark.django_db(transaction=True)
def test_an_order_is_kept_when_candor_is_unreachable(client, settings):
    from storefront_demo.models import DemoOrder

    settings.CANDOR_DEMO_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    seed()
    number = _checkout(client, DemoProduct.objects.first().sku)
    order = DemoOrder.objects.get(number=number)
    assert order.candor_purchase["status"] == 0 and order.lines.count() == 1
    assert not Product.objects.get(sku=order.lines.get().product.sku).events.exists()


def test_shop_pages_send_a_strict_csp_and_no_inline_style_or_script(client):
    seed()
    for path in ["/", f"/product/{DemoProduct.objects.first().sku}/", "/cart/"]:
        response = client.get(path)
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
        html = response.content.decode()
        assert " style=" not in html
        inline_scripts = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/ld\+json)[^>]*>", html)
        assert inline_scripts == [], inline_scripts
