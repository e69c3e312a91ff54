"""The toast's own behaviour, in a real page from the real server, with messages added to the
widget's socket by the test (Playwright's WebSocket routing) and the page's clock under test
control: how long a toast stays, hover and focus, Esc, updates, withdrawals, pause, and text
that looks like markup."""

import json

import pytest

from tests.browser.conftest import UTILITARIAN, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = "<img src=x onerror=alert(1)>"


def _routed(shopper, shop):
    """Let the widget's socket through to the server, and keep a handle to speak to the page."""
    routes = []

    def handler(ws):
        server = ws.connect_to_server()
        ws.on_message(lambda message: (shopper.sent.append(json.loads(message)), server.send(message)))
        routes.append(ws)

    shopper.page.route_web_socket(f"{shop.url.replace('http', 'ws')}/ws/v1/widget**", handler)
    return routes


def _id(n: int) -> str:
    """A public id of the server's shape (22+ url-safe characters, SPEC 7)."""
    return f"Xy_-{n:018d}"


def _notification(shop, n, *, text, ttl_ms=12_000, metric="viewing_now"):
    return json.dumps(
        {
            "type": "notification",
            "id": _id(n),
            "kind": metric,
            "text": text,
            "claim": {"metric": metric, "window_s": 30, "displayed": "3"},
            "why_url": f"{shop.url}/why/{_id(n)}",
            "ttl_ms": ttl_ms,
        }
    )


def test_toast_timing_hover_focus_escape_update_withdraw_and_pause(shop, shoppers):
    (shopper,) = shoppers(1)
    page = shopper.page
    # The page's clock stands still unless the test moves it: timings are exact.
    page.clock.install(time=1_800_000_000_000)
    page.clock.pause_at(1_800_000_001_000)
    routes = _routed(shopper, shop)
    shopper.open(shop, UTILITARIAN)
    shopper.wait_until(lambda: routes and any(m["type"] == "page" for m in shopper.sent), what="socket")
    (ws,) = routes
    page.locator("button.buy").focus()
    text = shopper.toast.locator("span").first

    # Text from the server is text: markup in it is shown, never parsed.
    ws.send(_notification(shop, 1, text=f"{HOSTILE} 3 other people are viewing this", ttl_ms=1_000))
    expect(text).to_have_text(f"{HOSTILE} 3 other people are viewing this")
    assert page.locator("[data-candor] img").count() == 0
    expect(shopper.region).to_have_text(f"{HOSTILE} 3 other people are viewing this")
    assert page.evaluate("document.activeElement.className") == "buy"  # focus did not move
    # At least 5 s on screen, even when the server asks for less.
    page.clock.run_for(4_900)
    expect(shopper.toast).to_have_count(1)
    page.clock.run_for(200)
    expect(shopper.toast).to_have_count(0)

    # Hover holds it; leaving resumes the remaining time.
    ws.send(_notification(shop, 2, text="A", ttl_ms=6_000))
    expect(text).to_have_text("A")
    shopper.toast.hover()
    page.clock.run_for(30_000)
    expect(shopper.toast).to_have_count(1)
    page.mouse.move(1100, 50)
    page.clock.run_for(5_800)
    expect(shopper.toast).to_have_count(1)
    page.clock.run_for(400)
    expect(shopper.toast).to_have_count(0)

    # Focus holds it too; Esc dismisses it and tells the server.
    ws.send(_notification(shop, 3, text="B", ttl_ms=6_000))
    expect(text).to_have_text("B")
    shopper.toast.get_by_role("button", name="Dismiss notification").focus()
    page.clock.run_for(30_000)
    expect(shopper.toast).to_have_count(1)
    page.keyboard.press("Escape")
    expect(shopper.toast).to_have_count(0)
    shopper.wait_until(lambda: {"type": "dismiss", "id": _id(3)} in shopper.sent, what="dismiss sent")

    # An update changes the toast on screen (and its "Why?"), a withdraw takes it down.
    page.locator("button.buy").focus()
    ws.send(_notification(shop, 4, text="C"))
    expect(text).to_have_text("C")
    ws.send(json.dumps({"type": "update", "id": _id(5), "text": "D", "claim": {"metric": "viewing_now"}}))
    expect(text).to_have_text("D")
    expect(shopper.toast.locator("a")).to_have_attribute("href", f"{shop.url}/why/{_id(5)}")
    ws.send(json.dumps({"type": "withdraw", "id": _id(5)}))
    expect(shopper.toast).to_have_count(0)
    # An update never re-opens a toast that has gone.
    ws.send(json.dumps({"type": "update", "id": _id(6), "text": "E", "claim": {"metric": "viewing_now"}}))
    page.clock.run_for(100)
    assert shopper.toast.count() == 0

    # "Pause notifications": the toast goes, the server is told, and nothing more is shown.
    ws.send(_notification(shop, 7, text="F", metric="recent_purchase"))
    expect(text).to_have_text("F")
    shopper.toast.get_by_role("button", name="Pause notifications").click()
    expect(shopper.toast).to_have_count(0)
    shopper.wait_until(lambda: {"type": "pause"} in shopper.sent, what="pause sent")
    ws.send(_notification(shop, 8, text="G"))
    page.clock.run_for(100)
    assert shopper.toast.count() == 0
    shopper.assert_clean()


def test_reconnects_with_exponential_backoff_and_jitter_and_not_after_a_policy_close(shop, shoppers):
    # Math.random pinned near 1: each wait is the top of its jitter range, so the exponential
    # steps (0.5 s, 1 s, 2 s, … capped at 60 s) can be checked exactly on the page's clock.
    (shopper,) = shoppers(1, init_script="Math.random = () => 0.999;")
    page = shopper.page
    page.clock.install(time=1_800_000_000_000)
    page.clock.pause_at(1_800_000_001_000)
    attempts = []
    close_code = [1011]  # a server error: try again later

    def refuse(ws):
        attempts.append(ws.url)
        ws.close(code=close_code[0], reason="test")

    page.route_web_socket(f"{shop.url.replace('http', 'ws')}/ws/v1/widget**", refuse)
    shopper.open(shop, UTILITARIAN)
    shopper.wait_until(lambda: len(attempts) == 1, what="first connection")

    for n, top_ms in enumerate([500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000], start=2):
        if n == 10:
            close_code[0] = 1008  # the last one is a policy close: the widget must give up
        wait_ms = int(top_ms * 0.999)
        page.wait_for_timeout(300)  # the close has reached the page and its retry is scheduled
        page.clock.run_for(wait_ms - 20)
        page.wait_for_timeout(200)
        assert len(attempts) == n - 1, f"attempt {n} came before {wait_ms - 20} ms"
        page.clock.run_for(40)
        shopper.wait_until(lambda n=n: len(attempts) == n, what=f"attempt {n} after {wait_ms} ms")
    page.wait_for_timeout(300)
    page.clock.run_for(600_000)
    page.wait_for_timeout(300)
    assert len(attempts) == 10
    shopper.assert_clean()
