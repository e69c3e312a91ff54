"""What the widget sends, and when: consent mode, Global Privacy Control, and how it finds the
product (data-product, JSON-LD, Candor.setProduct)."""

import pytest

from tests.browser.conftest import UTILITARIAN, expect, purchase

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GPC = 'Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true });'


def _snippet(change: str) -> str:
    """An init script that edits the page's snippet as the parser inserts it, before the async
    widget runs: the page as a store would write it, still served (with its strict CSP) by the
    server. `change` is a statement on `s`, the script element."""
    return (
        "new MutationObserver((records, observer) => {"
        '  const s = document.querySelector("script[data-key]");'
        f"  if (s) {{ {change}; observer.disconnect(); }}"
        "}).observe(document, { childList: true, subtree: true });"
    )


def _events_sent(shopper):
    return [r for r in shopper.requests if "/api/v1/" in r]


def test_consent_mode_sends_nothing_until_candor_consent(shop, shoppers):
    (shopper,) = shoppers(1, init_script=_snippet('s.setAttribute("data-consent", "required")'))
    shopper.open(shop, UTILITARIAN)
    shopper.page.wait_for_function("window.Candor && true")
    shopper.page.evaluate("Candor.addToCart()")
    shopper.page.wait_for_timeout(1_000)
    assert shopper.sockets == [] and _events_sent(shopper) == []

    shopper.page.evaluate("Candor.consent()")
    shopper.wait_for_page_message()
    assert shopper.sockets[0].url.endswith(f"&product={UTILITARIAN}")
    shopper.page.evaluate("Candor.addToCart()")
    shopper.wait_until(lambda: _events_sent(shopper), what="the add-to-cart event")

    # Consent withdrawn: the socket closes (the server drops the page from every count).
    shopper.page.evaluate("Candor.consent(false)")
    shopper.wait_until(lambda: shopper.sockets[0].is_closed(), what="socket closed")
    shopper.page.wait_for_timeout(1_000)
    assert len(shopper.sockets) == 1  # and it does not reconnect
    shopper.assert_clean()


def test_global_privacy_control_means_not_counted_and_nothing_sent(shop, shoppers):
    counted = shoppers(3)
    (private,) = shoppers(1, init_script=GPC)
    private.open(shop, UTILITARIAN)
    for shopper in counted:
        shopper.open(shop, UTILITARIAN)
        shopper.wait_for_page_message()
    private.page.evaluate("Candor.consent(); Candor.addToCart()")  # neither overrides GPC
    counted[0].page.wait_for_timeout(1_500)
    # Four browsers on the page, but the GPC one is not counted: three visitors, two others
    # each, below the minimum count. Had it been counted, each would now see "3 other people".
    assert all(s.notifications() == [] for s in counted)
    assert private.sockets == [] and _events_sent(private) == []
    (late,) = shoppers(1)
    late.open(shop, UTILITARIAN)
    for shopper in counted:
        expect(shopper.toast.locator("span").first).to_have_text("3 other people are viewing this")
    assert private.toast.count() == 0 and private.sockets == [] and _events_sent(private) == []
    # No visitor token either: a GPC shopper is in no experiment; a counted one gets one.
    assert private.page.evaluate("Candor.visitorToken()") is None
    assert _events_sent(private) == []
    assert isinstance(counted[0].page.evaluate("Candor.visitorToken()"), str)
    for shopper in (*counted, private, late):
        shopper.assert_clean()


def test_product_from_json_ld_and_set_product(shop, shoppers):
    # No data-product; the page's JSON-LD names another product than the URL, so the socket's
    # product can only have come from the JSON-LD.
    (shopper,) = shoppers(
        1,
        init_script=_snippet(
            's.removeAttribute("data-product");'
            "const ld = document.querySelector('script[type=\"application/ld+json\"]');"
            f"ld.textContent = ld.textContent.replace('\"{UTILITARIAN}\"', '\"bulb-led\"')"
        ),
    )
    shopper.open(shop, UTILITARIAN)
    assert shopper.page.locator("script[data-key]").get_attribute("data-product") is None
    shopper.wait_for_page_message()
    assert shopper.sockets[0].url.endswith("&product=bulb-led")
    assert shopper.sent[0]["product"] == "bulb-led"

    # A single-page app moves to another product: same socket, a page message for it.
    shopper.page.evaluate("Candor.setProduct('battery-aa')")
    shopper.wait_until(lambda: shopper.sent[-1].get("product") == "battery-aa", what="setProduct")
    assert shopper.sent[-1]["type"] == "page" and shopper.sent[-1]["visible"] is True
    assert len(shopper.sockets) == 1
    purchase(shop, "battery-aa")
    expect(shopper.toast.locator("span").first).to_have_text("Someone bought this just now")
    shopper.assert_clean()
