"""Live viewers, end to end: real browsers on the demo's product page, the widget's socket,
presence in Redis, the policy, and the toast in each page."""

import pytest

from tests.browser.conftest import UTILITARIAN, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

THREE_OTHERS = "3 other people are viewing this"


def test_the_first_of_four_shoppers_sees_three_others_and_a_hidden_tab_stops_counting(shop, shoppers):
    first, second, third, fourth = shoppers(4)
    first.open(shop, UTILITARIAN)
    first.wait_for_page_message()
    # The live region is there before any toast, so its first message is announced.
    expect(first.region).to_have_count(1)
    expect(first.region).to_have_attribute("aria-live", "polite")
    expect(first.toast).to_have_count(0)
    # The shopper is using the page: a toast must never take focus away.
    first.page.locator("button.buy").focus()

    # Three shoppers: each has two others, below the minimum count of 3, so nothing is shown.
    second.open(shop, UTILITARIAN)
    third.open(shop, UTILITARIAN)
    third.wait_for_page_message()
    first.page.wait_for_timeout(1_500)  # past the update interval: a round has run
    assert first.notifications() == [] and second.notifications() == [] and third.notifications() == []
    expect(first.toast).to_have_count(0)

    # The fourth: everyone now has three others.
    fourth.open(shop, UTILITARIAN)
    for shopper in (first, second, third, fourth):
        expect(shopper.toast.locator("span").first).to_have_text(THREE_OTHERS)
    sent = first.notifications("viewing_now")[-1]
    assert sent["text"] == THREE_OTHERS and sent["claim"]["displayed"] == "3"
    assert first.toast.locator("span").first.text_content() == sent["text"]
    expect(first.region).to_have_text(THREE_OTHERS)
    expect(first.toast.get_by_role("button", name="Dismiss notification")).to_be_visible()
    expect(first.toast.get_by_role("button", name="Pause notifications")).to_be_visible()
    why = first.toast.get_by_role("link", name="Why am I seeing this? (opens a new tab)")
    expect(why).to_have_attribute("href", sent["why_url"])
    assert sent["why_url"] == f"{shop.url}/why/{sent['id']}"
    assert first.page.evaluate("document.activeElement.className") == "buy"

    # The fourth tab goes to the background: it stops counting, and "3 others" is no longer
    # true for anyone, so the toast is taken down (a withdraw, not a lower number).
    fourth.set_hidden()
    fourth.wait_for_page_message(visible=False)
    for shopper in (first, second, third):
        expect(shopper.toast).to_have_count(0, timeout=5_000)
        assert {"type": "withdraw", "id": shopper.notifications("viewing_now")[-1]["id"]} in shopper.received
    assert first.page.evaluate("document.activeElement.className") == "buy"
    for shopper in (first, second, third, fourth):
        shopper.assert_clean()
