"""The widget under the demo pages' strict Content-Security-Policy (no 'unsafe-inline' for
script or style), with Subresource Integrity, and as one global."""

import base64
import hashlib

import pytest

from tests.browser.conftest import ROOT, UTILITARIAN, expect, purchase

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDGET = ROOT / "static" / "candor" / "widget.js"
INSERT_SNIPPET = """([src, key, sku, integrity]) => new Promise((resolve) => {
    const s = document.createElement("script");
    s.async = true;
    s.src = src;
    s.integrity = integrity;
    s.crossOrigin = "anonymous";
    s.dataset.key = key;
    s.dataset.product = sku;
    s.onload = () => resolve("loaded");
    s.onerror = () => resolve("refused");
    document.body.appendChild(s);
})"""


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (part.split() for part in policy.split(";") if part.strip())
    return {words[0]: words[1:] for words in parts}


def test_the_widget_works_under_a_strict_csp_with_no_violation_and_one_global(shop, shoppers):
    (shopper,) = shoppers(1)
    shopper.page.goto(f"{shop.url}/")  # the same page shell, without the widget
    before = set(shopper.page.evaluate("Object.keys(window)"))
    response = shopper.open(shop, UTILITARIAN)
    policy = response.headers["content-security-policy"]
    directives = _directives(policy)
    assert directives["script-src"] == ["'self'"] and directives["style-src"] == ["'self'"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy

    shopper.wait_for_page_message()
    purchase(shop, UTILITARIAN)
    expect(shopper.toast).to_be_visible()
    # The toast is styled (a constructed stylesheet in its shadow root needs no inline style).
    stack = shopper.page.locator("[data-candor] .stack")
    assert stack.evaluate("e => getComputedStyle(e).position") == "fixed"
    assert shopper.toast.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 255, 255)"
    assert shopper.page.evaluate("document.querySelectorAll('style, [style]').length") == 0
    shopper.assert_clean()
    assert set(shopper.page.evaluate("Object.keys(window)")) - before == {"Candor"}


def test_the_snippet_with_subresource_integrity(shop, shoppers):
    digest = base64.b64encode(hashlib.sha384(WIDGET.read_bytes()).digest()).decode()
    good, tampered = shoppers(2)
    for shopper, integrity, outcome in (
        (good, f"sha384-{digest}", "loaded"),
        (tampered, "sha384-" + base64.b64encode(b"\0" * 48).decode(), "refused"),
    ):
        shopper.page.goto(f"{shop.url}/")  # a page of the shop without the widget
        src = f"{shop.url}/static/candor/widget.js"
        assert shopper.page.evaluate(INSERT_SNIPPET, [src, shop.key, UTILITARIAN, integrity]) == outcome
    good.wait_for_page_message()
    assert good.page.evaluate("typeof Candor") == "object"
    # A store's page is on another origin: crossorigin="anonymous" needs the file served with CORS.
    served = good.page.request.get(
        f"{shop.url}/static/candor/widget.js", headers={"Origin": "https://shop.test"}
    )
    assert served.headers["access-control-allow-origin"] == "*"
    assert served.body() == WIDGET.read_bytes()
    good.assert_clean()
    assert tampered.page.evaluate("typeof Candor") == "undefined" and tampered.sockets == []
    assert any("integrity" in error for error in tampered.console_errors)
