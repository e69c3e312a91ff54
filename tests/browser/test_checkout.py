"""A purchase, end to end: one shopper checks out in the demo shop, whose backend reports the
order to Candor with a signed request; another shopper on that product sees it."""

import pytest

from notifications.models import Conversion
from tests.browser.conftest import UTILITARIAN, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JUST_NOW = "Someone bought this just now"


def test_a_checkout_in_one_browser_shows_bought_just_now_in_another(shop, shoppers):
    viewer, buyer = shoppers(2)
    viewer.open(shop, UTILITARIAN)
    buyer.open(shop, UTILITARIAN)
    buyer.wait_for_page_message()
    # Two shoppers: below the minimum count for "viewing", and nobody has bought it yet.
    viewer.page.wait_for_timeout(1_500)
    assert viewer.notifications() == []

    buyer.page.get_by_role("button", name="Add to cart").click()
    buyer.page.wait_for_url(f"{shop.url}/cart/")
    assert f"POST {shop.url}/api/v1/events" in buyer.requests  # Candor.addToCart from shop.js
    # The cart page asked the widget for the shopper's visitor token (shop.js) to send with the order.
    buyer.wait_until(
        lambda: buyer.page.locator("input[data-candor-visitor-token]").input_value(), what="the visitor token"
    )
    assert f"POST {shop.url}/api/v1/visitor-token" in buyer.requests
    buyer.page.get_by_role("button", name="Place order").click()
    buyer.page.wait_for_url(f"{shop.url}/orders/**")
    expect(buyer.page.locator(".note").first).to_contain_text("Reported to Candor: purchase 20")

    expect(viewer.toast.locator("span").first).to_have_text(JUST_NOW)
    (sent,) = viewer.notifications()
    assert sent["kind"] == "recent_purchase" and sent["text"] == JUST_NOW
    assert sent["claim"] == {"metric": "recent_purchase", "window_s": 3600, "displayed": "0"}
    # The order carried the token: the purchase is this shopper's conversion (SPEC 4).
    assert Conversion.objects.count() == 1
    viewer.assert_clean()
    buyer.assert_clean()
