"""Accessibility with a toast on screen: axe-core (from npm, injected into the page) over the
whole document including the widget's shadow root, and reduced motion."""

import pytest

from tests.browser.conftest import UTILITARIAN, expect, purchase

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# `shadow`: a path into shadow roots to check only that part; null: the whole document.
AXE_RUN = """async (shadow) => {
    const context = shadow ? { include: [{ fromShadowDom: shadow }] } : document;
    const result = await axe.run(context, { resultTypes: ["violations"] });
    const brief = (v) => ({ id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.map((n) => n.target) });
    return { violations: result.violations.map(brief), passes: result.passes.map((p) => p.id) };
}"""


def test_axe_finds_no_serious_or_critical_violation_with_a_toast_visible(shop, shoppers, axe_path):
    # Only here is the page's CSP bypassed: the CSP would (rightly) refuse the injected axe.
    (shopper,) = shoppers(1, bypass_csp=True)
    shopper.open(shop, UTILITARIAN)
    shopper.wait_for_page_message()
    purchase(shop, UTILITARIAN)
    expect(shopper.toast).to_be_visible()
    shopper.page.wait_for_timeout(400)  # the entry animation is over: colours are final
    shopper.page.add_script_tag(path=str(axe_path))

    page = shopper.page.evaluate(AXE_RUN, None)
    serious = [v for v in page["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    # axe did look inside the widget's shadow root, at the toast.
    toast = shopper.page.evaluate(AXE_RUN, ["[data-candor]", ".toast"])
    assert {"button-name", "color-contrast", "link-name"} <= set(toast["passes"]), toast
    assert toast["violations"] == [], toast
    expect(shopper.toast).to_be_visible()  # it was on screen for the whole check


def test_reduced_motion_disables_the_animation(shop, shoppers):
    calm, moving = shoppers(2)
    calm.page.emulate_media(reduced_motion="reduce")
    for shopper in (calm, moving):
        shopper.open(shop, UTILITARIAN)
        shopper.wait_for_page_message()
    purchase(shop, UTILITARIAN)
    for shopper in (calm, moving):
        expect(shopper.toast).to_be_visible()
    animation = "e => getComputedStyle(e).animationName"
    assert calm.toast.evaluate(animation) == "none"
    assert moving.toast.evaluate(animation) == "in"
    calm.assert_clean()
    moving.assert_clean()
