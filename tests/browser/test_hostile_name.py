"""A product whose name is markup is shown as text everywhere a shopper meets it: the shop's
pages (under their strict CSP) and Candor's own "Why?" page, reached from a real toast."""

import json
from io import StringIO

import pytest
from django.core.management import call_command

from storefront_demo.models import DemoProduct
from tests.browser.conftest import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = "<img src=x onerror=alert(1)>"
SKU = "hostile-name"


def _add_product(shop, tmp_path):
    """The store's catalog, through the operator CLI as a store's script would load it, and the
    shop's own row."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {
                    "sku": SKU,
                    "name": HOSTILE,
                    "url": f"{shop.url}/product/{SKU}/",
                    "category": "Essentials",
                    "category_kind": "utilitarian",
                }
            ]
        )
    )
    call_command("candor_site", "products", "--key", shop.key, str(catalog), stdout=StringIO())
    DemoProduct.objects.create(
        sku=SKU,
        name=HOSTILE,
        category="Essentials",
        category_kind="utilitarian",
        price_cents=999,
        description=f"Described as {HOSTILE}",
        color="#777777",
    )


def _no_markup(page):
    assert page.locator("img").count() == 0, page.url


def test_a_product_named_like_markup_shows_as_text(shop, shoppers, tmp_path):
    _add_product(shop, tmp_path)
    viewer, buyer = shoppers(2)
    viewer.open(shop, SKU)
    viewer.wait_for_page_message()
    assert viewer.sockets[0].url.endswith(f"&product={SKU}")

    buyer.page.goto(f"{shop.url}/")
    expect(buyer.page.locator(".card .name", has_text=HOSTILE)).to_have_text(HOSTILE)
    _no_markup(buyer.page)
    buyer.open(shop, SKU)
    expect(buyer.page.locator("h1")).to_have_text(HOSTILE)
    assert HOSTILE in buyer.page.title()
    ld = buyer.page.locator('script[type="application/ld+json"]').text_content()
    assert json.loads(ld)["name"] == HOSTILE and "<" not in ld  # escaped inside the <script>
    _no_markup(buyer.page)
    buyer.page.get_by_role("button", name="Add to cart").click()
    buyer.page.wait_for_url(f"{shop.url}/cart/")
    expect(buyer.page.locator("table.lines a")).to_have_text(HOSTILE)
    _no_markup(buyer.page)
    buyer.page.get_by_role("button", name="Place order").click()
    buyer.page.wait_for_url(f"{shop.url}/orders/**")
    expect(buyer.page.locator("table.lines a")).to_have_text(HOSTILE)
    _no_markup(buyer.page)

    # The other shopper's toast, and its "Why?" page, which names the product.
    expect(viewer.toast.locator("span").first).to_have_text("Someone bought this just now")
    with viewer.page.expect_popup() as opened:
        viewer.toast.get_by_role("link", name="Why am I seeing this? (opens a new tab)").click()
    why = opened.value
    why.wait_for_load_state()
    assert why.url == viewer.notifications()[-1]["why_url"]
    expect(why.locator("dd strong")).to_have_text(HOSTILE)
    _no_markup(why)
    why.wait_for_timeout(300)  # an onerror handler, had one been created, would have run by now
    viewer.assert_clean()
    buyer.assert_clean()
