"""Dismissal, end to end: the close button tells the server, which keeps that kind of toast away
from this shopper for the visit (the policy's silence after a dismissal), on a reload too."""

import pytest

from notifications.models import Site
from tests.browser.conftest import UTILITARIAN, expect, purchase
from tests.factories import site_policy_set

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JUST_NOW = "Someone bought this just now"


def test_dismiss_silences_that_kind_for_the_visit_while_others_still_see_it(shop, shoppers):
    # A one-second gap between toasts, so that after the reload below only the dismissal can
    # be what keeps the toast away (the shipped policies wait 15-30 s between toasts).
    site_policy_set(Site.objects.get(public_key=shop.key), min_gap_s=1)
    dismisser, keeper = shoppers(2)
    for shopper in (dismisser, keeper):
        shopper.open(shop, UTILITARIAN)
        shopper.wait_for_page_message()
    purchase(shop, UTILITARIAN)
    for shopper in (dismisser, keeper):
        expect(shopper.toast.locator("span").first).to_have_text(JUST_NOW)
    shown = dismisser.notifications("recent_purchase")[-1]

    dismisser.toast.get_by_role("button", name="Dismiss notification").click()
    expect(dismisser.toast).to_have_count(0, timeout=1_000)
    assert {"type": "dismiss", "id": shown["id"]} in dismisser.sent

    # A new page view for both. The claim is still true: the shopper who kept the toast gets it
    # again; the one who dismissed it does not, though the server recomputed for both at once.
    for shopper in (dismisser, keeper):
        shopper.page.reload()
        shopper.wait_for_page_message(count=2)
    expect(keeper.toast.locator("span").first).to_have_text(JUST_NOW)
    dismisser.page.wait_for_timeout(2_500)  # past the 1 s gap and the update interval
    assert dismisser.toast.count() == 0
    assert len(dismisser.notifications()) == 1  # the one before the dismissal
    dismisser.assert_clean()
    keeper.assert_clean()
